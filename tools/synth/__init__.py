"""The synthetic hashtag world: drawn concepts as photos with Zipf-like, noisy hashtags, and a labelled split.

from tagstream.tools.synth import make_world, WorldConfig
"""

from tagstream.tools.synth.world import WorldConfig, WorldSummary, make_world

__all__ = ["WorldConfig", "WorldSummary", "make_world"]

"""The sampling wing: which images are eligible (vocabulary, masks, held-out split), their weights under a sampling
law (the formula itself is kernels/weights.py), the all-image summary cached per settings, partitions (the unit of
elastic resume) and the per-rank sampler that turns them into epoch plans.

Code outside loader/ imports these names from here.
"""

from tagstream.loader.sampling.eligible import Eligibility, eligibility
from tagstream.loader.sampling.partitions import working_worlds
from tagstream.loader.sampling.sampler import RankSampler, prepare_sampling

__all__ = ["Eligibility", "RankSampler", "eligibility", "prepare_sampling", "working_worlds"]

"""Vocabularies: raw hashtags -> classes (synonym sets, WordNet synsets, stop-tags, frequency filters).

from tagstream.tools.vocab import build_vocab, VocabOptions
"""

from tagstream.tools.vocab.build import VocabOptions, VocabResult, build_vocab

__all__ = ["VocabOptions", "VocabResult", "build_vocab"]

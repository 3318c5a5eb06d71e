"""The fake embedder: deterministic hashed bag of words, no model, for tests and laptops.

Each word (a run of Unicode letters, digits or underscores, case-folded) and
each pair of adjacent words is a feature. A feature's sha256 picks one of
`dimension` buckets and a sign; the vector is the sum of those ±1 entries,
L2-normalised. Texts that share words therefore have a higher cosine
similarity, and the same text gives the same vector in every process (no
Python hash randomisation is involved).

The vector is never zero: n words make 2n - 1 features (a text without words
is itself the single feature), an odd count, so some bucket receives an odd
number of ±1 terms and cannot sum to zero.
"""

from __future__ import annotations

import hashlib
import itertools
import re

import numpy as np

from memsidecar.sidecar.blocks.semantic.settings import EmbedderSettings

_WORD_RE = re.compile(r"\w+")


def features(text: str) -> list[str]:
    words = _WORD_RE.findall(text.casefold())
    if not words:
        return [text]
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


class FakeEmbedder:
    name = "fake"

    def __init__(self, dimension: int) -> None:
        if dimension < 1:
            raise ValueError("dimension must be positive")
        self.dimension = dimension

    def embed_one(self, text: str) -> list[float]:
        vector = np.zeros(self.dimension, dtype=np.float64)
        for feature in features(text):
            digest = hashlib.sha256(feature.encode()).digest()
            bucket = int.from_bytes(digest[:8], "big") % self.dimension
            vector[bucket] += 1.0 if digest[8] & 1 else -1.0
        vector /= np.linalg.norm(vector)
        result: list[float] = vector.tolist()
        return result

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_one(text) for text in texts]

    async def close(self) -> None:
        return None


async def create(settings: EmbedderSettings) -> FakeEmbedder:
    return FakeEmbedder(settings.dimension)

"""The fake embedder: deterministic across processes, normalised, and word-sensitive."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from memsidecar.sidecar.blocks.semantic.embedders import EMBEDDERS
from memsidecar.sidecar.blocks.semantic.embedders.fake import FakeEmbedder, features
from memsidecar.sidecar.blocks.semantic.settings import EmbedderSettings
from tests.support import REPO

TEXTS = ["Hello world", "the cat sat on the mat", "naïve café ☕", "", "!!!", "a a a"]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_features_are_words_and_adjacent_pairs() -> None:
    assert features("The cat, the HAT!") == [
        "the",
        "cat",
        "the",
        "hat",
        "the cat",
        "cat the",
        "the hat",
    ]
    assert features("...") == ["..."]
    assert features("") == [""]


def test_known_vector() -> None:
    """Pinned output: changing the hashing would silently invalidate stored vectors."""
    vector = FakeEmbedder(16).embed_one("Hello world")
    expected = {8: 1.0, 14: -1.0, 15: -1.0}
    assert vector == pytest.approx(
        [expected.get(i, 0.0) / math.sqrt(3) for i in range(16)], abs=1e-12
    )


@pytest.mark.parametrize("dimension", [1, 2, 7, 256, 1536])
async def test_unit_length_and_dimension(dimension: int) -> None:
    vectors = await FakeEmbedder(dimension).embed(TEXTS)
    assert len(vectors) == len(TEXTS)
    for vector in vectors:
        assert len(vector) == dimension
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-12)


def test_same_text_same_vector_in_other_processes() -> None:
    here = [FakeEmbedder(64).embed_one(text) for text in TEXTS]
    script = (
        "import json, sys\n"
        "from memsidecar.sidecar.blocks.semantic.embedders.fake import FakeEmbedder\n"
        "texts = json.loads(sys.argv[1])\n"
        "print(json.dumps([FakeEmbedder(64).embed_one(t) for t in texts]))\n"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script, json.dumps(TEXTS)],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert json.loads(out.stdout) == here


def test_case_and_punctuation_do_not_matter() -> None:
    e = FakeEmbedder(128)
    assert e.embed_one("Hello, World!") == e.embed_one("hello world")


def test_shared_words_score_higher() -> None:
    e = FakeEmbedder(256)
    query = e.embed_one("where did the cat sleep")
    near = e.embed_one("the cat sleeps on the mat")
    far = e.embed_one("quarterly stock market report")
    assert cosine(query, near) > cosine(query, far) + 0.2
    same = e.embed_one("where did the cat sleep")
    assert cosine(query, same) == pytest.approx(1.0)


def test_word_order_counts_through_pairs() -> None:
    e = FakeEmbedder(256)
    a, b = e.embed_one("dog bites man"), e.embed_one("man bites dog")
    assert 0.3 < cosine(a, b) < 0.99


async def test_registry_builds_fake_from_settings() -> None:
    embedder = await EMBEDDERS.create("x", EmbedderSettings(type="fake", dimension=12))
    assert embedder.name == "fake" and embedder.dimension == 12
    assert len((await embedder.embed(["hi"]))[0]) == 12
    assert "fake" in EMBEDDERS.types
    await embedder.close()


def test_dimension_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FakeEmbedder(0)

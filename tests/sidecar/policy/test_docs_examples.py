"""Every ```yaml block in docs/policy.md is a valid policy, loaded with the file loader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from memsidecar.sidecar.policy import (
    PolicyEngine,
    PolicyError,
    load_policy_file,
    load_policy_text,
)
from tests.sidecar.policy.support import FakeMonotonic, req

DOC = Path(__file__).resolve().parents[3] / "docs" / "policy.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(DOC.read_text()) if lang == language]


YAML_BLOCKS = blocks("yaml")


def test_the_doc_has_examples() -> None:
    assert len(YAML_BLOCKS) >= 6
    # The lead's doc runner executes every python block against a sidecar; this doc has none.
    assert blocks("python") == []


@pytest.mark.parametrize("index", range(len(YAML_BLOCKS)))
def test_yaml_example_loads(index: int, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(YAML_BLOCKS[index])
    try:
        spec = load_policy_file(path)
    except PolicyError as exc:
        pytest.fail(f"docs/policy.md yaml block {index + 1} is invalid:\n{exc}")
    PolicyEngine(spec, FakeMonotonic()).decide(req())


def test_first_example_behaves_as_described() -> None:
    clock = FakeMonotonic()
    engine = PolicyEngine(load_policy_text(YAML_BLOCKS[0], "docs"), clock)
    d = engine.decide(req(namespace="prod", op="kv.put"))
    assert d.rule == "prod-is-read-only" and d.error is not None
    assert d.error.message == (
        "policy rule 'prod-is-read-only' denies kv.put by tenant 'acme' agent 'planner' in "
        "namespace 'prod' (production memory is written by the release pipeline only)"
    )
    assert engine.decide(req(namespace="prod", op="kv.get")).allowed
    assert engine.decide(req(op="semantic.search", top_k=200)).rule == "small-searches"
    results = [engine.decide(req(namespace=f"n{i % 3}")).allowed for i in range(51)]
    assert results == [True] * 50 + [False]  # one bucket per tenant+agent across namespaces
    clock.advance(0.05)
    assert engine.decide(req()).allowed


def test_error_texts_in_the_doc_are_what_callers_get() -> None:
    clock = FakeMonotonic()
    engine = PolicyEngine(load_policy_text(YAML_BLOCKS[0], "docs"), clock)
    texts = blocks("text")
    capped = engine.decide(req(op="semantic.search", namespace="docs", top_k=200))
    assert capped.error is not None and capped.error.message + "\n" in texts
    for _ in range(50):
        assert engine.decide(req()).allowed
    limited = engine.decide(req())
    assert limited.error is not None and limited.error.message + "\n" in texts
    denied = engine.decide(req(namespace="prod", op="kv.put"))
    assert denied.error is not None and denied.error.message + "\n" in texts


def test_rejection_log_in_the_doc_is_what_the_loader_says() -> None:
    broken = YAML_BLOCKS[0].replace(
        "    rate:\n      perSecond: 20\n      burst: 50\n      key: [tenant, agent]\n", ""
    )
    assert broken != YAML_BLOCKS[0]
    with pytest.raises(PolicyError) as info:
        load_policy_text(broken, "/etc/memsidecar/policy.yaml")
    assert any(text.startswith(str(info.value) + "\nkeeping the policy") for text in blocks("text"))

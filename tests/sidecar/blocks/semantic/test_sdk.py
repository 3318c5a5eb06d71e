"""The semantic SDK's own logic: `where` dicts, and the blocking client."""

from __future__ import annotations

from typing import Any

import pytest

from memsidecar.client import MemSidecar
from memsidecar.client.blocks.semantic import where_predicates
from memsidecar.client.convert import from_value
from memsidecar.semantic.v1 import semantic_pb2
from tests.support import sidecar_process

OP = semantic_pb2.PredicateOp


def plain(where: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [(p.field, OP.Name(p.op), from_value(p.value)) for p in where_predicates(where)]


def test_where_plain_values_mean_eq() -> None:
    assert plain({"user": "ann", "n": 3, "ok": True, "none": None, "l": [1, "a"]}) == [
        ("user", "PREDICATE_OP_EQ", "ann"),
        ("n", "PREDICATE_OP_EQ", 3),
        ("ok", "PREDICATE_OP_EQ", True),
        ("none", "PREDICATE_OP_EQ", None),
        ("l", "PREDICATE_OP_EQ", [1, "a"]),
    ]


def test_where_operators() -> None:
    assert plain(
        {
            "score": {"gte": 3, "lt": 5},
            "kind": {"in": ("a", "b")},
            "profile.city": {"ne": "Oslo"},
            "obj": {"eq": {"x": 1}},
        }
    ) == [
        ("score", "PREDICATE_OP_GTE", 3),
        ("score", "PREDICATE_OP_LT", 5),
        ("kind", "PREDICATE_OP_IN", ["a", "b"]),
        ("profile.city", "PREDICATE_OP_NE", "Oslo"),
        ("obj", "PREDICATE_OP_EQ", {"x": 1}),
    ]
    assert where_predicates(None) == [] and where_predicates({}) == []


@pytest.mark.parametrize("condition", [{"city": "Oslo"}, {"gte": 1, "bogus": 2}, {}])
def test_where_rejects_dicts_that_are_not_operators(condition: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not a set of operators"):
        where_predicates({"profile": condition})


@pytest.mark.integration
def test_blocking_client_against_a_sidecar_process() -> None:
    with sidecar_process() as proc, MemSidecar(socket=proc.socket) as m:
        m.wait_ready()
        rec = m.semantic.upsert("sdk-sync", "Ann likes green tea", metadata={"user": "ann"})
        m.semantic.upsert("sdk-sync", "Bob likes black coffee", metadata={"user": "bob"})
        hits = m.semantic.search("sdk-sync", "green tea", where={"user": {"in": ["ann"]}})
        assert [h.record.id for h in hits] == [rec.id]
        assert m.semantic.get("sdk-sync", "nope") is None
        assert m.semantic.delete("sdk-sync", rec.id)
        assert [v.version for v in m.semantic.history("sdk-sync", rec.id)] == [2, 1]

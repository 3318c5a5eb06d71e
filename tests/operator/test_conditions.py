"""Condition merging: lastTransitionTime moves only when a status flips."""

from __future__ import annotations

import datetime

import pytest

from memsidecar.operator import conditions as cond
from memsidecar.operator.conditions import Condition

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def test_new_conditions_get_now_and_the_generation() -> None:
    out = cond.merge(None, [Condition("Ready", "False", "Waiting", "soon")], generation=3, now=T0)
    assert out == [
        {
            "type": "Ready",
            "status": "False",
            "observedGeneration": 3,
            "lastTransitionTime": "2026-01-01T12:00:00Z",
            "reason": "Waiting",
            "message": "soon",
        }
    ]


def test_same_status_keeps_the_transition_time_but_updates_the_rest() -> None:
    first = cond.merge(None, [Condition("Ready", "False", "A", "a")], generation=1, now=T0)
    second = cond.merge(first, [Condition("Ready", "False", "B", "b")], generation=2, now=T1)
    assert second[0]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert (second[0]["reason"], second[0]["message"], second[0]["observedGeneration"]) == (
        "B",
        "b",
        2,
    )


def test_a_flip_moves_the_transition_time() -> None:
    first = cond.merge(None, [Condition("Ready", "False", "A")], generation=1, now=T0)
    second = cond.merge(first, [Condition("Ready", "True", "Ready")], generation=1, now=T1)
    assert second[0]["lastTransitionTime"] == "2026-01-01T12:05:00Z"


def test_rerunning_on_the_same_input_changes_nothing() -> None:
    desired = [Condition("Ready", "True", "Ready", "ok"), Condition("Migrated", "True", "Done")]
    first = cond.merge(None, desired, generation=4, now=T0)
    second = cond.merge(first, desired, generation=4, now=T1)
    assert second == first
    assert not cond.changed({"conditions": first}, {"conditions": second})


def test_kept_owned_dropped_and_foreign_conditions() -> None:
    existing = [
        {"type": "Migrated", "status": "True", "reason": "Done", "lastTransitionTime": "x"},
        {"type": "Reconciling", "status": "True", "reason": "Wait", "lastTransitionTime": "y"},
        {
            "type": "example.com/Audited",
            "status": "True",
            "reason": "Ok",
            "lastTransitionTime": "z",
        },
    ]
    out = cond.merge(
        existing,
        [Condition("Ready", "True", "Ready"), "Migrated", "NotThere"],
        generation=1,
        now=T0,
        owned=("Ready", "Migrated", "Reconciling"),
    )
    assert [c["type"] for c in out] == ["Ready", "Migrated", "example.com/Audited"]
    assert out[1] == existing[0]


def test_reasons_must_fit_the_crd_pattern() -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        Condition("Ready", "False", "not a reason")


def test_long_messages_are_shortened() -> None:
    out = cond.merge(None, [Condition("Ready", "False", "X", "m" * 5000)], generation=1, now=T0)
    assert len(out[0]["message"]) == cond.MAX_MESSAGE
    assert out[0]["message"].endswith("…")


def test_changed_compares_only_the_given_keys() -> None:
    assert not cond.changed({"a": 1, "b": 2}, {"a": 1})
    assert cond.changed({"a": 1}, {"a": 2})
    assert cond.changed(None, {"a": 1})

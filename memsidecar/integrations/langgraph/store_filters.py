"""What `MemSidecarStore` searches and lists select, evaluated on the client side.

The sidecar ranks and narrows by namespace prefix; the `filter` of a search and the
match conditions of list_namespaces are applied here, with the semantics of langgraph's
InMemoryStore but JSON types kept apart (True is not 1). `_check_filter` and
`_check_count` refuse a bad search or listing before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.store.base import MatchCondition

FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")


# -- filters: the semantics of langgraph's InMemoryStore, with JSON types kept apart


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _ordered(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Both numbers or both strings (comparable), else None: such a condition never holds."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        if not isinstance(a, bool) and not isinstance(b, bool):
            return a, b
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    return None


def _apply(value: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return _json_equal(value, operand)
    if operator == "$ne":
        return not _json_equal(value, operand)
    pair = _ordered(value, operand)
    if pair is None:
        return False
    a, b = pair
    if operator == "$gt":
        return bool(a > b)
    if operator == "$gte":
        return bool(a >= b)
    if operator == "$lt":
        return bool(a < b)
    return bool(a <= b)  # "$lte"; check_filter admits nothing else


def _match(value: Any, condition: Any) -> bool:
    if isinstance(condition, Mapping):
        if any(str(k).startswith("$") for k in condition):
            return all(_apply(value, op, operand) for op, operand in condition.items())
        # A plain dict matches a sub-document: each of its keys must match (recursively).
        return isinstance(value, dict) and all(
            _match(value.get(k), sub) for k, sub in condition.items()
        )
    return _json_equal(value, condition)


def _matches(value: dict[str, Any], filter: Mapping[str, Any] | None) -> bool:
    return all(_match(value.get(k), c) for k, c in (filter or {}).items())


def _check_filter(filter: Any, where: str = "filter") -> None:
    if filter is None:
        return
    if not isinstance(filter, Mapping):
        raise ValueError(f"{where} must be a dict of field -> value or operators, not {filter!r}")
    for name, condition in filter.items():
        if isinstance(condition, Mapping):
            operators = [k for k in condition if str(k).startswith("$")]
            unknown = [k for k in operators if k not in FILTER_OPERATORS]
            if unknown or (operators and len(operators) != len(condition)):
                raise ValueError(
                    f"{where}[{name!r}]: {dict(condition)!r} mixes fields and operators or "
                    f"uses an unsupported operator; operators are {', '.join(FILTER_OPERATORS)}"
                )
            if not operators:
                _check_filter(condition, f"{where}[{name!r}]")


def _does_match(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = condition.path
    if len(namespace) < len(path):
        return False
    labels = namespace[: len(path)] if condition.match_type == "prefix" else namespace[-len(path) :]
    return all(p == "*" or p == label for p, label in zip(path, labels, strict=True))


def _check_count(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, not {value!r}")

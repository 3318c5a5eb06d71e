"""The reference semantics of Search filters, in plain Python.

Rules (every driver must agree; an SQL driver translates them):
- A predicate addresses metadata by a path of object keys ("user.address.city").
  When the path does not lead to a value, the predicate is false, whatever the op.
- JSON types are null, bool, number, string, list and object; bool is not a number.
- eq / ne: the field and the value have the same type and are (not) equal; lists
  and objects compare deeply with the same rule. Different types: false, for ne too.
- gt / gte / lt / lte: numbers with numbers, strings with strings (by code point);
  anything else is false.
- in: the field equals (as eq) some element of the list.
- tags_any: the record has at least one of the tags; tags_all: it has all of them;
  category: the record's category is exactly this one.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from memsidecar.sidecar.blocks.semantic.driver import Predicate, SearchFilter, StoredRecord

_MISSING = object()

_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def json_equal(a: Any, b: Any) -> bool:
    """Equality that never equates values of different JSON types (True != 1)."""
    kind = json_type(a)
    if kind != json_type(b):
        return False
    if kind == "list":
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "object":
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def lookup(metadata: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = metadata
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def predicate_holds(metadata: dict[str, Any], predicate: Predicate) -> bool:
    field = lookup(metadata, predicate.path)
    if field is _MISSING:
        return False
    op, value = predicate.op, predicate.value
    if op == "eq":
        return json_equal(field, value)
    if op == "ne":
        return json_type(field) == json_type(value) and not json_equal(field, value)
    if op == "in":
        return any(json_equal(field, item) for item in value)
    kind = json_type(field)
    if kind not in ("number", "string") or kind != json_type(value):
        return False
    return _ORDERING[op](field, value)


def matches(record: StoredRecord, where: SearchFilter) -> bool:
    if where.category and record.category != where.category:
        return False
    if where.tags_all and not set(where.tags_all).issubset(record.tags):
        return False
    if where.tags_any and set(where.tags_any).isdisjoint(record.tags):
        return False
    return all(predicate_holds(record.metadata, p) for p in where.predicates)

"""The blocks and operations policy rules can name, read from the compiled protos.

An op is "<block>.<method in snake_case>" ("kv.put", "episodic.list_sessions"),
exactly as the call pipeline's CallInfo.op spells it. Rules are checked against
this catalog so a typo ("kv.pt") is an error instead of a rule that never matches.
"""

from __future__ import annotations

import fnmatch
import functools

from memsidecar.sidecar.calls import BLOCKS, ops_by_block

__all__ = ["BLOCKS", "known_methods", "known_ops"]


@functools.cache
def known_ops() -> frozenset[str]:
    """Every "<block>.<method>" the sidecar's services define."""
    return frozenset(f"{block}.{m}" for block, methods in ops_by_block().items() for m in methods)


@functools.cache
def known_methods() -> frozenset[str]:
    """The method part of every known op ("put", "list_sessions")."""
    return frozenset(op.split(".", 1)[1] for op in known_ops())


def op_pattern_targets_full_op(pattern: str) -> bool:
    """A pattern with a dot ("kv.put", "kv.*") matches the whole op; one without
    ("put", "list_*", "*") matches the method on any block."""
    return "." in pattern


def op_pattern_matches_something(pattern: str) -> bool:
    names = known_ops() if op_pattern_targets_full_op(pattern) else known_methods()
    return any(fnmatch.fnmatchcase(name, pattern) for name in names)


def block_pattern_matches_something(pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(block, pattern) for block in BLOCKS)

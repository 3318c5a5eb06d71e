"""Scope checks: a token's namespace globs and op patterns against the block/namespace/op called."""

from __future__ import annotations

import pytest

from memsidecar.sidecar.auth.scope import (
    check_op,
    check_scope,
    validate_for_issue,
    validate_namespace_glob,
    validate_op_pattern,
)
from memsidecar.sidecar.calls import ops_by_block
from memsidecar.sidecar.errors import InvalidArgument, PermissionDenied
from memsidecar.sidecar.identity import Identity

AMBIENT = Identity(tenant="default", agent="local")


def token(namespaces: tuple[str, ...], ops: tuple[str, ...] = ("*",)) -> Identity:
    return Identity(
        tenant="acme", agent="planner-1", namespaces=namespaces, ops=ops, source="token"
    )


def allowed(identity: Identity, block: str, namespace: str, op: str) -> bool:
    try:
        check_scope(identity, block, namespace, op)
    except PermissionDenied:
        return False
    return True


def test_ambient_identities_are_unrestricted() -> None:
    for block, ops in ops_by_block().items():
        for method in ops:
            check_scope(AMBIENT, block, "anything", f"{block}.{method}")
            check_op(AMBIENT, f"{block}.{method}")


@pytest.mark.parametrize(
    ("block", "namespace", "expected"),
    [
        ("kv", "scratch", True),
        ("kv", "scratch-1", True),
        # The glob is a prefix match: "scratchy" starts with "scratch". Issue "kv/scratch-*"
        # to mean "scratch-<something>" only (documented in docs/tokens.md).
        ("kv", "scratchy", True),
        ("kv", "other", False),
        ("kv", "Scratch", False),  # case-sensitive
        ("kv", "my-scratch", False),
        ("episodic", "scratch", False),  # another block
        ("kvx", "scratch", False),
    ],
)
def test_namespace_glob(block: str, namespace: str, expected: bool) -> None:
    assert allowed(token(("kv/scratch*",)), block, namespace, f"{block}.get") is expected


@pytest.mark.parametrize(
    "namespace",
    [
        "scratch/../secret",
        "scratch/x",
        "scratch*",  # a glob character in a name never matches as a wildcard
        "",
        "..",
        "-x",
        "x" * 129,
        "scratch\n",
    ],
)
def test_namespace_escape_attempts_are_invalid_names(namespace: str) -> None:
    with pytest.raises(InvalidArgument):
        check_scope(token(("kv/scratch*",)), "kv", namespace, "kv.get")
    # Also for unrestricted callers: the name is checked before any glob.
    with pytest.raises(InvalidArgument):
        check_scope(AMBIENT, "kv", namespace, "kv.get")


def test_block_globs() -> None:
    some = token(("[ek]*/notes",))
    assert allowed(some, "kv", "notes", "kv.get")
    assert allowed(some, "episodic", "notes", "episodic.range")
    assert not allowed(some, "semantic", "notes", "semantic.search")


def test_block_wildcard_and_everything() -> None:
    shared = token(("*/shared",))
    assert allowed(shared, "kv", "shared", "kv.put")
    assert allowed(shared, "episodic", "shared", "episodic.append")
    assert not allowed(shared, "kv", "shared2", "kv.put")
    everything = token(("*",))
    assert allowed(everything, "semantic", "anything", "semantic.search")
    any_kv = token(("kv/*",))
    assert allowed(any_kv, "kv", "x", "kv.get")
    assert not allowed(any_kv, "lease", "x", "lease.acquire")


def test_bracket_and_question_globs() -> None:
    teams = token(("kv/team-[ab]", "episodic/run-?"))
    assert allowed(teams, "kv", "team-a", "kv.get")
    assert not allowed(teams, "kv", "team-c", "kv.get")
    assert allowed(teams, "episodic", "run-7", "episodic.range")
    assert not allowed(teams, "episodic", "run-17", "episodic.range")


@pytest.mark.parametrize(
    ("ops", "op", "expected"),
    [
        (("kv.put",), "kv.put", True),
        (("kv.put",), "kv.get", False),
        (("kv.put",), "episodic.put", False),
        (("put",), "kv.put", True),
        (("put",), "artifact.put", True),
        (("put",), "kv.get", False),
        (("kv.*",), "kv.increment", True),
        (("kv.*",), "lease.acquire", False),
        (("*",), "session.keep_alive", True),
        (("get", "lease.*"), "lease.renew", True),
        (("get", "lease.*"), "semantic.get", True),
        (("get", "lease.*"), "semantic.search", False),
        (("list_sessions",), "episodic.list_sessions", True),
        (("*.get",), "artifact.get", True),
        (("*.get",), "kv.multi_get", False),
        (("*get",), "kv.multi_get", True),
        (("list_*",), "episodic.list_sessions", True),
        (("list_*",), "kv.get", False),
        (("kv.multi_*",), "kv.multi_get", True),
        (("kv.*",), "kvx.put", False),
    ],
)
def test_op_patterns(ops: tuple[str, ...], op: str, expected: bool) -> None:
    identity = token(("*",), ops)
    block = op.partition(".")[0]
    assert allowed(identity, block, "ns", op) is expected
    try:
        check_op(identity, op)
    except PermissionDenied:
        assert not expected
    else:
        assert expected


def test_denial_messages_say_what_is_allowed() -> None:
    identity = token(("kv/scratch*", "*/shared"), ("kv.get", "kv.put"))
    with pytest.raises(PermissionDenied) as info:
        check_scope(identity, "kv", "secret", "kv.put")
    assert info.value.message.startswith(
        "token for agent 'planner-1' (tenant 'acme') does not allow op kv.put on kv/secret; "
        "allowed namespaces: kv/scratch*, */shared."
    )
    with pytest.raises(PermissionDenied) as info:
        check_scope(identity, "kv", "scratch", "kv.delete")
    assert "does not allow op kv.delete on kv/scratch; allowed ops: kv.get, kv.put" in (
        info.value.message
    )
    with pytest.raises(PermissionDenied, match=r"allowed ops: kv\.get, kv\.put"):
        check_op(identity, "lease.acquire")


@pytest.mark.parametrize(
    "glob",
    [
        "*",
        "kv/*",
        "kv/scratch*",
        "*/shared",
        "kv/team-[ab]",
        "episodic/run-?",
        "[ek]*/x",
        "a_b/x.y_z",
    ],
)
def test_valid_namespace_globs(glob: str) -> None:
    assert validate_namespace_glob(glob) == glob


@pytest.mark.parametrize(
    "glob",
    [
        "",
        "kv",
        "scratch*",
        "kv/",
        "/x",
        "kv/a/b",
        "kv/../x",
        "**/x/y",
        "kv*x",
        "KV/x",
        "k v/x",
        "kv/a b",
        "kv/[ab",
        "kv/a]b",
        "kv/[!a]",
        "kv/[]",
        "kv/x\n",
        "kv/" + "x" * 300,
    ],
)
def test_malformed_namespace_globs(glob: str) -> None:
    with pytest.raises(ValueError):
        validate_namespace_glob(glob)


@pytest.mark.parametrize(
    "op", ["*", "put", "kv.put", "kv.*", "*.get", "list_*", "kv.multi_?et", "[kl]*.get"]
)
def test_valid_op_patterns(op: str) -> None:
    assert validate_op_pattern(op) == op


@pytest.mark.parametrize(
    "op", ["", "kv.", ".put", "kv.put.x", "KV.put", "kv put", "kv.[put", "kv/put", "x" * 201]
)
def test_malformed_op_patterns(op: str) -> None:
    with pytest.raises(ValueError):
        validate_op_pattern(op)


def test_known_ops_come_from_the_wire_api() -> None:
    ops = ops_by_block()
    assert set(ops) == {"kv", "episodic", "semantic", "artifact", "lease", "session"}
    assert "put" in ops["kv"] and "increment" in ops["kv"]
    assert "list_sessions" in ops["episodic"]
    assert "keep_alive" in ops["session"]


def test_issue_validation_catches_typos() -> None:
    validate_for_issue(["kv/*", "*"], ["kv.put", "put", "kv.*", "*"])
    validate_for_issue(["[ek]*/x", "*/shared"], ["*.get", "list_*", "kv.multi_*"])
    with pytest.raises(ValueError, match="block kv has methods"):
        validate_for_issue(["kv/*"], ["kv.pt"])
    with pytest.raises(ValueError, match=r"names no block \('kb'\)"):
        validate_for_issue(["kb/*"], ["kv.put"])
    with pytest.raises(ValueError, match="matches no method"):
        validate_for_issue(["kv/*"], ["lsit_*"])

"""What a token lets its holder do: namespace globs and op patterns, checked per call.

A token carries `namespaces` like ["kv/scratch*", "*/shared"] ("<block
glob>/<namespace glob>", or "*" for everything) and `ops` like ["kv.put",
"get", "episodic.*", "*"]. A call of op `kv.put` on kv namespace `scratch-1`
is allowed when some namespace glob matches "kv/scratch-1" and some op pattern
matches "kv.put". Globs are shell-style and case-sensitive (fnmatchcase). An op
pattern with a dot is matched against the whole op ("kv.*", "*.get"); one
without a dot against the method only ("put", "list_*", "*") — the same rule
as policy `ops` (docs/policy.md).

Namespace names never contain "/" (they are validated before matching), so a
glob's block part cannot be escaped. Identities with an empty `namespaces` or
`ops` (ambient socket callers) are unrestricted in that part.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from memsidecar.sidecar.blocks.settings import NAMESPACE_RE, validate_namespace_name
from memsidecar.sidecar.calls import BLOCKS, ops_by_block
from memsidecar.sidecar.errors import InvalidArgument, PermissionDenied
from memsidecar.sidecar.identity import Identity

MAX_GLOB_CHARS = 200

# Characters outside "[...]" in each part of a glob, and inside "[...]".
_BLOCK_CHARS = re.compile(r"[a-z0-9_*?]")
_NAMESPACE_CHARS = re.compile(r"[A-Za-z0-9._*?\-]")
_METHOD_CHARS = re.compile(r"[a-z0-9_*?]")
_CLASS_BODY = re.compile(r"[A-Za-z0-9._\-]+")


def validate_name(value: str, what: str = "namespace") -> str:
    """A namespace (or tenant) name; InvalidArgument naming `what` if not.

    Stricter than a bare NAMESPACE_RE.match: "$" would accept a trailing newline.
    """
    try:
        validate_namespace_name(value)
    except InvalidArgument as exc:
        raise InvalidArgument(exc.message.replace("namespace", what)) from None
    if not NAMESPACE_RE.fullmatch(value):
        raise InvalidArgument(
            f"{what} {value!r} is invalid: use 1-128 characters of letters, digits, '.', '_' or "
            "'-', starting with a letter or digit"
        )
    return value


def _check_glob(part: str, chars: re.Pattern[str], whole: str, kind: str, example: str) -> None:
    """Each character allowed, each "[" opening a non-empty class of name characters."""
    if not part:
        raise ValueError(f"{kind} {whole!r} has an empty part; e.g. {example}")
    i = 0
    while i < len(part):
        ch = part[i]
        if ch == "[":
            end = part.find("]", i + 1)
            if end < 0 or not _CLASS_BODY.fullmatch(part[i + 1 : end]):
                raise ValueError(
                    f"{kind} {whole!r}: '[' must open a class of name characters closed by ']', "
                    f"e.g. {example}"
                )
            i = end + 1
            continue
        if not chars.fullmatch(ch):
            raise ValueError(f"{kind} {whole!r}: character {ch!r} is not allowed; e.g. {example}")
        i += 1


def validate_namespace_glob(glob: str) -> str:
    """A token namespace glob: "*", or "<block glob>/<namespace glob>"; ValueError if not."""
    if glob == "*":
        return glob
    if not glob or len(glob) > MAX_GLOB_CHARS:
        raise ValueError(f"namespace glob {glob!r} must be 1-{MAX_GLOB_CHARS} characters")
    block, sep, pattern = glob.partition("/")
    if not sep or "/" in pattern:
        raise ValueError(
            f"namespace glob {glob!r} must be '<block>/<namespace glob>' with exactly one '/', "
            "e.g. 'kv/scratch*', '*/shared' or '*'"
        )
    _check_glob(block, _BLOCK_CHARS, glob, "namespace glob", "'kv/scratch*' or '*/shared'")
    _check_glob(pattern, _NAMESPACE_CHARS, glob, "namespace glob", "'kv/team-[ab]*'")
    return glob


def validate_op_pattern(op: str) -> str:
    """A token op pattern: "kv.put", "kv.*", "*.get", "put", "list_*" or "*"; ValueError if not."""
    if not op or len(op) > MAX_GLOB_CHARS:
        raise ValueError(f"op {op!r} must be 1-{MAX_GLOB_CHARS} characters")
    parts = op.split(".")
    if len(parts) > 2:
        raise ValueError(
            f"op {op!r} is invalid: write '<block>.<method>' (kv.put, kv.*, *.get), a method "
            "on any block (put, list_*) or '*'"
        )
    for part in parts:
        _check_glob(part, _METHOD_CHARS, op, "op", "'kv.put', 'kv.*', 'put' or '*'")
    return op


def _op_names() -> tuple[list[str], list[str]]:
    table = ops_by_block()
    full = [f"{block}.{method}" for block, methods in table.items() for method in methods]
    methods = sorted({m for ms in table.values() for m in ms})
    return full, methods


def validate_for_issue(namespaces: list[str], ops: list[str]) -> None:
    """Stricter checks when minting a token: every glob must reach an existing block and every
    op pattern an existing operation, so a typo is caught by the issuer instead of minting a
    token that silently grants nothing."""
    if not namespaces:
        raise ValueError("a token needs at least one namespace glob (e.g. 'kv/scratch*', or '*')")
    if not ops:
        raise ValueError("a token needs at least one op (e.g. 'kv.get', 'put', 'kv.*', or '*')")
    for glob in namespaces:
        validate_namespace_glob(glob)
        block = glob.partition("/")[0]
        if not any(fnmatchcase(b, block) for b in BLOCKS):
            raise ValueError(
                f"namespace glob {glob!r} names no block ({block!r}); blocks: {', '.join(BLOCKS)}"
            )
    full, methods = _op_names()
    for op in ops:
        validate_op_pattern(op)
        if "." in op:
            if not any(fnmatchcase(name, op) for name in full):
                block = op.partition(".")[0]
                known = ops_by_block().get(block)
                hint = (
                    f"block {block} has methods {', '.join(known)}"
                    if known
                    else f"blocks: {', '.join(BLOCKS)}"
                )
                raise ValueError(f"op {op!r} matches no operation; {hint}")
        elif not any(fnmatchcase(m, op) for m in methods):
            raise ValueError(
                f"op {op!r} matches no method of any block; methods: {', '.join(methods)}"
            )


def namespace_allowed(globs: tuple[str, ...], block: str, namespace: str) -> bool:
    target = f"{block}/{namespace}"
    return any(g == "*" or fnmatchcase(target, g) for g in globs)


def op_allowed(patterns: tuple[str, ...], op: str) -> bool:
    method = op.partition(".")[2]
    return any(fnmatchcase(op if "." in p else method, p) for p in patterns)


def _who(identity: Identity) -> str:
    return f"token for agent {identity.agent!r} (tenant {identity.tenant!r})"


def check_op(identity: Identity, op: str) -> None:
    """PERMISSION_DENIED unless the identity may call `op` ("kv.put") at all.

    For calls whose namespace is not known up front (session RPCs, before the
    first message of a client stream); check_scope covers both parts.
    """
    if identity.ops and not op_allowed(identity.ops, op):
        raise PermissionDenied(
            f"{_who(identity)} does not allow op {op}; allowed ops: {', '.join(identity.ops)}. "
            "Ask the issuer for a token that includes it"
        )


def check_scope(identity: Identity, block: str, namespace: str, op: str) -> None:
    """PERMISSION_DENIED unless the identity may call `op` on `block`/`namespace`.

    The namespace is validated first (INVALID_ARGUMENT), so a name with '/' or
    glob characters can never be matched against a glob.
    """
    validate_name(namespace)
    if identity.namespaces and not namespace_allowed(identity.namespaces, block, namespace):
        raise PermissionDenied(
            f"{_who(identity)} does not allow op {op} on {block}/{namespace}; allowed namespaces: "
            f"{', '.join(identity.namespaces)}. Ask the issuer for a token that covers "
            f"{block}/{namespace}"
        )
    if identity.ops and not op_allowed(identity.ops, op):
        raise PermissionDenied(
            f"{_who(identity)} does not allow op {op} on {block}/{namespace}; allowed ops: "
            f"{', '.join(identity.ops)}. Ask the issuer for a token that includes it"
        )

"""How `MemSidecarStore` names things in the sidecar: item kv keys and namespace tags.

An item's kv key is each namespace label escaped and followed by `/`, then `/` and the
escaped item key: ("users", "a/b"), "k%1" -> "users/a%2Fb//k%251". Escaping `%`, `/` and
NUL keeps labels free of `/`, so a namespace prefix is a kv key prefix (scans stay
exact) and the first `//` always ends the namespace. A semantic record carries one tag
per namespace prefix, a fixed-length hash of it, so a search stays under a prefix on the
server. Pure string functions, kept apart so the layout can be read and tested alone.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

_ESCAPES = {"%": "%25", "/": "%2F", "\x00": "%00"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
_ESCAPED = re.compile("|".join(map(re.escape, _UNESCAPES)))


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def _unescape(text: str) -> str:
    return _ESCAPED.sub(lambda m: _UNESCAPES[m.group(0)], text)


def _prefix(namespace: Sequence[str]) -> str:
    """The kv key prefix every item under `namespace` (and its children) starts with."""
    return "".join(_escape(label) + "/" for label in namespace)


def encode_key(namespace: Sequence[str], key: str) -> str:
    """The kv key of an item: ("a", "b"), "k" -> "a/b//k" (labels and key escaped)."""
    return _prefix(namespace) + "/" + _escape(key)


def decode_key(kv_key: str) -> tuple[tuple[str, ...], str]:
    """The inverse of encode_key."""
    head, sep, key = kv_key.partition("//")
    if not sep or not head or "/" in key:
        raise ValueError(f"kv key {kv_key!r} is not a LangGraph store item key")
    return tuple(_unescape(label) for label in head.split("/")), _unescape(key)


def _after(group: str) -> str:
    """A scan cursor past every key starting with `group` (which ends with `/`).

    `/` + 1 is `0`; the cursor is never a key itself (it has no `//`).
    """
    return group[:-1] + "0"


def _tag(prefix: str) -> str:
    """The semantic tag for a namespace prefix: fixed length whatever the labels."""
    return "ns-" + hashlib.blake2b(prefix.encode(), digest_size=16).hexdigest()


def _prefix_tags(namespace: Sequence[str]) -> list[str]:
    return [_tag(_prefix(namespace[: i + 1])) for i in range(len(namespace))]

"""The LangGraph store's kv key mapping (store_keys.py): round trips, nesting prefixes and
escaped separators; pure functions, no sidecar."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from memsidecar.integrations.langgraph.store_keys import decode_key, encode_key

labels = st.text(min_size=1).filter(lambda s: "." not in s and "\x00" not in s)


@given(st.lists(labels, min_size=1, max_size=4), st.text())
def test_keys_round_trip_and_prefixes_nest(namespace: list[str], key: str) -> None:
    encoded = encode_key(namespace, key)
    assert decode_key(encoded) == (tuple(namespace), key)
    assert "\x00" not in encoded
    for depth in range(len(namespace)):
        parent = encode_key(namespace[:depth], "")[:-1] if depth else ""
        assert encoded.startswith(parent)


def test_separators_in_labels_cannot_collide() -> None:
    assert encode_key(("a/b",), "c") != encode_key(("a", "b"), "c")
    assert encode_key(("a",), "b//c") == "a//b%2F%2Fc"
    assert encode_key(("%2F",), "k") == "%252F//k"
    assert decode_key(encode_key(("a%", "/"), "\x00")) == (("a%", "/"), "\x00")

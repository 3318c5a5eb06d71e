"""Request checks shared by the blocks; each error says what to change."""

from __future__ import annotations

from memsidecar.sidecar.errors import InvalidArgument


def check_key(key: str, max_bytes: int, field: str, setting: str) -> str:
    if not key:
        raise InvalidArgument(f"{field} is required and must not be empty")
    size = len(key.encode())
    if size > max_bytes:
        raise InvalidArgument(
            f"{field} is {size} bytes, over the limit of {max_bytes} bytes ({setting})"
        )
    if "\x00" in key:
        raise InvalidArgument(f"{field} must not contain NUL characters")
    return key


def page_limit(requested: int, default: int, maximum: int, setting: str) -> int:
    """0 means the default; negative is an error; above the maximum is an error."""
    if requested < 0:
        raise InvalidArgument(f"limit must not be negative (got {requested})")
    if requested > maximum:
        raise InvalidArgument(
            f"limit {requested} is over this sidecar's maximum of {maximum} ({setting})"
        )
    return requested or default

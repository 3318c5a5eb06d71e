import uuid


def fresh_namespace(prefix: str) -> str:
    """A namespace no other test uses: tests of a module share one sidecar process."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"

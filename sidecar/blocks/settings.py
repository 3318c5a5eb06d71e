"""Settings every block shares: its driver, the driver's options, its namespaces."""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Generic, TypeVar

from pydantic import Field, field_validator

from memsidecar.sidecar.errors import InvalidArgument, NotFound
from memsidecar.sidecar.models import StrictModel

NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class NoOptions(StrictModel):
    """Options of a driver that takes none (any given option is an error)."""


class NamespaceSettings(StrictModel):
    """Per-namespace settings; blocks extend this."""


NS = TypeVar("NS", bound=NamespaceSettings)


def validate_namespace_name(namespace: str) -> str:
    if not namespace:
        raise InvalidArgument("namespace is required; pass e.g. namespace='scratch'")
    if not NAMESPACE_RE.fullmatch(namespace):
        raise InvalidArgument(
            f"namespace {namespace!r} is invalid: use 1-128 characters of letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return namespace


class BlockSettings(StrictModel, Generic[NS]):
    """The part of a block's config that is the same for every block.

    `namespaces` maps a name or a glob ("*", "team-*") to that namespace's
    settings; a request for a namespace that matches none is NOT_FOUND.
    The first matching entry wins, exact names before globs.
    """

    driver: str = "memory"
    options: dict[str, Any] = Field(default_factory=dict)
    namespaces: dict[str, NS]

    @field_validator("namespaces")
    @classmethod
    def _patterns_valid(cls, value: dict[str, NS]) -> dict[str, NS]:
        for pattern in value:
            if not pattern or not re.fullmatch(r"[A-Za-z0-9._*?\-\[\]]+", pattern):
                raise ValueError(f"namespace pattern {pattern!r} may only use names and * ? [ ]")
        return value

    def namespace(self, block: str, namespace: str) -> NS:
        """The settings for `namespace`, or NOT_FOUND naming the configured ones."""
        validate_namespace_name(namespace)
        if namespace in self.namespaces:
            return self.namespaces[namespace]
        for pattern, settings in self.namespaces.items():
            if fnmatch.fnmatchcase(namespace, pattern):
                return settings
        known = ", ".join(sorted(self.namespaces)) or "none"
        raise NotFound(
            f"unknown {block} namespace {namespace!r}; configured: {known}. "
            f"Add it under blocks.{block}.namespaces in the sidecar config"
        )

"""A name → module table of drivers, one per block, so adding a driver touches one folder.

Drivers are registered by module path and imported when first opened or migrated: a
sidecar never imports the backends it is not configured for (boto3, asyncpg and aiohttp
were most of its cold start).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from pydantic import BaseModel, ValidationError

from memsidecar.sidecar.blocks.base import BlockContext

if TYPE_CHECKING:
    from memsidecar.sidecar.backends.postgres import Migration

D = TypeVar("D")
Factory = Callable[[dict[str, Any], BlockContext], Awaitable[D]]


class DriverConfigError(Exception):
    """A block's driver name or options are invalid; the message says which and why."""


def load_attribute(module: str, name: str) -> Any:
    """`module.name`, importing the module on first use."""
    return getattr(importlib.import_module(module), name)


class DriverRegistry(Generic[D]):
    def __init__(self, block: str) -> None:
        self.block = block
        self._modules: dict[str, str] = {}
        self._migrating: set[str] = set()

    def register(self, name: str, module: str, *, migrations: bool = False) -> None:
        """Add a driver: `module` defines `create(options, ctx)` and, with `migrations`,
        `MIGRATIONS`, its schema history applied by `memsidecar migrate`."""
        self._modules[name] = module
        if migrations:
            self._migrating.add(name)

    def migrations(self, name: str) -> Sequence[Migration]:
        if name not in self._migrating:
            return ()
        return cast("Sequence[Migration]", load_attribute(self._modules[name], "MIGRATIONS"))

    @property
    def names(self) -> list[str]:
        return sorted(self._modules)

    async def open(self, name: str, options: dict[str, Any], ctx: BlockContext) -> D:
        module = self._modules.get(name)
        if module is None:
            raise DriverConfigError(
                f"blocks.{self.block}.driver: unknown driver {name!r}; "
                f"available: {', '.join(self.names)}"
            )
        factory = cast("Factory[D]", load_attribute(module, "create"))
        return await factory(options, ctx)


Opts = TypeVar("Opts", bound=BaseModel)


def parse_options(block: str, driver: str, model: type[Opts], options: dict[str, Any]) -> Opts:
    """Validate a driver's options, naming each bad field in the error."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            f"blocks.{block}.options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        )
        raise DriverConfigError(f"{driver} driver for {block}: {problems}") from exc

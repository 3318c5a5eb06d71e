"""A name → factory table of drivers, one per block, so adding a driver touches one folder."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from memsidecar.sidecar.blocks.base import BlockContext

if TYPE_CHECKING:
    from memsidecar.sidecar.backends.postgres import Migration

D = TypeVar("D")
Factory = Callable[[dict[str, Any], BlockContext], Awaitable[D]]


class DriverConfigError(Exception):
    """A block's driver name or options are invalid; the message says which and why."""


class DriverRegistry(Generic[D]):
    def __init__(self, block: str) -> None:
        self.block = block
        self._factories: dict[str, Factory[D]] = {}
        self._migrations: dict[str, Sequence[Migration]] = {}

    def register(
        self, name: str, factory: Factory[D], migrations: Sequence[Migration] = ()
    ) -> None:
        """Add a driver; `migrations` is its schema history, applied by `memsidecar migrate`."""
        self._factories[name] = factory
        if migrations:
            self._migrations[name] = migrations

    def migrations(self, name: str) -> Sequence[Migration]:
        return self._migrations.get(name, ())

    @property
    def names(self) -> list[str]:
        return sorted(self._factories)

    async def open(self, name: str, options: dict[str, Any], ctx: BlockContext) -> D:
        factory = self._factories.get(name)
        if factory is None:
            raise DriverConfigError(
                f"blocks.{self.block}.driver: unknown driver {name!r}; "
                f"available: {', '.join(self.names)}"
            )
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

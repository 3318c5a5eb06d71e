"""What an embedder is, and the table of embedder types the sidecar can build."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from memsidecar.sidecar.blocks.registry import DriverConfigError, load_attribute
from memsidecar.sidecar.blocks.semantic.settings import EmbedderSettings


class Embedder(Protocol):
    """Turns texts into vectors of exactly `dimension` floats.

    `name` identifies the embedding space (the model, not the config key): a
    namespace stays bound to the name and dimension of its first write.
    """

    name: str
    dimension: int

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...

    async def close(self) -> None:
        """Release connections; called once when the sidecar stops."""
        ...


EmbedderFactory = Callable[[EmbedderSettings], Awaitable[Embedder]]


class EmbedderRegistry:
    """Embedder types by EmbedderSettings.type; adding a type is one register() call.

    Like drivers, each type is a module with `create(settings)`, imported on first use
    (the HTTP embedders bring aiohttp)."""

    def __init__(self) -> None:
        self._modules: dict[str, str] = {}

    def register(self, type: str, module: str) -> None:
        self._modules[type] = module

    @property
    def types(self) -> list[str]:
        return sorted(self._modules)

    async def create(self, key: str, settings: EmbedderSettings) -> Embedder:
        module = self._modules.get(settings.type)
        if module is None:
            raise DriverConfigError(
                f"blocks.semantic.embedders.{key}.type: embedder type {settings.type!r} is not "
                f"available in this sidecar; available: {', '.join(self.types)}"
            )
        factory = cast(EmbedderFactory, load_attribute(module, "create"))
        try:
            return await factory(settings)
        except DriverConfigError as exc:
            raise DriverConfigError(f"blocks.semantic.embedders.{key}.{exc}") from exc

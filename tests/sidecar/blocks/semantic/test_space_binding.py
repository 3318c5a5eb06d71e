"""A namespace is bound to one embedder and dimension, per tenant.

Changing a namespace's embedder means restarting the sidecar with another
config over the same storage. These tests do that by running two services with
different settings over one driver (opened through the registry from each
conftest.SEMANTIC_DRIVERS config), and call them as two tenants.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator

import pytest

from memsidecar.semantic.v1 import semantic_pb2
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.registry import DriverConfigError
from memsidecar.sidecar.blocks.semantic.driver import SemanticDriver
from memsidecar.sidecar.blocks.semantic.embedders import EMBEDDERS, Embedder
from memsidecar.sidecar.blocks.semantic.embedders.fake import FakeEmbedder
from memsidecar.sidecar.blocks.semantic.registry import DRIVERS
from memsidecar.sidecar.blocks.semantic.service import SemanticService
from memsidecar.sidecar.blocks.semantic.settings import EmbedderSettings, SemanticSettings
from memsidecar.sidecar.config import load_config
from memsidecar.sidecar.errors import FailedPrecondition, InvalidArgument, NotFound
from memsidecar.sidecar.identity import Identity, set_identity
from memsidecar.sidecar.server import build_sidecar
from tests.sidecar.blocks.semantic.conftest import SEMANTIC_DRIVERS
from tests.support import ManualClock, short_tmpdir


class OtherModel(FakeEmbedder):
    """Same dimension as the fake embedder, different embedding space."""

    name = "other-model"


@pytest.fixture(params=sorted(SEMANTIC_DRIVERS))
async def driver(
    request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[SemanticDriver]:
    if request.param.startswith("pgvector"):
        request.getfixturevalue("postgres")
    config = load_config(None, SEMANTIC_DRIVERS[request.param])
    settings = config.blocks.semantic
    opened = await DRIVERS.open(settings.driver, settings.options, BlockContext(config, clock))
    try:
        yield opened
    finally:
        await opened.close()


RUN = uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def fresh_tenants(monkeypatch: pytest.MonkeyPatch) -> None:
    """New tenant names for every test: a database driver keeps data between tests."""
    monkeypatch.setattr(f"{__name__}.RUN", uuid.uuid4().hex[:8])


def as_tenant(tenant: str) -> None:
    """Call the services below as `tenant` (each test runs in its own context).

    Tenant names are unique per test, so a shared database never mixes tests or runs.
    """
    set_identity(Identity(tenant=f"{tenant}-{RUN}", agent="test"))


def service(driver: SemanticDriver, clock: ManualClock, embedder: Embedder) -> SemanticService:
    settings = SemanticSettings(
        embedders={"e": EmbedderSettings(type="fake", dimension=embedder.dimension)},
        namespaces={"*": {"embedder": "e"}},  # type: ignore[dict-item]
    )
    return SemanticService(driver, settings, {"e": embedder}, clock)


async def upsert(svc: SemanticService, ns: str, id: str, text: str, **kw: object) -> int:
    request = semantic_pb2.UpsertRequest(namespace=ns, id=id, content=text, **kw)  # type: ignore[arg-type]
    return (await svc.Upsert(request, None)).record.version  # type: ignore[arg-type]


async def search(svc: SemanticService, ns: str, text: str) -> list[str]:
    request = semantic_pb2.SearchRequest(namespace=ns, query_text=text)
    return [h.record.id for h in (await svc.Search(request, None)).hits]  # type: ignore[arg-type]


async def delete(svc: SemanticService, ns: str, id: str, hard: bool) -> bool:
    request = semantic_pb2.DeleteRequest(namespace=ns, id=id, hard=hard)
    return (await svc.Delete(request, None)).deleted  # type: ignore[arg-type]


async def test_dimension_change_is_refused(driver: SemanticDriver, clock: ManualClock) -> None:
    as_tenant("t1")
    wide = service(driver, clock, FakeEmbedder(256))
    narrow = service(driver, clock, FakeEmbedder(64))
    await upsert(wide, "notes", "a", "green tea")
    with pytest.raises(FailedPrecondition, match=r"dimension 256 .* dimension 64"):
        await upsert(narrow, "notes", "b", "black coffee")
    with pytest.raises(FailedPrecondition, match=r"dimension 256 .* dimension 64"):
        await search(narrow, "notes", "tea")
    # A caller vector of the new dimension is refused the same way.
    with pytest.raises(FailedPrecondition, match="dimension 256"):
        await upsert(narrow, "notes", "c", "", vector=[1.0] * 64)
    # ... and one of the old dimension no longer matches the config.
    with pytest.raises(InvalidArgument, match=r"256 dimensions but .* 64 dimensions"):
        await upsert(narrow, "notes", "c", "", vector=[1.0] * 256)
    # Nothing changed; other namespaces are free to use the new embedder.
    assert await search(wide, "notes", "tea") == ["a"]
    await upsert(narrow, "fresh", "b", "black coffee")
    assert await search(narrow, "fresh", "coffee") == ["b"]


async def test_embedder_change_with_the_same_dimension_is_refused(
    driver: SemanticDriver, clock: ManualClock
) -> None:
    as_tenant("t1")
    fake = service(driver, clock, FakeEmbedder(32))
    other = service(driver, clock, OtherModel(32))
    await upsert(fake, "notes", "a", "green tea")
    with pytest.raises(FailedPrecondition, match=r"embedder 'fake'.*embedder 'other-model'"):
        await upsert(other, "notes", "b", "tea")
    with pytest.raises(FailedPrecondition, match="other-model"):
        await search(other, "notes", "tea")


async def test_binding_lasts_while_records_exist(
    driver: SemanticDriver, clock: ManualClock
) -> None:
    as_tenant("t1")
    wide = service(driver, clock, FakeEmbedder(256))
    narrow = service(driver, clock, FakeEmbedder(64))
    await upsert(wide, "notes", "a", "one")
    await upsert(wide, "notes", "b", "two", ttl={"seconds": 30})
    # Soft-deleted records still hold vectors of the old dimension.
    assert await delete(wide, "notes", "a", hard=False)
    with pytest.raises(FailedPrecondition):
        await upsert(narrow, "notes", "n", "new")
    assert await delete(wide, "notes", "a", hard=True)
    with pytest.raises(FailedPrecondition):
        await upsert(narrow, "notes", "n", "new")
    # Once the last record is gone (here by expiry) the namespace can be rebound.
    clock.advance(31)
    assert await upsert(narrow, "notes", "n", "new") == 1
    assert await search(narrow, "notes", "new") == ["n"]
    with pytest.raises(FailedPrecondition, match=r"dimension 64 .* dimension 256"):
        await search(wide, "notes", "new")


async def test_tenants_are_isolated(driver: SemanticDriver, clock: ManualClock) -> None:
    wide = service(driver, clock, FakeEmbedder(256))
    narrow = service(driver, clock, FakeEmbedder(64))
    as_tenant("t1")
    await upsert(wide, "notes", "a", "secret plans")
    as_tenant("t2")
    # Each tenant's namespace is bound on its own.
    await upsert(narrow, "notes", "a", "public notes")
    assert await search(narrow, "notes", "secret plans") == ["a"]
    get = semantic_pb2.GetRequest(namespace="notes", id="a")
    assert (await narrow.Get(get, None)).record.content == "public notes"  # type: ignore[arg-type]
    assert await delete(narrow, "notes", "a", hard=True)
    with pytest.raises(NotFound):
        await narrow.Get(get, None)  # type: ignore[arg-type]
    as_tenant("t1")
    assert (await wide.Get(get, None)).record.content == "secret plans"  # type: ignore[arg-type]


async def test_unavailable_embedder_type_is_a_config_error() -> None:
    # The settings only accept known types; a registry without one must still say so.
    unknown = EmbedderSettings.model_construct(type="cohere")  # type: ignore[arg-type]
    with pytest.raises(
        DriverConfigError,
        match=r"embedders\.remote\.type.*'cohere'.*available: fake, ollama, openai",
    ):
        await EMBEDDERS.create("remote", unknown)


async def test_misconfigured_embedder_stops_the_sidecar_at_start() -> None:
    tmp = short_tmpdir()
    config = load_config(
        None,
        {
            "listen.socket": f"{tmp}/m.sock",
            "blocks.artifact.options": {"root": f"{tmp}/artifacts"},
            "blocks.semantic.embedders": {"remote": {"type": "openai"}},
            "blocks.semantic.namespaces": {"*": {"embedder": "remote"}},
        },
    )
    try:
        with pytest.raises(DriverConfigError, match=r"embedders\.remote\.model: required"):
            await build_sidecar(config)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def test_unknown_driver_and_options_are_config_errors(clock: ManualClock) -> None:
    config = load_config(None, {"blocks.semantic.driver": "nope"})
    with pytest.raises(DriverConfigError, match="unknown driver 'nope'"):
        await DRIVERS.open("nope", {}, BlockContext(config, clock))
    with pytest.raises(DriverConfigError, match="options"):
        await DRIVERS.open("memory", {"bogus": 1}, BlockContext(config, clock))


async def test_sweep_removes_expired_records(driver: SemanticDriver, clock: ManualClock) -> None:
    as_tenant("sweep")
    # sweep() covers every tenant, and a shared database holds other tests' expired
    # records (written at the clock's default start): run this one well before them.
    clock.now = 1_000_000_000.0
    svc = service(driver, clock, FakeEmbedder(16))
    await upsert(svc, "notes", "a", "short", ttl={"seconds": 10})
    await upsert(svc, "notes", "b", "long", ttl={"seconds": 100})
    await upsert(svc, "notes", "c", "forever")
    clock.advance(50)
    assert await driver.sweep(clock()) == 1
    assert await driver.sweep(clock()) == 0
    assert sorted(await search(svc, "notes", "short long forever")) == ["b", "c"]

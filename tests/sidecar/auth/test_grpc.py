"""The authenticator behind a real gRPC server: real peer strings for the socket and TCP,
the header as the SDK sends it, and the token's tenant reaching the block."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from memsidecar.client.aio import AsyncMemSidecar
from memsidecar.client.errors import UnauthenticatedError
from memsidecar.client.retry import RetryPolicy
from memsidecar.sidecar.auth.authenticator import ListenerAuthenticator
from memsidecar.sidecar.auth.settings import AuthSettings
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.kv import KVBlock
from memsidecar.sidecar.config import load_config
from memsidecar.sidecar.identity import Identity
from memsidecar.sidecar.pipeline import CallPipeline
from tests.sidecar.auth.helpers import AuthKey, KeyFactory, verifier_for
from tests.support import ManualClock, short_tmpdir


@dataclass
class Served:
    socket: str
    tcp: str
    key: AuthKey
    clock: ManualClock

    def client(self, target: str, token: str | None = None) -> AsyncMemSidecar:
        return AsyncMemSidecar(target=target, token=token, retry=RetryPolicy(max_retries=0))


@pytest.fixture
async def served(make_key: KeyFactory, clock: ManualClock) -> AsyncIterator[Served]:
    tmp = short_tmpdir()
    config = load_config(None, {"listen.socket": f"{tmp}/m.sock"})
    kv = await KVBlock.build(BlockContext(config=config, clock=clock))
    key = make_key("k1", "paseto-v4-public")
    settings = AuthSettings.model_validate({"keys": [key.verification]})
    authenticator = ListenerAuthenticator(
        settings, Identity(tenant="default", agent="local"), verifier_for(key, clock=clock)
    )
    server = grpc.aio.server(interceptors=[CallPipeline(authenticator)])
    kv.add_to_server(server)
    socket = f"unix:{config.listen.socket}"
    server.add_insecure_port(socket)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Served(socket, f"127.0.0.1:{port}", key, clock)
    finally:
        await server.stop(None)
        await kv.close()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_socket_is_ambient_tcp_needs_a_token(served: Served) -> None:
    async with served.client(served.socket) as local:
        await local.kv.put("scratch", "k", "ambient")
        entry = await local.kv.get("scratch", "k")
        assert entry is not None and entry.value == "ambient"
    async with served.client(served.tcp) as remote:
        with pytest.raises(UnauthenticatedError) as info:
            await remote.kv.get("scratch", "k")
        assert "x-memsidecar-capability: Bearer <token>" in str(info.value)


async def test_token_over_tcp_acts_as_its_tenant(served: Served) -> None:
    token = served.key.issue(served.clock, tenant="acme", ops=["*"], namespaces=["*"])
    async with served.client(served.tcp, token) as remote:
        await remote.kv.put("scratch", "k", "acme's")
        entry = await remote.kv.get("scratch", "k")
        assert entry is not None and entry.value == "acme's"
    # The ambient tenant on the socket does not see acme's key: tenancy came from the token.
    async with served.client(served.socket) as local:
        assert await local.kv.get("scratch", "k") is None
    # The same token on the socket is held to the token (acme), not the ambient identity.
    async with served.client(served.socket, token) as local_with_token:
        entry = await local_with_token.kv.get("scratch", "k")
        assert entry is not None and entry.value == "acme's"


async def test_rejected_tokens_over_grpc(served: Served, make_key: KeyFactory) -> None:
    forged = make_key("other").issue(served.clock, kid="k1")
    for target in (served.tcp, served.socket):
        async with served.client(target, forged) as client:
            with pytest.raises(UnauthenticatedError, match="bad signature"):
                await client.kv.get("scratch", "k")
    token = served.key.issue(served.clock, ttl=60)
    served.clock.advance(3600)
    async with served.client(served.tcp, token) as client:
        with pytest.raises(UnauthenticatedError, match="expired at") as info:
            await client.kv.get("scratch", "k")
        assert token not in str(info.value)

"""A sidecar with the HTTP gateway, a plaintext TCP listener (to compare with gRPC callers),
token auth, and a policy file; plus helpers to call the gateway like curl would."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from memsidecar.client import AsyncMemSidecar, RetryPolicy
from memsidecar.sidecar.auth.keys import load_private_key
from memsidecar.sidecar.auth.tokens import issue_token
from memsidecar.sidecar.server import Sidecar
from tests.support import running_sidecar, token_auth

POLICY = """
defaultEffect: allow
rules:
  - name: locked-is-off-limits
    effect: deny
    match:
      namespaces: [locked]
    message: locked is closed for the test
  - name: one-get-per-window
    effect: rate_limit
    match:
      namespaces: [limited]
      ops: [get]
    rate:
      perSecond: 0.001
      burst: 1
      key: [tenant, namespace]
"""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.body.decode().splitlines()]


@dataclass
class Gateway:
    sidecar: Sidecar
    url: str
    tcp: str
    # Ambient on the socket: no token.
    local: AsyncMemSidecar
    http: aiohttp.ClientSession
    key_file: Path
    # Everything in every namespace of the default tenant.
    token: str

    def issue(
        self,
        namespaces: Sequence[str] = ("*",),
        ops: Sequence[str] = ("*",),
        tenant: str = "default",
    ) -> str:
        return issue_token(
            load_private_key(self.key_file),
            kid="k1",
            tenant=tenant,
            agent="http-agent",
            namespaces=list(namespaces),
            ops=list(ops),
            ttl=600,
        )

    def remote(self, token: str | None) -> AsyncMemSidecar:
        """An SDK client over TCP (gRPC), for comparing with HTTP callers."""
        return AsyncMemSidecar(target=self.tcp, token=token, retry=RetryPolicy(max_retries=0))

    async def post(
        self,
        path: str,
        body: Any = None,
        *,
        token: str | None = "default",
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        method: str = "POST",
    ) -> Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        payload = (
            data if data is not None else (json.dumps(body).encode() if body is not None else b"")
        )
        async with self.http.request(
            method, self.url + path, data=payload, headers=all_headers
        ) as r:
            return Response(r.status, dict(r.headers), await r.read())


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    env, token = token_auth(tmp_path / "keys", namespaces=("*",), ops=("*",))
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY))
    overrides = {
        "auth.keys": json.loads(env["MEMSIDECAR_AUTH__KEYS"]),
        "listen.tcp": "127.0.0.1:0",
        "listen.http": "127.0.0.1:0",
        "policy.file": str(policy),
    }
    async with (
        running_sidecar(overrides) as (sidecar, local),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
    ):
        tcp, url = sidecar.addresses[1], sidecar.addresses[2]
        assert url.startswith("http://")
        yield Gateway(sidecar, url, tcp, local, http, tmp_path / "keys" / "k1.private.pem", token)

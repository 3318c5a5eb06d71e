"""The real `memsidecar serve` process, reached over a real socket with the SDK."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from memsidecar import AsyncMemSidecar, MemSidecar, RetryPolicy
from memsidecar.client.errors import PermissionDeniedError, UnauthenticatedError
from memsidecar.sidecar.blocks import BLOCK_TYPES
from tests.support import sidecar_process, token_auth


def test_serves_on_socket_and_tcp_with_tokens_and_says_where(tmp_path: Path) -> None:
    env, token = token_auth(tmp_path)
    with sidecar_process(["--tcp", "127.0.0.1:0"], env=env) as proc:
        assert proc.addresses[0] == f"unix:{proc.socket}"
        assert proc.addresses[1].startswith("127.0.0.1:")
        banner = proc.log.read_text()
        assert f"memsidecar serving on unix:{proc.socket}" in banner
        assert "embedded default" in banner and "keys=k1" in banner
        with MemSidecar(socket=proc.socket) as m:
            m.kv.put("it", "k", "socket")
        with MemSidecar(target=proc.addresses[1], token=token) as m:
            assert m.kv.get("it", "k").value == "socket"
            with pytest.raises(PermissionDeniedError):
                m.episodic.append("it", "note")
        with MemSidecar(target=proc.addresses[1], retry=RetryPolicy(max_retries=0)) as m:
            with pytest.raises(UnauthenticatedError, match="x-memsidecar-capability"):
                m.kv.get("it", "k")


def test_tcp_without_keys_refuses_to_start() -> None:
    with pytest.raises(RuntimeError, match=r"auth\.keys is empty"):
        with sidecar_process(["--tcp", "127.0.0.1:0"], timeout=20):
            pass


def test_socket_env_var_is_how_agents_find_the_sidecar(monkeypatch: pytest.MonkeyPatch) -> None:
    with sidecar_process() as proc:
        monkeypatch.setenv("MEMSIDECAR_SOCKET", str(proc.socket))
        with MemSidecar.from_env() as m:
            assert m.kv.increment("it", "n") == 1


async def test_async_client_over_real_socket() -> None:
    with sidecar_process() as proc:
        async with AsyncMemSidecar(socket=proc.socket) as m:
            await m.kv.put("it", "a", {"x": 1})
            assert (await m.kv.get("it", "a")).value == {"x": 1}  # type: ignore[union-attr]


def test_health_per_block_and_overall() -> None:
    with sidecar_process() as proc, grpc.insecure_channel(f"unix:{proc.socket}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        names = ["", *(b.service_name for b in BLOCK_TYPES)]
        for name in names:
            status = stub.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="memsidecar.nope.v1.Nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_every_block_service() -> None:
    with sidecar_process() as proc, grpc.insecure_channel(f"unix:{proc.socket}") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(stub.ServerReflectionInfo(iter([request]))))
        served = {s.name for s in response.list_services_response.service}
        assert {b.service_name for b in BLOCK_TYPES} <= served
        assert "grpc.health.v1.Health" in served


def test_sigterm_stops_cleanly_and_removes_socket() -> None:
    with sidecar_process() as proc:
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=15) == 0
        assert not proc.socket.exists()


def test_invalid_config_names_the_field(tmp_path: os.PathLike[str]) -> None:
    config = os.path.join(tmp_path, "bad.yaml")
    with open(config, "w") as f:
        f.write("blocks:\n  kv:\n    max_key_bytes: lots\n  lease:\n    drivr: memory\n")
    result = subprocess.run(
        [sys.executable, "-m", "memsidecar.cli.main", "serve", "--config", config],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "blocks.kv.max_key_bytes" in result.stderr
    assert "blocks.lease.drivr" in result.stderr


def test_unknown_driver_is_a_clear_start_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "memsidecar.cli.main", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MEMSIDECAR_BLOCKS__KV__DRIVER": "redis"},
    )
    assert result.returncode != 0
    assert "blocks.kv.driver: unknown driver 'redis'" in result.stderr


def test_probe_command_reports_serving_and_fails_without_sidecar() -> None:
    with sidecar_process() as proc:
        ok = subprocess.run(
            [sys.executable, "-m", "memsidecar.cli.main", "probe", "--socket", str(proc.socket)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stderr
        assert "SERVING" in ok.stdout
    gone = subprocess.run(
        [sys.executable, "-m", "memsidecar.cli.main", "probe", "--socket", str(proc.socket)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gone.returncode != 0
    assert "UNAVAILABLE" in gone.stderr


def test_demo_agent_uses_every_block() -> None:
    result = subprocess.run(
        [sys.executable, "examples/demo.py"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "MEMSIDECAR_SOCKET"},
    )
    assert result.returncode == 0, result.stderr
    for block in ["kv", "episodic", "semantic", "artifact", "lease", "session"]:
        assert f"[{block:8}]" in result.stdout
    assert "done: every block answered." in result.stdout

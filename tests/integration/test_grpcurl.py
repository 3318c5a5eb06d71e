"""grpcurl works against the sidecar without proto files (server reflection)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import sidecar_process, token_auth


def grpcurl() -> str:
    cache = Path(os.environ.get("MEMSIDECAR_CACHE", Path.home() / ".cache/memsidecar"))
    found = shutil.which("grpcurl") or (
        str(cache / "bin/grpcurl") if (cache / "bin/grpcurl").exists() else None
    )
    if found is None:
        pytest.fail("grpcurl is not installed: run scripts/tools.sh (CI does)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([grpcurl(), *args], capture_output=True, text=True, timeout=60)


def test_list_describe_and_call_without_protos(tmp_path: Path) -> None:
    env, _ = token_auth(tmp_path)
    with sidecar_process(["--tcp", "127.0.0.1:0"], env=env) as proc:
        address = f"unix://{proc.socket}"
        listed = run("-plaintext", address, "list")
        assert listed.returncode == 0, listed.stderr
        assert "memsidecar.kv.v1.KV" in listed.stdout.split()
        described = run("-plaintext", address, "describe", "memsidecar.kv.v1.KV")
        assert "rpc Increment" in described.stdout
        put = run(
            "-plaintext",
            "-d",
            '{"namespace": "cli", "key": "k", "value": {"stringValue": "hi"}}',
            address,
            "memsidecar.kv.v1.KV/Put",
        )
        assert put.returncode == 0, put.stderr
        # grpcurl prints proto field names; it accepts both spellings as input.
        assert json.loads(put.stdout)["entry"]["value"] == {"string_value": "hi"}
        bad = run(
            "-plaintext",
            "-d",
            '{"namespace": "cli", "key": ""}',
            address,
            "memsidecar.kv.v1.KV/Get",
        )
        assert bad.returncode != 0
        assert "InvalidArgument" in bad.stderr and "key is required" in bad.stderr
        health = run(
            "-plaintext",
            "-d",
            '{"service": "memsidecar.kv.v1.KV"}',
            proc.addresses[1],
            "grpc.health.v1.Health/Check",
        )
        assert json.loads(health.stdout) == {"status": "SERVING"}

"""Policy from a YAML file, enforced by the real sidecar process and hot-reloaded."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from memsidecar import MemSidecar, RetryPolicy
from memsidecar.client.errors import PermissionDeniedError, ResourceExhaustedError
from tests.support import short_tmpdir, sidecar_process

DENY_SECRETS = """\
defaultEffect: allow
rules:
  - name: no-secrets
    effect: deny
    match: {namespaces: ["secret*"]}
    message: secrets live elsewhere
  - name: small-pages
    effect: cap
    match: {ops: ["kv.scan"]}
    caps: {limit: 10}
"""

DENY_ALL_KV = """\
defaultEffect: allow
rules:
  - name: kv-off
    effect: deny
    match: {blocks: ["kv"]}
"""


def wait_until(predicate: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        time.sleep(0.1)


def kv_denied(m: MemSidecar) -> bool:
    try:
        m.kv.put("notes", "k", 1)
        return False
    except PermissionDeniedError:
        return True


def test_policy_file_enforced_and_hot_reloaded(tmp_path: Path) -> None:
    policy = Path(short_tmpdir()) / "policy.yaml"
    policy.write_text(DENY_SECRETS)
    env = {"MEMSIDECAR_POLICY__FILE": str(policy)}
    with (
        sidecar_process(env=env) as proc,
        MemSidecar(socket=proc.socket, retry=RetryPolicy(max_retries=0)) as m,
    ):
        m.kv.put("notes", "k", 1)
        with pytest.raises(PermissionDeniedError, match=r"no-secrets.*secrets live elsewhere"):
            m.kv.put("secret-stuff", "k", 1)
        with pytest.raises(ResourceExhaustedError, match="small-pages"):
            list(m.kv.scan("notes", limit=50))
        assert len(list(m.kv.scan("notes", limit=5))) == 1

        # Replace the file the way editors and ConfigMaps do: write elsewhere, rename over.
        staged = policy.with_suffix(".new")
        staged.write_text(DENY_ALL_KV)
        staged.replace(policy)
        wait_until(lambda: kv_denied(m))

        # An invalid file is rejected; the last good rules stay.
        policy.write_text("rules: [{name: broken, effect: maybe}]\n")
        time.sleep(1.0)
        assert kv_denied(m)
        assert "policy" in proc.log.read_text().lower()

        # SIGHUP reloads too.
        policy.write_text(DENY_SECRETS)
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: not kv_denied(m))


def test_invalid_policy_file_stops_start(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: [{name: x, effect: rate_limit, match: {}}]\n")
    with pytest.raises(RuntimeError, match="rate"):
        with sidecar_process(env={"MEMSIDECAR_POLICY__FILE": str(policy)}, timeout=20):
            pass

"""Loading a policy file, and hot reload on change and on SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from memsidecar.sidecar.policy import (
    PolicyError,
    PolicyFileWatcher,
    PolicyHolder,
    ReloadResult,
    load_policy_file,
)
from tests.sidecar.policy.support import req

ALLOW = "defaultEffect: allow\nrules: []\n"
DENY = "defaultEffect: deny\nrules: []\n"
DENY_PUT = "rules: [{name: no-puts, effect: deny, match: {ops: [put]}}]\n"
WAIT_SECONDS = 10.0


async def eventually(condition: Callable[[], bool], what: str) -> float:
    """Wait (bounded) until condition() holds; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > WAIT_SECONDS:
            pytest.fail(f"timed out after {WAIT_SECONDS}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def watching(
    path: Path, holder: PolicyHolder, **options: object
) -> AsyncIterator[PolicyFileWatcher]:
    options.setdefault("poll_seconds", 600.0)
    watcher = PolicyFileWatcher(path, holder, **options)  # type: ignore[arg-type]
    await watcher.start()
    try:
        yield watcher
    finally:
        await watcher.stop()


def effect(holder: PolicyHolder) -> str:
    return holder.current().decide(req()).effect


def test_load_policy_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    with pytest.raises(PolicyError, match="cannot read the file"):
        load_policy_file(path)
    path.write_text("rules: [\n")
    with pytest.raises(PolicyError, match=r"invalid policy \(.*p.yaml\):\n  not valid YAML"):
        load_policy_file(path)
    path.write_text("")
    with pytest.raises(PolicyError, match="the policy is empty"):
        load_policy_file(path)
    path.write_text("rules: [{name: a, effect: cap, caps: {topK: -1}}]")
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    assert info.value.origin == str(path)
    assert info.value.problems == ["rules[0] (name 'a'): caps.topK: Input should be greater than 0"]
    path.write_text(DENY_PUT)
    assert load_policy_file(path).rules[0].name == "no-puts"


async def test_start_rejects_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("defaultEffect: nope\n")
    holder = PolicyHolder()
    watcher = PolicyFileWatcher(path, holder, sighup=False)
    with pytest.raises(PolicyError, match="defaultEffect"):
        await watcher.start()
    assert not watcher.running
    assert holder.last_error is not None and "defaultEffect" in holder.last_error
    with pytest.raises(PolicyError, match="does not exist"):
        await PolicyFileWatcher(tmp_path / "none" / "p.yaml", holder, sighup=False).start()


async def test_edit_in_place_reloads(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOW)
    holder = PolicyHolder()
    async with watching(path, holder, sighup=False):
        assert holder.source == str(path) and effect(holder) == "allow"
        path.write_text(DENY)
        await eventually(lambda: effect(holder) == "deny", "the edit to be loaded")
        assert holder.status().reloads == 1  # the initial ALLOW equals the built-in default
        path.write_text(DENY_PUT)
        await eventually(lambda: len(holder.current().spec.rules) == 1, "the second edit")
        assert effect(holder) == "deny"
        assert holder.current().decide(req(op="kv.get")).allowed


async def test_rename_replace_reloads(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOW)
    holder = PolicyHolder()
    async with watching(path, holder, sighup=False):
        tmp = tmp_path / ".policy.yaml.swp"
        tmp.write_text(DENY)
        os.replace(tmp, path)
        await eventually(lambda: effect(holder) == "deny", "the renamed file to be loaded")


def configmap_update(directory: Path, generation: int, content: str) -> None:
    """What the kubelet does: a new timestamped dir, then an atomic ..data symlink swap."""
    target = directory / f"..2025_01_01_00_00_0{generation}"
    target.mkdir()
    (target / "policy.yaml").write_text(content)
    tmp_link = directory / "..data_tmp"
    tmp_link.symlink_to(target.name)
    os.replace(tmp_link, directory / "..data")


async def test_configmap_symlink_swap_reloads(tmp_path: Path) -> None:
    configmap_update(tmp_path, 1, ALLOW)
    path = tmp_path / "policy.yaml"
    path.symlink_to("..data/policy.yaml")
    holder = PolicyHolder()
    async with watching(path, holder, sighup=False):
        assert effect(holder) == "allow"
        configmap_update(tmp_path, 2, DENY)
        await eventually(lambda: effect(holder) == "deny", "the ConfigMap update")
        configmap_update(tmp_path, 3, "rules: [")
        await eventually(lambda: holder.last_error is not None, "the bad update to be seen")
        assert effect(holder) == "deny"


async def test_invalid_file_keeps_old_rules_and_records_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(DENY_PUT)
    holder = PolicyHolder()
    caplog.set_level(logging.WARNING, logger="memsidecar.policy")
    async with watching(path, holder, sighup=False):
        version = holder.version
        path.write_text("rules: [{name: x, effect: rate_limit}]\n")
        await eventually(lambda: holder.last_error is not None, "the rejection")
        assert holder.version == version
        assert effect(holder) == "deny"
        assert holder.last_error is not None
        assert "rules[0] (name 'x'): rate is required" in holder.last_error
        assert any(
            "rate is required" in r.getMessage() and "keeping the policy in force" in r.getMessage()
            for r in caplog.records
        )
        path.write_text("rules: [\n")
        await eventually(lambda: "not valid YAML" in (holder.last_error or ""), "YAML error")
        assert holder.version == version
        path.unlink()
        await eventually(lambda: "cannot read" in (holder.last_error or ""), "the deletion")
        assert holder.version == version
        path.write_text(ALLOW)
        await eventually(lambda: effect(holder) == "allow", "the fixed file")
        assert holder.last_error is None


async def test_reverting_to_the_rules_in_force_clears_the_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(DENY)
    holder = PolicyHolder()
    async with watching(path, holder, sighup=False) as watcher:
        path.write_text("defaultEffect: [")
        assert watcher.reload() is ReloadResult.REJECTED
        path.write_text(DENY + "# reverted\n")
        assert watcher.reload() is ReloadResult.UNCHANGED
        assert holder.last_error is None and holder.status().reloads == 1


async def test_manual_reload_results(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOW)
    holder = PolicyHolder()
    async with watching(path, holder, sighup=False) as watcher:
        assert watcher.reload() is ReloadResult.UNCHANGED
        assert watcher.reload(force=True) is ReloadResult.UNCHANGED
        path.write_text(DENY)
        assert watcher.reload() is ReloadResult.RELOADED
        assert effect(holder) == "deny"


async def outside_link(tmp_path: Path) -> tuple[Path, Path]:
    """A policy path that is a symlink to a file in another directory: the
    directory watch cannot see edits to it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "real.yaml").write_text(ALLOW)
    watched = tmp_path / "watched"
    watched.mkdir()
    path = watched / "policy.yaml"
    path.symlink_to(elsewhere / "real.yaml")
    return path, elsewhere / "real.yaml"


async def test_sighup_reloads(tmp_path: Path) -> None:
    path, real = await outside_link(tmp_path)
    holder = PolicyHolder()
    async with watching(path, holder) as watcher:
        assert watcher.sighup_installed, "refusing to send SIGHUP without the handler"
        real.write_text(DENY)
        await asyncio.sleep(0.5)
        assert effect(holder) == "allow"  # not seen by the directory watch
        os.kill(os.getpid(), signal.SIGHUP)
        waited = await eventually(lambda: effect(holder) == "deny", "the SIGHUP reload")
        assert waited < 1.0
        real.write_text("rules: 7\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: holder.last_error is not None, "the SIGHUP rejection")
        assert effect(holder) == "deny"
    assert not watcher.sighup_installed


async def test_stat_poll_catches_what_the_directory_watch_cannot(tmp_path: Path) -> None:
    path, real = await outside_link(tmp_path)
    holder = PolicyHolder()
    async with watching(path, holder, sighup=False, poll_seconds=0.2):
        real.write_text(DENY)
        await eventually(lambda: effect(holder) == "deny", "the stat poll to see the change")


async def test_stop_is_prompt_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOW)
    watcher = PolicyFileWatcher(path, PolicyHolder(), sighup=False, poll_seconds=600)
    await watcher.start()
    assert watcher.running
    start = time.monotonic()
    await watcher.stop()
    assert time.monotonic() - start < 2.0
    assert not watcher.running
    await watcher.stop()


def test_watcher_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="step_ms"):
        PolicyFileWatcher(tmp_path / "p.yaml", PolicyHolder(), debounce_ms=10, step_ms=50)
    with pytest.raises(ValueError, match="poll_seconds"):
        PolicyFileWatcher(tmp_path / "p.yaml", PolicyHolder(), poll_seconds=0)

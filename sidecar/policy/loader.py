"""Policy from a YAML file, hot-reloaded on change and on SIGHUP.

The watcher watches the file's directory, not the file, so it sees every way a
file gets replaced: an edit in place, an editor's write-to-temp-then-rename, and a
Kubernetes ConfigMap update (the kubelet swaps the directory's ``..data`` symlink;
the file itself is a symlink through it). Every change in the directory, after a
bounded debounce, re-reads the file; if its bytes differ from the last read it is
parsed and, if valid, installed. Every `poll_seconds` the file's stat (following
symlinks) is compared as well, which catches changes the directory watch cannot
see (a symlink to a file in another directory). SIGHUP re-reads unconditionally.

An invalid file is rejected with a logged reason (logger "memsidecar.policy") and
recorded as the holder's last error; the rules in force stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
from enum import Enum
from pathlib import Path

import yaml
from watchfiles import awatch

from memsidecar.sidecar.policy.holder import PolicyHolder
from memsidecar.sidecar.policy.model import PolicyError, PolicySpec, parse_policy

log = logging.getLogger("memsidecar.policy")

MAX_POLICY_FILE_BYTES = 4 * 1024 * 1024
# Seconds to wait before re-watching after the watch itself failed.
WATCH_RETRY_SECONDS = 1.0
# Seconds stop() waits for the watch thread before cancelling it.
STOP_TIMEOUT_SECONDS = 5.0


def load_policy_text(text: str | bytes, origin: str) -> PolicySpec:
    """Parse YAML text into a PolicySpec, or raise PolicyError naming each problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(origin, [f"not valid YAML: {exc}"]) from exc
    return parse_policy(data, origin)


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_FILE_BYTES:
            raise PolicyError(
                str(path), [f"the file is {size} bytes; a policy may be at most 4 MiB"]
            )
        return path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc


def load_policy_file(path: Path | str) -> PolicySpec:
    """Read and validate a policy YAML file, or raise PolicyError naming each problem."""
    path = Path(path)
    return load_policy_text(_read(path), str(path))


class ReloadResult(Enum):
    RELOADED = "reloaded"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"


Fingerprint = tuple[str, int, int, int, int, int] | None


def _fingerprint(path: Path) -> Fingerprint:
    try:
        st = path.stat()
        return (
            os.path.realpath(path),
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        )
    except OSError:
        return None


class PolicyFileWatcher:
    def __init__(
        self,
        path: Path | str,
        holder: PolicyHolder,
        *,
        debounce_ms: int = 300,
        step_ms: int = 50,
        poll_seconds: float = 5.0,
        sighup: bool = True,
        force_polling: bool | None = None,
    ) -> None:
        if not 0 < step_ms <= debounce_ms:
            raise ValueError("need 0 < step_ms <= debounce_ms")
        if poll_seconds <= 0:
            raise ValueError("poll_seconds must be positive")
        self.path = Path(path)
        self.holder = holder
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self.poll_seconds = poll_seconds
        self.sighup = sighup
        self.force_polling = force_polling
        self._content_hash: str | None = None
        self._seen: Fingerprint = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sighup_installed = False

    @property
    def sighup_installed(self) -> bool:
        return self._sighup_installed

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Load the file (raising PolicyError if it is invalid: a sidecar should not start
        on a broken policy), then watch it and install the SIGHUP handler."""
        if self._task is not None:
            raise RuntimeError("the policy watcher is already started")
        if not self.path.parent.is_dir():
            raise PolicyError(str(self.path), [f"directory {self.path.parent} does not exist"])
        self._seen = _fingerprint(self.path)
        try:
            data = _read(self.path)
            self._content_hash = hashlib.sha256(data).hexdigest()
            spec = load_policy_text(data, str(self.path))
        except PolicyError as exc:
            self.holder.record_error(str(exc))
            raise
        self.holder.replace(spec, source=str(self.path))
        log.info(
            "policy loaded from %s: version %s, %d rules, defaultEffect %s",
            self.path,
            spec.version(),
            len(spec.rules),
            spec.default_effect,
        )
        self._stop.clear()
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._watch(), name=f"policy-watch:{self.path}")
        # Let the task set up the directory watch, then catch a change made meanwhile.
        await asyncio.sleep(0)
        self.reload()
        if self.sighup:
            try:
                self._loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
                self._sighup_installed = True
            except (ValueError, RuntimeError, NotImplementedError) as exc:
                log.warning("policy reload on SIGHUP is unavailable here: %s", exc)

    async def stop(self) -> None:
        if self._sighup_installed and self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGHUP)
            self._sighup_installed = False
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading policy from %s", self.path)
        self.reload(force=True)

    def reload(self, force: bool = False) -> ReloadResult:
        """Re-read the file now. Without `force`, bytes equal to the last read are
        not parsed again."""
        current = self.holder.version
        self._seen = _fingerprint(self.path)
        try:
            data = _read(self.path)
        except PolicyError as exc:
            return self._reject(exc)
        digest = hashlib.sha256(data).hexdigest()
        if not force and digest == self._content_hash:
            return ReloadResult.UNCHANGED
        self._content_hash = digest
        try:
            spec = load_policy_text(data, str(self.path))
        except PolicyError as exc:
            return self._reject(exc)
        if not self.holder.replace(spec, source=str(self.path)):
            log.debug("policy file %s holds the rules in force (version %s)", self.path, current)
            return ReloadResult.UNCHANGED
        log.info(
            "policy reloaded from %s: version %s -> %s, %d rules, defaultEffect %s",
            self.path,
            current,
            self.holder.version,
            len(spec.rules),
            spec.default_effect,
        )
        return ReloadResult.RELOADED

    def _reject(self, exc: PolicyError) -> ReloadResult:
        self.holder.record_error(str(exc))
        log.warning("%s\nkeeping the policy in force (version %s)", exc, self.holder.version)
        return ReloadResult.REJECTED

    async def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                async for changes in awatch(
                    self.path.parent,
                    watch_filter=None,
                    debounce=self.debounce_ms,
                    step=self.step_ms,
                    stop_event=self._stop,
                    rust_timeout=int(self.poll_seconds * 1000),
                    yield_on_timeout=True,
                    recursive=False,
                    force_polling=self.force_polling,
                ):
                    if changes or _fingerprint(self.path) != self._seen:
                        self.reload()
            except Exception as exc:
                log.warning(
                    "watching %s for policy changes failed (%s); retrying in %.0fs",
                    self.path.parent,
                    exc,
                    WATCH_RETRY_SECONDS,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), WATCH_RETRY_SECONDS)

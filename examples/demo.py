"""A short demo agent: uses every memsidecar block through the Python SDK.

Run with `make demo`. It connects to the sidecar at MEMSIDECAR_SOCKET; when none is
running there, it starts `memsidecar serve` on the embedded default for the length
of the demo and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from memsidecar import MemSidecar
from memsidecar.client import ConflictError


def say(block: str, text: str) -> None:
    print(f"  [{block:8}] {text}")


@contextlib.contextmanager
def sidecar() -> Iterator[Path]:
    """The socket of a running sidecar: the one in MEMSIDECAR_SOCKET, or a fresh one."""
    configured = os.environ.get("MEMSIDECAR_SOCKET")
    if configured and Path(configured).exists():
        print(f"using the sidecar at {configured}")
        yield Path(configured)
        return
    tmp = Path(tempfile.mkdtemp(prefix="memsidecar-demo-"))
    socket, ready, log = tmp / "memsidecar.sock", tmp / "ready", tmp / "sidecar.log"
    command = [sys.executable, "-m", "memsidecar.cli.main", "serve", "--socket", str(socket)]
    # The sidecar's own output (its start-up lines and the access log, one JSON line per
    # call) goes to a file, so the demo's lines stay readable.
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [*command, "--ready-file", str(ready)],
            env={
                **os.environ,
                "MEMSIDECAR_BLOCKS__ARTIFACT__OPTIONS": f'{{"root": "{tmp}/artifacts"}}',
            },
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the sidecar did not start:\n{log.read_text()}")
            time.sleep(0.05)
        print(f"sidecar serving on unix:{socket}; its log, one JSON line per call: {log}")
        yield socket
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def run(m: MemSidecar) -> None:
    # kv: typed values, TTL, compare-and-set, counters, prefix scan.
    m.kv.put("demo", "user/lang", "en", ttl=timedelta(minutes=5))
    plan = m.kv.put("demo", "plan", {"step": 1}, if_version=0)
    m.kv.put("demo", "plan", {"step": 2}, if_version=plan.version)
    try:
        m.kv.put("demo", "plan", {"step": 99}, if_version=plan.version)
    except ConflictError:
        say("kv", "a stale compare-and-set was rejected, as it should be")
    spent = m.kv.increment("demo", "budget/tokens", 1200)
    keys = [e.key for e in m.kv.scan("demo", "")]
    say("kv", f"keys {keys}; plan={m.kv.get('demo', 'plan').value}; tokens spent={spent}")

    # episodic: a conversation log with sessions and a window.
    for role, text in [
        ("user", "find me a flight"),
        ("assistant", "to where?"),
        ("user", "Lisbon"),
    ]:
        m.episodic.append("demo-chat", "message", {"text": text}, role=role, session_id="s1")
    window = m.episodic.window("demo-chat", "s1", 2)
    say("episodic", f"last 2 of session s1: {[e.payload['text'] for e in window]}")
    say("episodic", f"cursors strictly increase: {[e.cursor for e in window]}")

    # semantic: embed on write, search with a metadata filter.
    facts = [
        ("The user prefers aisle seats", {"topic": "travel"}),
        ("The user is allergic to peanuts", {"topic": "health"}),
        ("The user flies to Lisbon every spring", {"topic": "travel"}),
    ]
    for content, metadata in facts:
        m.semantic.upsert("demo-facts", content, metadata=metadata)
    hits = m.semantic.search(
        "demo-facts", "which seats does the user like", top_k=2, where={"topic": "travel"}
    )
    say("semantic", f"top travel fact: {hits[0].record.content!r} (score {hits[0].score:.2f})")

    # artifact: stream a blob in, read a range back, check size and sha256.
    info = m.artifact.put(
        "demo-files", b"x" * 300_000 + b"the end", id="report.txt", content_type="text/plain"
    )
    tail = m.artifact.get("demo-files", "report.txt", offset=info.size - 7)
    say("artifact", f"stored {info.size} bytes sha256={info.sha256[:12]}…; last bytes {tail!r}")

    # lease + session: a lock with a fencing token, attached to a heartbeating session.
    session = m.session.open(heartbeat_interval=0.5, heartbeat_timeout=2)
    lease = m.lease.acquire("demo-locks", "report", ttl=30, session_id=session.session_id)
    say("lease", f"held by {lease.holder_id} with fencing token {lease.fencing_token}")
    result = session.close(checkpoint=True)
    freed = m.lease.inspect("demo-locks", "report") is None
    say(
        "session",
        f"closed {session.session_id[:8]}…: released {result.released_leases} lease(s), "
        f"lock free again: {freed}",
    )


def main() -> None:
    with sidecar() as socket, MemSidecar(socket=socket) as m:
        print(f"memsidecar demo agent, talking to unix:{socket}")
        run(m)
        print("done: every block answered.")


if __name__ == "__main__":
    main()

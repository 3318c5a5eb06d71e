"""Heartbeat deadlines: one event-loop timer per open session, set for its deadline.

A heartbeat moves the timer; when a timer fires the session is marked as
ending at once (so a heartbeat that arrives later is refused) and the
orphan handler runs in a task. Timers use the event loop's monotonic clock,
so detection happens at the deadline itself rather than on a polling tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("memsidecar.session")

Key = tuple[str, str]


@dataclass
class _Watch:
    deadline: float
    handle: asyncio.TimerHandle
    ending: bool = False


class HeartbeatMonitor:
    def __init__(self, on_expired: Callable[[str, str, float], Coroutine[Any, Any, None]]) -> None:
        """`on_expired(tenant, session_id, lag)` runs when a deadline passes; `lag` is how
        many seconds after the deadline the timer fired."""
        self._on_expired = on_expired
        self._watches: dict[Key, _Watch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._watches)

    def arm(self, tenant: str, session_id: str, timeout: float) -> bool:
        """Set the session's deadline to `timeout` seconds from now; False (and nothing
        changed) when its previous deadline has already passed."""
        loop = asyncio.get_running_loop()
        key = (tenant, session_id)
        now = loop.time()
        watch = self._watches.get(key)
        if watch is not None:
            if watch.ending or now >= watch.deadline:
                return False
            watch.handle.cancel()
        deadline = now + timeout
        self._watches[key] = _Watch(deadline, loop.call_at(deadline, self._fire, key))
        return True

    def watching(self, tenant: str, session_id: str) -> bool:
        return (tenant, session_id) in self._watches

    def overdue(self, tenant: str, session_id: str) -> bool:
        """Whether the session missed its deadline (its orphaning may still be under way)."""
        watch = self._watches.get((tenant, session_id))
        if watch is None:
            return False
        return watch.ending or asyncio.get_running_loop().time() >= watch.deadline

    def forget(self, tenant: str, session_id: str) -> None:
        watch = self._watches.pop((tenant, session_id), None)
        if watch is not None:
            watch.handle.cancel()

    def _fire(self, key: Key) -> None:
        watch = self._watches.get(key)
        if watch is None or watch.ending:
            return
        watch.ending = True
        loop = asyncio.get_running_loop()
        lag = loop.time() - watch.deadline
        task = loop.create_task(self._on_expired(*key, lag), name=f"session-orphan-{key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("orphan handling failed", exc_info=task.exception())

    async def close(self) -> None:
        for watch in self._watches.values():
            watch.handle.cancel()
        self._watches.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

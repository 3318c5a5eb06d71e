"""Kubernetes Events about MemoryStore / MemoryPolicy state changes (`kubectl describe`).

Posted in the background (an event must never slow down or fail a reconcile), and
only for changes: the reconcilers call `record` when a condition flips, a ConfigMap
is written or a migration ran, never on a no-op pass.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from memsidecar.operator.conditions import shorten, timestamp
from memsidecar.operator.kube import Kube, KubeError, core_path

log = logging.getLogger("memsidecar.operator.events")

COMPONENT = "memsidecar-operator"
MAX_PENDING = 256


class EventRecorder:
    def __init__(self, kube: Kube, instance: str | None = None) -> None:
        self.kube = kube
        self.instance = instance or os.environ.get("POD_NAME") or socket.gethostname()
        self._pending: set[asyncio.Task[None]] = set()

    def record(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an event about `obj` in the background (dropped if too many are pending)."""
        if len(self._pending) >= MAX_PENDING:
            log.warning("dropping event %s for %s: too many pending", reason, _name(obj))
            return
        task = asyncio.get_running_loop().create_task(self._post(obj, type_, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        metadata = obj.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "default")
        now = datetime.datetime.now(datetime.UTC)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{metadata.get('name', 'memsidecar')}.",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": metadata.get("name"),
                "namespace": namespace,
                "uid": metadata.get("uid"),
            },
            "type": type_,
            "reason": reason[:128],
            "message": shorten(message, 1024),
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance[:128],
            "firstTimestamp": timestamp(now),
            "lastTimestamp": timestamp(now),
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "action": "Reconcile",
            "count": 1,
        }
        try:
            await self.kube.create(core_path("events", namespace), event)
        except KubeError as exc:
            log.warning("could not post event %s for %s: %s", reason, _name(obj), exc)
        log.info("%s %s %s: %s", type_, _name(obj), reason, message)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for the events still being posted."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)


def _name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return f"{obj.get('kind', '')} {metadata.get('namespace', '')}/{metadata.get('name', '')}"

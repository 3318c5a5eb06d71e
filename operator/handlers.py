"""The kopf handlers, and the state they share (`Operator`).

- MemoryStore: on create / update / resume → reconcile; a transient problem (backend
  unreachable, Secret missing, migration failed) raises kopf.TemporaryError with an
  exponential delay, so kopf retries until it clears. Every `recheck_seconds` a
  resync pass reconciles every store again (backends can go away, a ConfigMap can be
  deleted by hand), writing only what changed.
- MemoryPolicy: on create / update / resume → validate and count; pod events of
  injected pods (the sidecars report the policy versions they loaded on their Pod)
  wake a recount, and a pass every `policy_status_seconds` catches the rest.
- Admission: `mutate-pods`, `validate-memorystores`, `validate-memorypolicies`
  (the paths webhooks/configuration.py puts in the webhook configurations).

No handler needs a finalizer (the periodic passes are plain tasks, not kopf timers,
which would put kopf's finalizer on every object): deleting a store or policy never
waits for the operator, and the ConfigMap goes with its store by owner reference.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonpatch  # type: ignore[import-untyped]
import kopf

from memsidecar.operator import metrics
from memsidecar.operator.admission import Admission, Verdict
from memsidecar.operator.events import EventRecorder
from memsidecar.operator.kube import Kube, KubeError, group_path
from memsidecar.operator.policies import PodInfo, PolicyOutcome, PolicyReconciler, pod_info
from memsidecar.operator.settings import OperatorSettings
from memsidecar.operator.stores import StoreOutcome, StoreReconciler
from memsidecar.webhooks.configuration import (
    MUTATE_PODS_PATH,
    VALIDATE_POLICIES_PATH,
    VALIDATE_STORES_PATH,
)
from memsidecar.webhooks.contract import (
    ANNOTATION_STATUS,
    GROUP,
    POLICY_PLURAL,
    STATUS_INJECTED,
    STORE_PLURAL,
    VERSION,
)

log = logging.getLogger("memsidecar.operator")

MUTATE_PODS = MUTATE_PODS_PATH.lstrip("/")
VALIDATE_STORES = VALIDATE_STORES_PATH.lstrip("/")
VALIDATE_POLICIES = VALIDATE_POLICIES_PATH.lstrip("/")
PROGRESS_PREFIX = "operator.memsidecar.io"
RESYNC_CONCURRENCY = 8


def namespace_watched(namespace: str, patterns: Sequence[str]) -> bool:
    """kopf's namespace patterns: globs, '!glob' excludes; none given = every namespace."""
    included = [p for p in patterns if not p.startswith("!")]
    excluded = [p[1:] for p in patterns if p.startswith("!")]
    if any(fnmatch.fnmatchcase(namespace, p) for p in excluded):
        return False
    return not included or any(fnmatch.fnmatchcase(namespace, p) for p in included)


class Operator:
    """The reconcilers, the injected-pod cache, and the periodic passes."""

    def __init__(self, settings: OperatorSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self.events = EventRecorder(kube)
        self.stores = StoreReconciler(
            kube,
            backend_timeout=settings.backend_timeout_seconds,
            migration_timeout=settings.migration_timeout_seconds,
            events=self.events.record,
        )
        self.policies = PolicyReconciler(kube, events=self.events.record)
        self.admission = Admission(kube, settings.injection())
        # namespace → pod name → what the policy counts need.
        self.pods: dict[str, dict[str, PodInfo]] = {}
        self._recount = asyncio.Event()

    # --- reconciles with metrics -----------------------------------------------------------

    async def reconcile_store(self, namespace: str, name: str) -> StoreOutcome | None:
        with metrics.timed("MemoryStore"):
            try:
                outcome = await self.stores.reconcile(namespace, name)
            except Exception:
                metrics.RECONCILES.labels("MemoryStore", "error").inc()
                raise
        if outcome is None:
            metrics.RECONCILES.labels("MemoryStore", "gone").inc()
            return None
        metrics.RECONCILES.labels("MemoryStore", "ready" if outcome.ready else "not_ready").inc()
        if outcome.status_written:
            metrics.STATUS_WRITES.labels("MemoryStore").inc()
        return outcome

    async def reconcile_policy(self, namespace: str, name: str) -> PolicyOutcome | None:
        with metrics.timed("MemoryPolicy"):
            try:
                outcome = await self.policies.reconcile(
                    namespace, name, self.pods.get(namespace, {}).values()
                )
            except Exception:
                metrics.RECONCILES.labels("MemoryPolicy", "error").inc()
                raise
        if outcome is None:
            metrics.RECONCILES.labels("MemoryPolicy", "gone").inc()
            return None
        metrics.RECONCILES.labels("MemoryPolicy", "ready" if outcome.ready else "not_ready").inc()
        if outcome.status_written:
            metrics.STATUS_WRITES.labels("MemoryPolicy").inc()
        return outcome

    # --- injected pods ---------------------------------------------------------------------

    def observe_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        namespace = str(metadata.get("namespace", ""))
        name = str(metadata.get("name", ""))
        info = None if event_type == "DELETED" else pod_info(body)
        pods = self.pods.setdefault(namespace, {})
        if pods.get(name) == info:
            return
        if info is None:
            pods.pop(name, None)
        else:
            pods[name] = info
        self._recount.set()

    # --- periodic passes --------------------------------------------------------------------

    async def _list(self, plural: str) -> list[dict[str, Any]]:
        answer = await self.kube.request("GET", group_path(GROUP, VERSION, plural))
        items = answer.get("items") or []
        return [
            item
            for item in items
            if namespace_watched(str(item["metadata"]["namespace"]), self.settings.watch_namespaces)
        ]

    async def resync_stores(self) -> None:
        """Every recheck_seconds, reconcile every store (bounded concurrency)."""
        limit = asyncio.Semaphore(RESYNC_CONCURRENCY)

        async def one(item: Mapping[str, Any]) -> None:
            metadata = item["metadata"]
            async with limit:
                try:
                    await self.reconcile_store(metadata["namespace"], metadata["name"])
                except Exception as exc:
                    log.warning(
                        "resync of MemoryStore %s/%s failed: %s",
                        metadata["namespace"],
                        metadata["name"],
                        exc,
                    )

        while True:
            await asyncio.sleep(self.settings.recheck_seconds)
            try:
                items = await self._list(STORE_PLURAL)
            except KubeError as exc:
                log.warning("cannot list MemoryStores: %s", exc)
                continue
            await asyncio.gather(*(one(item) for item in items))

    async def resync_policies(self) -> None:
        """Recount policies when an injected pod changed, or every policy_status_seconds."""
        while True:
            try:
                await asyncio.wait_for(self._recount.wait(), self.settings.policy_status_seconds)
            except TimeoutError:
                pass
            self._recount.clear()
            try:
                items = await self._list(POLICY_PLURAL)
            except KubeError as exc:
                log.warning("cannot list MemoryPolicies: %s", exc)
                continue
            for item in items:
                metadata = item["metadata"]
                pods = self.pods.get(metadata["namespace"], {}).values()
                if not self.policies.stale(item, pods):
                    continue
                try:
                    await self.reconcile_policy(metadata["namespace"], metadata["name"])
                except Exception as exc:
                    log.warning(
                        "recount of MemoryPolicy %s/%s failed: %s",
                        metadata["namespace"],
                        metadata["name"],
                        exc,
                    )


def _deny(verdict: Verdict, webhook: str, what: str) -> None:
    metrics.ADMISSIONS.labels(webhook, verdict.result).inc()
    if not verdict.allowed:
        log.info("%s denied %s: %s", webhook, what, verdict.message)
        raise kopf.AdmissionError(verdict.message, code=verdict.code)


def build_registry(
    op: Operator, *, certfile: Path | None = None, pkeyfile: Path | None = None
) -> kopf.OperatorRegistry:
    """A kopf registry with every handler bound to `op`."""
    registry = kopf.OperatorRegistry()
    cfg = op.settings

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The kubernetes client's own loading: in-cluster, else $KUBECONFIG.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(id="configure", registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.peering.standalone = True
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=PROGRESS_PREFIX
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=PROGRESS_PREFIX, key="last-handled-configuration"
        )
        # The operator posts its own events (operator/events.py), only on state changes.
        settings.posting.enabled = False
        settings.networking.request_timeout = 60
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        if cfg.webhook_enabled:
            settings.admission.server = kopf.WebhookServer(
                addr=cfg.webhook_listen,
                port=cfg.webhook_port,
                certfile=str(certfile) if certfile else None,
                pkeyfile=str(pkeyfile) if pkeyfile else None,
            )
            # The chart (or webhookconfig.py) owns the configurations, not kopf.
            settings.admission.managed = None

    # --- MemoryStore -----------------------------------------------------------------------

    @kopf.on.resume(GROUP, VERSION, STORE_PLURAL, id="memorystore", registry=registry)
    @kopf.on.create(GROUP, VERSION, STORE_PLURAL, id="memorystore", registry=registry)
    @kopf.on.update(GROUP, VERSION, STORE_PLURAL, id="memorystore", registry=registry)
    async def memorystore(namespace: str | None, name: str, retry: int, **_: Any) -> None:
        try:
            outcome = await op.reconcile_store(namespace or "", name)
        except KubeError as exc:
            raise kopf.TemporaryError(
                f"Kubernetes API: {exc}", delay=cfg.retry_delay(retry)
            ) from exc
        if outcome is not None and outcome.retry:
            raise kopf.TemporaryError(
                f"{outcome.reason}: {outcome.message}", delay=cfg.retry_delay(retry)
            )

    @kopf.on.delete(
        GROUP, VERSION, STORE_PLURAL, id="memorystore-deleted", optional=True, registry=registry
    )
    def memorystore_deleted(namespace: str | None, name: str, **_: Any) -> None:
        op.stores.forget(namespace or "", name)

    # --- MemoryPolicy ----------------------------------------------------------------------

    @kopf.on.resume(GROUP, VERSION, POLICY_PLURAL, id="memorypolicy", registry=registry)
    @kopf.on.create(GROUP, VERSION, POLICY_PLURAL, id="memorypolicy", registry=registry)
    @kopf.on.update(GROUP, VERSION, POLICY_PLURAL, id="memorypolicy", registry=registry)
    async def memorypolicy(namespace: str | None, name: str, retry: int, **_: Any) -> None:
        try:
            await op.reconcile_policy(namespace or "", name)
        except KubeError as exc:
            raise kopf.TemporaryError(
                f"Kubernetes API: {exc}", delay=cfg.retry_delay(retry)
            ) from exc

    @kopf.on.delete(
        GROUP, VERSION, POLICY_PLURAL, id="memorypolicy-deleted", optional=True, registry=registry
    )
    def memorypolicy_deleted(namespace: str | None, name: str, **_: Any) -> None:
        op.policies.forget(namespace or "", name)

    @kopf.on.event(
        "",
        "v1",
        "pods",
        id="injected-pod",
        annotations={ANNOTATION_STATUS: STATUS_INJECTED},
        registry=registry,
    )
    async def injected_pod(type: str, body: kopf.Body, **_: Any) -> None:
        op.observe_pod(type, body)

    # --- admission -------------------------------------------------------------------------

    if cfg.webhook_enabled:

        @kopf.on.mutate("", "v1", "pods", id=MUTATE_PODS, registry=registry)
        async def mutate_pods(
            body: kopf.Body,
            patch: kopf.Patch,
            warnings: list[str],
            subresource: str | None,
            dryrun: bool,
            operation: str | None = None,
            **_: Any,
        ) -> None:
            try:
                verdict = await op.admission.review_pod(
                    dict(body),
                    namespace=str(body.get("metadata", {}).get("namespace") or ""),
                    operation=operation or "",
                    subresource=subresource,
                    dry_run=dryrun,
                )
            except Exception:
                metrics.ADMISSIONS.labels(MUTATE_PODS, "error").inc()
                raise
            _deny(verdict, MUTATE_PODS, f"pod {body.metadata.namespace}/{body.metadata.name}")
            warnings.extend(verdict.warnings)
            if verdict.patch:
                ops = verdict.patch
                patch.fns.append(lambda raw: jsonpatch.apply_patch(raw, ops, in_place=True))

        def validator(plural: str, webhook: str) -> None:
            @kopf.on.validate(GROUP, VERSION, plural, id=webhook, registry=registry)
            async def validate(
                body: kopf.Body,
                namespace: str | None,
                old: kopf.Body | None = None,
                operation: str | None = None,
                **_: Any,
            ) -> None:
                verdict = op.admission.review_object(
                    plural,
                    namespace=namespace or "",
                    operation=operation or "",
                    obj=dict(body) if body is not None else None,
                    old=dict(old) if old is not None else None,
                )
                _deny(verdict, webhook, f"{plural} {namespace}/{body.metadata.name}")

        validator(STORE_PLURAL, VALIDATE_STORES)
        validator(POLICY_PLURAL, VALIDATE_POLICIES)

    return registry

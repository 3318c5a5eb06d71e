"""The admission webhooks the operator serves, over webhooks.admission.review().

kopf's webhook server calls the handlers in operator/handlers.py; they hand the
request to `Admission`, which looks up the pod's MemoryStore in the API (fresh: a
pod must never be injected from, or denied because of, a stale cache) and lets the
pure `review()` decide. The verdict is a JSON patch, warnings, or a denial message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memsidecar.operator.kube import Kube, KubeError
from memsidecar.operator.stores import store_path
from memsidecar.webhooks.admission import review
from memsidecar.webhooks.contract import GROUP, VERSION
from memsidecar.webhooks.injection import (
    InjectionError,
    InjectionSettings,
    injection_requested,
    store_name,
)

JSON = dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    patch: list[JSON] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    message: str = ""
    code: int = 200

    @property
    def result(self) -> str:
        if not self.allowed:
            return "denied"
        return "patched" if self.patch else "allowed"


def verdict(response: Mapping[str, Any]) -> Verdict:
    """An AdmissionReview response → Verdict."""
    payload = response.get("response") or {}
    if not payload.get("allowed"):
        status = payload.get("status") or {}
        return Verdict(
            False, message=str(status.get("message", "")), code=int(status.get("code") or 403)
        )
    patch: list[JSON] = []
    if payload.get("patch"):
        patch = json.loads(base64.b64decode(payload["patch"]))
    return Verdict(True, patch=patch, warnings=list(payload.get("warnings") or []))


def request(
    *,
    group: str,
    version: str,
    plural: str,
    operation: str,
    namespace: str,
    obj: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None = None,
    subresource: str | None = None,
    dry_run: bool = False,
) -> JSON:
    """An AdmissionReview v1 request rebuilt from what kopf hands a handler."""
    req: JSON = {
        "uid": "",
        "resource": {"group": group, "version": version, "resource": plural},
        "operation": operation,
        "namespace": namespace,
        "object": dict(obj) if obj is not None else None,
        "oldObject": dict(old) if old is not None else None,
        "dryRun": dry_run,
    }
    if subresource:
        req["subResource"] = subresource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


class Admission:
    def __init__(self, kube: Kube, injection: InjectionSettings) -> None:
        self.kube = kube
        self.injection = injection

    async def review_pod(
        self,
        pod: Mapping[str, Any],
        *,
        namespace: str,
        operation: str,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Verdict:
        namespace = namespace or str((pod.get("metadata") or {}).get("namespace") or "")
        store: Mapping[str, Any] | None = None
        wanted: tuple[str, str] | None = None
        try:
            if operation == "CREATE" and not subresource and injection_requested(pod):
                wanted = (namespace, store_name(pod))
        except InjectionError:
            wanted = None  # review() denies it with the same error
        if wanted is not None:
            try:
                store = await self.kube.get(store_path(*wanted))
            except KubeError as exc:
                return Verdict(
                    False,
                    message=f"cannot read MemoryStore {wanted[0]}/{wanted[1]}: {exc}; retry",
                    code=503,
                )

        def lookup(ns: str, name: str) -> Mapping[str, Any] | None:
            return store if (ns, name) == wanted else None

        response = review(
            request(
                group="",
                version="v1",
                plural="pods",
                operation=operation,
                namespace=namespace,
                obj=pod,
                subresource=subresource,
                dry_run=dry_run,
            ),
            lookup,
            self.injection,
        )
        return verdict(response)

    def review_object(
        self,
        plural: str,
        *,
        namespace: str,
        operation: str,
        obj: Mapping[str, Any] | None,
        old: Mapping[str, Any] | None,
    ) -> Verdict:
        """Validation of a MemoryStore or MemoryPolicy (pure: no lookups)."""
        response = review(
            request(
                group=GROUP,
                version=VERSION,
                plural=plural,
                operation=operation,
                namespace=namespace,
                obj=obj,
                old=old,
            ),
            lambda _ns, _name: None,
            self.injection,
        )
        return verdict(response)

"""Admission decisions: AdmissionReview v1 in, AdmissionReview v1 out.

`review()` is the whole webhook minus HTTP and TLS (the operator serves it, e.g.
through kopf): pods are mutated (injection), MemoryStore and MemoryPolicy objects
are validated for what their CRD schema and CEL rules cannot express. Looking up
the MemoryStore is the caller's (`lookup_store(namespace, name)`, typically a kopf
index or an informer cache), so this module does no I/O.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from memsidecar.webhooks.contract import GROUP, POLICY_PLURAL, STORE_PLURAL
from memsidecar.webhooks.injection import (
    InjectionError,
    InjectionSettings,
    inject,
    injection_requested,
    store_name,
)
from memsidecar.webhooks.store import validate_store

JSON = dict[str, Any]
LookupStore = Callable[[str, str], Mapping[str, Any] | None]

REVIEW_API_VERSION = "admission.k8s.io/v1"


def _response(uid: str, allowed: bool, **extra: Any) -> JSON:
    return {
        "apiVersion": REVIEW_API_VERSION,
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": allowed, **extra},
    }


def allow(uid: str, patch: list[JSON] | None = None, warnings: list[str] | None = None) -> JSON:
    extra: JSON = {}
    if patch:
        extra["patchType"] = "JSONPatch"
        extra["patch"] = base64.b64encode(json.dumps(patch).encode()).decode("ascii")
    if warnings:
        extra["warnings"] = warnings
    return _response(uid, True, **extra)


def deny(uid: str, message: str, code: int = 403, reason: str = "Forbidden") -> JSON:
    return _response(
        uid,
        False,
        status={"status": "Failure", "code": code, "reason": reason, "message": message},
    )


# --- object validation ----------------------------------------------------------------


def validate_memorystore(store: Mapping[str, Any]) -> list[str]:
    """Problems with a MemoryStore (beyond its schema), each naming the field; [] = valid."""
    return validate_store(store)


def validate_memorypolicy(policy: Mapping[str, Any]) -> list[str]:
    """Problems with a MemoryPolicy's rules as the sidecar's policy engine parses them:
    unknown blocks or ops, duplicate rule names, unreachable rules, ... ; [] = valid."""
    from memsidecar.sidecar.policy.model import PolicyError, parse_policy

    spec = policy.get("spec")
    rules = {k: v for k, v in (spec or {}).items() if k != "podSelector"}
    metadata = policy.get("metadata") or {}
    origin = f"MemoryPolicy {metadata.get('namespace', '')}/{metadata.get('name', '')}"
    try:
        parse_policy(rules, origin)
    except PolicyError as exc:
        return [f"spec.{p}" if p.startswith("rules[") else p for p in exc.problems]
    return []


def _store_warnings(store: Mapping[str, Any]) -> list[str]:
    for condition in (store.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") != "True":
            metadata = store.get("metadata") or {}
            return [
                f"MemoryStore {metadata.get('namespace')}/{metadata.get('name')} is not Ready "
                f"({condition.get('reason', '')}: {condition.get('message', '')}); the sidecar "
                "will not become ready until it is"
            ]
    return []


# --- the review -------------------------------------------------------------------------


def mutate_pod(
    request: Mapping[str, Any], lookup_store: LookupStore, settings: InjectionSettings
) -> JSON:
    uid = str(request.get("uid", ""))
    pod = request.get("object")
    if not isinstance(pod, Mapping):
        return deny(uid, "the admission request carries no pod object", 400, "BadRequest")
    namespace = str(request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "")
    try:
        if not injection_requested(pod):
            return allow(uid)
        name = store_name(pod)
        store = lookup_store(namespace, name)
        patch = inject(pod, store, settings, namespace=namespace)
    except InjectionError as exc:
        return deny(uid, exc.message)
    if not patch:
        return allow(uid)
    return allow(uid, patch, _store_warnings(store) if store is not None else None)


def validate_object(request: Mapping[str, Any]) -> JSON:
    uid = str(request.get("uid", ""))
    if request.get("operation") == "DELETE":
        return allow(uid)
    obj = request.get("object")
    if not isinstance(obj, Mapping):
        return deny(uid, "the admission request carries no object", 400, "BadRequest")
    old = request.get("oldObject")
    if request.get("operation") == "UPDATE" and isinstance(old, Mapping):
        if old.get("spec") == obj.get("spec"):
            # Metadata-only changes (finalizers, annotations, labels) are never refused, so
            # the operator can always manage an object admitted under older rules.
            return allow(uid)
    plural = (request.get("resource") or {}).get("resource")
    if plural == STORE_PLURAL:
        problems = validate_memorystore(obj)
        kind = "MemoryStore"
    else:
        problems = validate_memorypolicy(obj)
        kind = "MemoryPolicy"
    if not problems:
        return allow(uid)
    metadata = obj.get("metadata") or {}
    name = metadata.get("name") or metadata.get("generateName") or ""
    message = (
        f"{kind} {request.get('namespace') or metadata.get('namespace', '')}/{name} is invalid:\n"
        + "\n".join(f"  {p}" for p in problems)
    )
    return deny(uid, message, 422, "Invalid")


def review(
    admission_review: Mapping[str, Any],
    lookup_store: LookupStore,
    settings: InjectionSettings,
) -> JSON:
    """Answer an AdmissionReview v1: a JSONPatch for pods that opted in, a denial for a
    pod naming a missing MemoryStore or for an invalid MemoryStore / MemoryPolicy."""
    request = admission_review.get("request")
    if not isinstance(request, Mapping):
        return deny("", "not an AdmissionReview: the request is missing", 400, "BadRequest")
    uid = str(request.get("uid", ""))
    resource = request.get("resource") or {}
    group, plural = resource.get("group", ""), resource.get("resource", "")
    if group == "" and plural == "pods":
        if request.get("subResource") or request.get("operation") != "CREATE":
            return allow(uid)
        return mutate_pod(request, lookup_store, settings)
    if group == GROUP and plural in (STORE_PLURAL, POLICY_PLURAL):
        return validate_object(request)
    return deny(
        uid,
        f"memsidecar's webhook does not handle {plural}.{group or 'core'}; check the webhook "
        "configuration's rules",
        400,
        "BadRequest",
    )


__all__ = [
    "LookupStore",
    "allow",
    "deny",
    "mutate_pod",
    "review",
    "validate_memorypolicy",
    "validate_memorystore",
    "validate_object",
]

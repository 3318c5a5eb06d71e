"""A small JSON client for the Kubernetes API on the official asyncio client's transport
(kubernetes.aio: credentials from the kubeconfig or the pod's service account, TLS,
token refresh), returning plain dicts: the operator works on objects as the API
server returns them, like the webhook code it shares with."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes.aio import client as _aio_client
from kubernetes.aio import config as _aio_config

# The generated client is only partly annotated; it is used through Any.
aio_client: Any = _aio_client
aio_config: Any = _aio_config

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "memsidecar-operator"
REQUEST_TIMEOUT = 30.0


class KubeError(Exception):
    """The API server answered with an error status (or could not be reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def _segment(value: str) -> str:
    return quote(value, safe="")


def core_path(plural: str, namespace: str | None = None, name: str | None = None) -> str:
    path = "/api/v1"
    if namespace is not None:
        path += f"/namespaces/{_segment(namespace)}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{_segment(name)}"
    return path


def group_path(
    group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None
) -> str:
    path = f"/apis/{group}/{version}"
    if namespace is not None:
        path += f"/namespaces/{_segment(namespace)}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{_segment(name)}"
    return path


class Kube:
    """An API client; `await Kube.connect(kubeconfig)` and `await kube.close()`."""

    def __init__(self, api: Any) -> None:
        self._api = api

    @classmethod
    async def connect(cls, kubeconfig: Path | None = None) -> Kube:
        configuration = aio_client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            aio_config.load_incluster_config(client_configuration=configuration)
        else:
            await aio_config.load_kube_config(
                config_file=str(kubeconfig) if kubeconfig else None,
                client_configuration=configuration,
            )
        return cls(aio_client.ApiClient(configuration))

    async def close(self) -> None:
        await self._api.close()

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = REQUEST_TIMEOUT,
    ) -> JSON:
        """One API call; the decoded JSON answer, or KubeError for an error status."""
        url = self.host + path
        if query:
            url += "?" + urlencode(dict(query))
        headers: dict[str, str] = {"Accept": "application/json", "Content-Type": content_type}
        headers.update(self._api.default_headers)
        await self._api.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)
        try:
            # The transport JSON-encodes the body (for apply-patch+yaml too: JSON is YAML).
            response = await self._api.call_api(
                method, url, header_params=headers, body=body, _request_timeout=timeout
            )
            raw = await response.read()
        except aio_client.ApiException as exc:
            raise KubeError(int(exc.status or 0), str(exc.reason or ""), str(exc.body)) from exc
        except (OSError, TimeoutError) as exc:
            raise KubeError(0, "Unreachable", f"{self.host}: {exc}") from exc
        try:
            data: Any = json.loads(raw) if raw else {}
        except ValueError:
            data = raw.decode("utf-8", "replace").strip()
        if response.status >= 400:
            message = data.get("message", "") if isinstance(data, dict) else str(data)
            reason = data.get("reason", "") if isinstance(data, dict) else ""
            raise KubeError(response.status, str(reason or response.reason), str(message))
        return data if isinstance(data, dict) else {"items": data}

    async def get(self, path: str) -> JSON | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def create(self, path: str, body: Mapping[str, Any]) -> JSON:
        return await self.request(
            "POST", path, body=dict(body), query={"fieldManager": FIELD_MANAGER}
        )

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> JSON:
        return await self.request(
            "PATCH",
            path,
            body=dict(patch),
            content_type=MERGE_PATCH,
            query={"fieldManager": FIELD_MANAGER},
        )

    async def json_patch(self, path: str, ops: list[JSON]) -> JSON:
        return await self.request(
            "PATCH", path, body=ops, content_type=JSON_PATCH, query={"fieldManager": FIELD_MANAGER}
        )

    async def apply(self, path: str, body: Mapping[str, Any]) -> JSON:
        """Server-side apply with the operator's field manager (forced: it owns these)."""
        return await self.request(
            "PATCH",
            path,
            body=dict(body),
            content_type=APPLY_PATCH,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
        )

    async def delete(self, path: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self.request("DELETE", path)
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return True

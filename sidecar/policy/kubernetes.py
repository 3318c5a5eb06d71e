"""Policy from MemoryPolicy objects: listed and watched in the sidecar's namespace.

`KubernetesPolicySource` is the Kubernetes counterpart of the policy file watcher. It
lists the MemoryPolicy objects (memsidecar.io/v1alpha1) of one namespace, keeps the
ones whose `spec.podSelector` selects this pod's labels, merges them into one
PolicySpec and installs it in the PolicyHolder; then it watches the namespace and
does the same on every change, within the watch's latency (well under a second on a
healthy apiserver). docs/policy.md ("Kubernetes: MemoryPolicy objects") describes the
behaviour for users; in short:

- Selection: `podSelector` is a standard LabelSelector (`matchLabels` and
  `matchExpressions` with In / NotIn / Exists / DoesNotExist, ANDed); unset or `{}`
  selects every pod of the namespace.
- Merge: the selected policies are ordered by name; their rules are concatenated in
  that order, each rule renamed `<policy>.<rule>`; `defaultEffect` is deny when any
  selected policy says deny, else allow. The merged spec is validated again (so a
  catch-all rule in one policy that makes another policy's rules unreachable is an
  error, not a silent shadowing).
- Invalid input never replaces valid rules. A MemoryPolicy version that does not
  validate is ignored, and the last valid version of that object this sidecar loaded
  (if any) stays in force, as if the bad edit had not been made; other policies'
  changes still apply. A merge that fails keeps the whole rule set in force. Either
  way the reason is logged (logger "memsidecar.policy") and recorded as the holder's
  last error.
- Reporting: after each load, when the pod name is known, the pod's annotation
  `memsidecar.io/policy` is set (merge patch) to a JSON object mapping the name of
  each policy in force to the `metadata.generation` loaded, as a string, e.g.
  `{"base":"3","team-red":"1"}`. The operator counts sidecars from it. A failed patch
  is logged and retried with backoff; it never affects enforcement.

The official `kubernetes` client is blocking, so list, watch reads and patches run in
worker threads; every state change happens on the event loop. The watch runs in one
dedicated thread; `stop()` shuts the watch's socket down, which ends a blocked read at
once. Errors reconnect with jittered exponential backoff (bounded); a watch that
reports 410 Gone (resourceVersion too old) is followed by a fresh list.

Least privilege (a Role in the pod's namespace, bound to the pod's service account):
`list` and `watch` on `memorypolicies.memsidecar.io`, and `patch` on `pods` (only to
write the annotation; without it enforcement still works and only the operator's
count is missing). Pod labels come from the Downward API file the injector mounts
(`/etc/memsidecar-podinfo/labels`), so the sidecar never reads Pod objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from memsidecar.sidecar.policy.holder import PolicyHolder
from memsidecar.sidecar.policy.model import RULE_NAME_RE, PolicyError, PolicySpec, parse_policy

log = logging.getLogger("memsidecar.policy")

GROUP = "memsidecar.io"
VERSION = "v1alpha1"
PLURAL = "memorypolicies"
KIND = "MemoryPolicy"
# The pod annotation the sidecar writes: JSON {"<policy name>": "<generation>"}.
POLICY_ANNOTATION = "memsidecar.io/policy"
# Where the injector mounts the pod's labels (Downward API).
DEFAULT_LABELS_FILE = Path("/etc/memsidecar-podinfo/labels")

# A watch event larger than this is refused (etcd stores objects of at most 1.5 MiB).
MAX_EVENT_BYTES = 8 * 1024 * 1024
# Client read timeout beyond the server-side watch timeout: the server ends a healthy
# stream first; a silent connection is given up after this much longer.
WATCH_READ_SLACK_SECONDS = 30.0
MAX_LABELS_FILE_BYTES = 1024 * 1024
# How long stop() waits for the API client to close before leaving it to its thread.
CLOSE_WAIT_SECONDS = 1.0

# --- label selectors ---------------------------------------------------------------

_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
_OPERATORS: tuple[Operator, ...] = ("In", "NotIn", "Exists", "DoesNotExist")


class LabelSelectorError(ValueError):
    """A podSelector that is not a valid Kubernetes LabelSelector."""


def _check_label_key(key: object, where: str) -> str:
    if not isinstance(key, str):
        raise LabelSelectorError(f"{where}: label key must be a string, not {key!r}")
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        raise LabelSelectorError(
            f"{where}: label key {key!r} has an invalid prefix: it must be a lowercase DNS "
            "subdomain of at most 253 characters, e.g. example.com/tier"
        )
    if len(name) > 63 or not _LABEL_NAME_RE.match(name):
        raise LabelSelectorError(
            f"{where}: label key {key!r} is invalid: the name part must be 1-63 letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return key


def _check_label_value(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise LabelSelectorError(f"{where}: label value must be a string, not {value!r}")
    if len(value) > 63 or not _LABEL_VALUE_RE.match(value):
        raise LabelSelectorError(
            f"{where}: label value {value!r} is invalid: at most 63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit (or empty)"
        )
    return value


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            # As in Kubernetes: a pod without the label is "not in" any value set.
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present


@dataclass(frozen=True)
class LabelSelector:
    """A parsed metav1.LabelSelector: every requirement must hold (no requirements:
    every pod)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.expressions
        )

    @property
    def selects_everything(self) -> bool:
        return not self.match_labels and not self.expressions


def parse_label_selector(data: object, where: str = "podSelector") -> LabelSelector:
    """Parse a LabelSelector as Kubernetes does (unset or {} selects every pod), or raise
    LabelSelectorError saying what is wrong."""
    if data is None:
        return LabelSelector()
    if not isinstance(data, Mapping):
        raise LabelSelectorError(f"{where} must be a mapping, not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in ("matchLabels", "matchExpressions"))
    if unknown:
        raise LabelSelectorError(
            f"{where} has unknown field(s) {', '.join(unknown)}; use matchLabels and "
            "matchExpressions"
        )
    raw_labels = data.get("matchLabels") or {}
    if not isinstance(raw_labels, Mapping):
        raise LabelSelectorError(f"{where}.matchLabels must be a mapping of label to value")
    match_labels = tuple(
        sorted(
            (
                _check_label_key(k, f"{where}.matchLabels"),
                _check_label_value(v, f"{where}.matchLabels[{k}]"),
            )
            for k, v in raw_labels.items()
        )
    )
    raw_expressions = data.get("matchExpressions") or []
    if not isinstance(raw_expressions, list):
        raise LabelSelectorError(f"{where}.matchExpressions must be a list")
    expressions: list[Requirement] = []
    for index, raw in enumerate(raw_expressions):
        at = f"{where}.matchExpressions[{index}]"
        if not isinstance(raw, Mapping):
            raise LabelSelectorError(f"{at} must be a mapping of key, operator and values")
        extra = sorted(str(k) for k in raw if k not in ("key", "operator", "values"))
        if extra:
            raise LabelSelectorError(f"{at} has unknown field(s) {', '.join(extra)}")
        key = _check_label_key(raw.get("key"), at)
        operator = raw.get("operator")
        if operator not in _OPERATORS:
            raise LabelSelectorError(
                f"{at}: operator {operator!r} is not one of {', '.join(_OPERATORS)}"
            )
        values = raw.get("values") or []
        if not isinstance(values, list):
            raise LabelSelectorError(f"{at}: values must be a list of strings")
        checked = [_check_label_value(v, f"{at}.values") for v in values]
        if operator in ("In", "NotIn") and not checked:
            raise LabelSelectorError(f"{at}: values must be non-empty for operator {operator}")
        if operator in ("Exists", "DoesNotExist") and checked:
            raise LabelSelectorError(f"{at}: values must be empty for operator {operator}")
        expressions.append(Requirement(key, operator, frozenset(checked)))
    return LabelSelector(match_labels, tuple(expressions))


def parse_downward_labels(text: str, origin: str = "labels") -> dict[str, str]:
    """Parse a Downward API `metadata.labels` file: one `key="value"` line per label
    (the value quoted as Go's %q does)."""
    labels: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, quoted = line.partition("=")
        value: object = None
        if sep and quoted.startswith('"'):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(quoted)
        if not key or not isinstance(value, str):
            raise ValueError(f'{origin}:{number}: expected key="value", got {line!r}')
        labels[key] = value
    return labels


def read_downward_labels(path: Path | str) -> dict[str, str]:
    """Read the pod's labels from a Downward API file (see parse_downward_labels)."""
    path = Path(path)
    with path.open("rb") as f:
        data = f.read(MAX_LABELS_FILE_BYTES + 1)
    if len(data) > MAX_LABELS_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_LABELS_FILE_BYTES} bytes")
    return parse_downward_labels(data.decode("utf-8"), str(path))


# --- policies and the merge ----------------------------------------------------------


@dataclass(frozen=True)
class LoadedPolicy:
    """One valid version of a MemoryPolicy object."""

    name: str
    uid: str
    generation: int
    resource_version: str
    selector: LabelSelector
    spec: PolicySpec


@dataclass(frozen=True)
class Rejection:
    """A MemoryPolicy version that did not validate."""

    name: str
    uid: str
    generation: int
    message: str
    # The last valid version of the same object, still in force (if any).
    kept: LoadedPolicy | None
    # Whether it concerns this pod: its new selector selects the pod, cannot be read,
    # or the version kept selects it.
    relevant: bool


@dataclass(frozen=True)
class Evaluation:
    """What the objects of a namespace mean for one pod."""

    # The valid version of every object (or the one kept for an invalid object).
    policies: dict[str, LoadedPolicy]
    # The policies selecting the pod, in merge order (by name).
    selected: tuple[LoadedPolicy, ...]
    rejections: tuple[Rejection, ...]
    # The merged rule set, or the reason the selected policies cannot be merged.
    spec: PolicySpec | None
    merge_error: PolicyError | None

    def annotation(self) -> str:
        """The `memsidecar.io/policy` annotation value for `selected`."""
        return policy_annotation(self.selected)


def policy_annotation(policies: Sequence[LoadedPolicy]) -> str:
    return json.dumps(
        {p.name: str(p.generation) for p in policies}, sort_keys=True, separators=(",", ":")
    )


def _object_label(namespace: str, name: str, generation: object) -> str:
    return f"MemoryPolicy {namespace}/{name} (generation {generation})"


def load_policy_object(obj: Mapping[str, Any]) -> LoadedPolicy:
    """Validate one MemoryPolicy object into a LoadedPolicy, or raise PolicyError."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or "")
    namespace = str(metadata.get("namespace") or "")
    generation = metadata.get("generation")
    origin = _object_label(namespace, name, generation)
    if not name or not isinstance(generation, int):
        raise PolicyError(origin, ["the object has no metadata.name or metadata.generation"])
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise PolicyError(origin, [f"spec must be a mapping, not {type(spec).__name__}"])
    problems: list[str] = []
    selector = LabelSelector()
    try:
        selector = parse_label_selector(spec.get("podSelector"), "podSelector")
    except LabelSelectorError as exc:
        problems.append(str(exc))
    rules_part = {k: v for k, v in spec.items() if k != "podSelector"}
    parsed: PolicySpec | None = None
    try:
        parsed = parse_policy(rules_part, origin)
    except PolicyError as exc:
        problems.extend(exc.problems)
    if parsed is None or problems:
        raise PolicyError(origin, problems)
    return LoadedPolicy(
        name=name,
        uid=str(metadata.get("uid") or ""),
        generation=generation,
        resource_version=str(metadata.get("resourceVersion") or ""),
        selector=selector,
        spec=parsed,
    )


def merged_rule_name(policy: str, rule: str) -> str:
    return f"{policy}.{rule}"


def merge_policies(policies: Sequence[LoadedPolicy], namespace: str = "") -> PolicySpec:
    """Merge the selected policies into one PolicySpec, or raise PolicyError.

    Policies are taken in name order; rules keep their order within a policy and are
    renamed `<policy>.<rule>`; defaultEffect is deny when any policy's is deny. With no
    policies the result allows everything."""
    ordered = sorted(policies, key=lambda p: p.name)
    names = ", ".join(p.name for p in ordered) or "none"
    where = f"{namespace}/" if namespace else ""
    origin = f"MemoryPolicies {where}{{{names}}} merged"
    problems: list[str] = []
    rules: list[dict[str, Any]] = []
    for policy in ordered:
        for rule in policy.spec.rules:
            merged = merged_rule_name(policy.name, rule.name)
            if not RULE_NAME_RE.match(merged):
                problems.append(
                    f"MemoryPolicy {policy.name!r} rule {rule.name!r}: the merged rule name "
                    f"{merged!r} ({len(merged)} characters) is not a valid rule name (at most "
                    "128 characters); shorten the policy or the rule name"
                )
            data = rule.model_dump(mode="json", by_alias=True, exclude_none=True)
            data["name"] = merged
            rules.append(data)
    if problems:
        raise PolicyError(origin, problems)
    deny = any(p.spec.default_effect == "deny" for p in ordered)
    return parse_policy({"defaultEffect": "deny" if deny else "allow", "rules": rules}, origin)


def evaluate(
    objects: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
    previous: Mapping[str, LoadedPolicy],
    namespace: str = "",
) -> Evaluation:
    """Validate every object (falling back to `previous` for invalid ones), select the
    ones matching `labels` and merge them. Pure: no I/O."""
    policies: dict[str, LoadedPolicy] = {}
    rejections: list[Rejection] = []
    for name in sorted(objects):
        obj = objects[name]
        metadata = obj.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        generation = metadata.get("generation")
        prev = previous.get(name)
        if prev is not None and prev.uid == uid and prev.generation == generation:
            # The spec is unchanged (a metadata-only edit): no need to validate it again.
            policies[name] = prev
            continue
        try:
            policies[name] = load_policy_object(obj)
            continue
        except PolicyError as exc:
            error = exc
        kept = prev if prev is not None and prev.uid == uid else None
        if kept is not None:
            policies[name] = kept
        spec = obj.get("spec")
        raw_selector = spec.get("podSelector") if isinstance(spec, Mapping) else None
        try:
            relevant = parse_label_selector(raw_selector).matches(labels)
        except LabelSelectorError:
            relevant = True
        relevant = relevant or (kept is not None and kept.selector.matches(labels))
        rejections.append(
            Rejection(
                name=name,
                uid=uid,
                generation=generation if isinstance(generation, int) else 0,
                message=str(error),
                kept=kept,
                relevant=relevant,
            )
        )
    selected = tuple(policies[n] for n in sorted(policies) if policies[n].selector.matches(labels))
    try:
        spec_out: PolicySpec | None = merge_policies(selected, namespace)
        merge_error = None
    except PolicyError as exc:
        spec_out, merge_error = None, exc
    return Evaluation(policies, selected, tuple(rejections), spec_out, merge_error)


# --- the API -------------------------------------------------------------------------


class KubeApiError(Exception):
    """A failed API call; `status` is the HTTP status (None: no response)."""

    def __init__(self, status: int | None, message: str) -> None:
        self.status = status
        super().__init__(message)


class PolicyWatch(Protocol):
    def next_event(self) -> dict[str, Any] | None:
        """Block for the next event; None when the server ended the stream."""

    def shutdown(self) -> None:
        """Interrupt a blocked next_event() from another thread."""

    def close(self) -> None: ...


class PolicyApi(Protocol):
    """The calls the source makes (blocking; run in worker threads)."""

    def list_policies(self) -> tuple[list[dict[str, Any]], str]:
        """The MemoryPolicy objects of the namespace and the list's resourceVersion."""

    def watch_policies(self, resource_version: str, timeout_seconds: int) -> PolicyWatch: ...

    def patch_pod_annotation(self, pod_name: str, key: str, value: str) -> None: ...

    def close(self) -> None: ...


def default_api_client() -> Any:
    """An ApiClient from the pod's service account, else from the kubeconfig
    ($KUBECONFIG or ~/.kube/config)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


def _api_error(exc: BaseException, what: str) -> KubeApiError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = exc.status if isinstance(exc.status, int) and exc.status else None
        detail = str(exc.reason or "")
        body = exc.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        if isinstance(body, str) and body:
            try:
                parsed = json.loads(body)
                detail = str(parsed.get("message") or detail) if isinstance(parsed, dict) else body
            except json.JSONDecodeError:
                detail = body.strip()
        return KubeApiError(status, f"{what}: HTTP {exc.status}: {detail}")
    return KubeApiError(None, f"{what}: {type(exc).__name__}: {exc}")


class _HttpWatch:
    """One watch response: newline-delimited JSON events, read in a worker thread."""

    def __init__(self, response: Any, max_event_bytes: int) -> None:
        self._response = response
        self._max = max_event_bytes
        self._lines = self._iter_lines()

    def _iter_lines(self) -> Iterator[bytes]:
        buffer = bytearray()
        for chunk in self._response.stream(amt=None, decode_content=True):
            buffer.extend(chunk)
            while (newline := buffer.find(b"\n")) != -1:
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                if line.strip():
                    yield line
            if len(buffer) > self._max:
                raise KubeApiError(None, f"a watch event exceeds {self._max} bytes")
        if buffer.strip():
            yield bytes(buffer)

    def next_event(self) -> dict[str, Any] | None:
        try:
            line = next(self._lines, None)
        except KubeApiError:
            raise
        except Exception as exc:
            raise _api_error(exc, "reading the MemoryPolicy watch") from exc
        if line is None:
            return None
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KubeApiError(None, f"a watch event is not JSON: {exc}") from exc
        if not isinstance(event, dict):
            raise KubeApiError(None, "a watch event is not a JSON object")
        return event

    def shutdown(self) -> None:
        # urllib3 >= 2.3: shuts the socket down, waking a read blocked in another thread.
        shutdown = getattr(self._response, "shutdown", None)
        if shutdown is not None:
            with contextlib.suppress(Exception):
                shutdown()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._response.close()
        with contextlib.suppress(Exception):
            self._response.release_conn()


class KubePolicyApi:
    """PolicyApi over the official `kubernetes` client."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        *,
        request_timeout_seconds: float = 10.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        from kubernetes import client

        self._client = api_client
        self.namespace = namespace
        self._timeout = request_timeout_seconds
        self._max_event_bytes = max_event_bytes
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    def list_policies(self) -> tuple[list[dict[str, Any]], str]:
        what = f"listing {PLURAL}.{GROUP} in namespace {self.namespace}"
        try:
            result = self._custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, _request_timeout=self._timeout
            )
        except Exception as exc:
            raise _api_error(exc, what) from exc
        if not isinstance(result, dict):
            raise KubeApiError(None, f"{what}: the response is not a JSON object")
        items = result.get("items") or []
        rv = (result.get("metadata") or {}).get("resourceVersion")
        if not isinstance(items, list) or not isinstance(rv, str):
            raise KubeApiError(None, f"{what}: the response has no items or resourceVersion")
        return [i for i in items if isinstance(i, dict)], rv

    def watch_policies(self, resource_version: str, timeout_seconds: int) -> PolicyWatch:
        what = f"watching {PLURAL}.{GROUP} in namespace {self.namespace}"
        try:
            response = self._custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _preload_content=False,
                _request_timeout=(self._timeout, timeout_seconds + WATCH_READ_SLACK_SECONDS),
            )
        except Exception as exc:
            raise _api_error(exc, what) from exc
        return _HttpWatch(response, self._max_event_bytes)

    def patch_pod_annotation(self, pod_name: str, key: str, value: str) -> None:
        body = {"metadata": {"annotations": {key: value}}}
        try:
            self._core.patch_namespaced_pod(
                pod_name,
                self.namespace,
                body,
                _content_type="application/merge-patch+json",
                _request_timeout=self._timeout,
            )
        except Exception as exc:
            raise _api_error(exc, f"patching pod {self.namespace}/{pod_name}") from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


class PolicySourceError(RuntimeError):
    """The source could not load the namespace's policies at start."""


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def _hint(exc: KubeApiError, namespace: str) -> str:
    text = str(exc)
    if exc.status == 403:
        text += (
            f"; the pod's service account needs list and watch on {PLURAL}.{GROUP} in "
            f"namespace {namespace} (a Role and RoleBinding, see docs/policy.md)"
        )
    elif exc.status == 404:
        text += f"; is the MemoryPolicy CRD installed? (kubectl apply -f crds/{PLURAL}.yaml)"
    elif exc.status == 401:
        text += "; the service account token was not accepted"
    return text


@dataclass
class _Backoff:
    initial: float
    maximum: float
    current: float = field(init=False)

    def __post_init__(self) -> None:
        self.current = self.initial

    def next(self) -> float:
        """The next delay: the current one with jitter (50-100 %), then doubled."""
        delay = self.current * random.uniform(0.5, 1.0)
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class KubernetesPolicySource:
    """Keeps `holder` in line with the MemoryPolicy objects selecting this pod."""

    def __init__(
        self,
        holder: PolicyHolder,
        namespace: str,
        pod_labels: Mapping[str, str] | None = None,
        pod_name: str | None = None,
        *,
        labels_file: Path | str | None = None,
        labels_poll_seconds: float = 5.0,
        api_client_factory: Callable[[], Any] = default_api_client,
        api_factory: Callable[[], PolicyApi] | None = None,
        request_timeout_seconds: float = 10.0,
        start_timeout_seconds: float = 30.0,
        watch_timeout_seconds: tuple[int, int] = (300, 600),
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
    ) -> None:
        if not namespace:
            raise ValueError("namespace is required")
        if pod_labels is not None and labels_file is not None:
            raise ValueError("give pod_labels or labels_file, not both")
        if labels_poll_seconds <= 0 or request_timeout_seconds <= 0 or start_timeout_seconds <= 0:
            raise ValueError("timeouts and poll intervals must be positive")
        low, high = watch_timeout_seconds
        if not 0 < low <= high:
            raise ValueError("watch_timeout_seconds must be (low, high) with 0 < low <= high")
        if not 0 < backoff_initial_seconds <= backoff_max_seconds:
            raise ValueError("need 0 < backoff_initial_seconds <= backoff_max_seconds")
        self.holder = holder
        self.namespace = namespace
        self.pod_name = pod_name
        self.labels_file = Path(labels_file) if labels_file is not None else None
        self.labels_poll_seconds = labels_poll_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.start_timeout_seconds = start_timeout_seconds
        self.watch_timeout_seconds = watch_timeout_seconds
        self._labels: dict[str, str] = dict(pod_labels or {})
        self._api_client_factory = api_client_factory
        self._api_factory = api_factory
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._api: PolicyApi | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._objects: dict[str, dict[str, Any]] = {}
        self._policies: dict[str, LoadedPolicy] = {}
        self._in_force: tuple[LoadedPolicy, ...] = ()
        self._resource_version: str | None = None
        self._reported: set[tuple[str, str, int]] = set()
        self._last_merge_error: str | None = None
        self._watch: PolicyWatch | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._publish_wanted = asyncio.Event()
        self._desired_annotation: str | None = None
        self._published_annotation: str | None = None
        self._loads = 0

    # --- introspection ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self._labels)

    @property
    def in_force(self) -> dict[str, int]:
        """name -> generation of the policies whose rules are in force."""
        return {p.name: p.generation for p in self._in_force}

    @property
    def published_annotation(self) -> str | None:
        """The annotation value last written to the pod (None: not yet)."""
        return self._published_annotation

    @property
    def resource_version(self) -> str | None:
        return self._resource_version

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Load the namespace's policies (retrying for up to start_timeout_seconds, then
        raising PolicySourceError: a sidecar should not serve without its policy), then
        watch for changes."""
        if self._executor is not None:
            raise RuntimeError("the Kubernetes policy source is already started")
        loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="memsidecar-policy-watch")
        try:
            if self.labels_file is not None:
                try:
                    self._labels = await asyncio.to_thread(read_downward_labels, self.labels_file)
                except (OSError, ValueError) as exc:
                    raise PolicySourceError(
                        f"cannot read the pod's labels from {self.labels_file}: {exc}"
                    ) from exc
            try:
                self._api = await loop.run_in_executor(self._executor, self._make_api)
            except Exception as exc:
                raise PolicySourceError(
                    f"cannot set up the Kubernetes API client: {type(exc).__name__}: {exc}"
                ) from exc
            await self._initial_list(loop.time() + self.start_timeout_seconds)
        except BaseException:
            await self._close_api()
            raise
        self._tasks.append(asyncio.create_task(self._run(), name=f"policy-k8s:{self.namespace}"))
        if self.labels_file is not None:
            self._tasks.append(asyncio.create_task(self._poll_labels(), name="policy-k8s-labels"))
        if self.pod_name is not None:
            self._tasks.append(asyncio.create_task(self._publisher(), name="policy-k8s-annotate"))

    async def stop(self) -> None:
        self._stopping.set()
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.shutdown()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_api()

    async def _close_api(self) -> None:
        api, self._api = self._api, None
        executor, self._executor = self._executor, None
        if executor is not None:
            if api is not None:
                # Queued behind any call still running in the watch thread (a watch read
                # ends at once after shutdown(); a list ends within its request timeout).
                closed = asyncio.wrap_future(executor.submit(api.close))
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(closed), CLOSE_WAIT_SECONDS)
            executor.shutdown(wait=False)

    def _make_api(self) -> PolicyApi:
        if self._api_factory is not None:
            return self._api_factory()
        return KubePolicyApi(
            self._api_client_factory(),
            self.namespace,
            request_timeout_seconds=self.request_timeout_seconds,
        )

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, or return early when stop() is called."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _initial_list(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        backoff = _Backoff(self._backoff_initial, self._backoff_max)
        while True:
            try:
                # Bounded as a whole: one list may retry connections inside the client.
                await asyncio.wait_for(self._relist(), max(deadline - loop.time(), 0.001))
                return
            except TimeoutError as exc:
                raise PolicySourceError(
                    f"could not list MemoryPolicy objects in namespace {self.namespace} "
                    f"within {self.start_timeout_seconds:g}s: the API did not answer"
                ) from exc
            except KubeApiError as exc:
                reason = _hint(exc, self.namespace)
                delay = backoff.next()
                if loop.time() + delay >= deadline:
                    raise PolicySourceError(
                        f"could not list MemoryPolicy objects in namespace {self.namespace} "
                        f"within {self.start_timeout_seconds:g}s: {reason}"
                    ) from exc
                log.warning("%s; retrying in %.1fs", reason, delay)
                await self._sleep(delay)

    async def _relist(self) -> None:
        assert self._api is not None
        items, rv = await self._call(self._api.list_policies)
        objects: dict[str, dict[str, Any]] = {}
        for item in items:
            name = (item.get("metadata") or {}).get("name")
            if isinstance(name, str):
                objects[name] = item
        self._objects = objects
        self._resource_version = rv
        self._apply()

    # --- the watch loop -----------------------------------------------------------

    async def _run(self) -> None:
        backoff = _Backoff(self._backoff_initial, self._backoff_max)
        gone_in_a_row = 0
        while not self._stopping.is_set():
            try:
                if self._resource_version is None:
                    await self._relist()
                if await self._watch_once():
                    backoff.reset()
                gone_in_a_row = 0
            except _Gone:
                self._resource_version = None
                gone_in_a_row += 1
                log.info(
                    "MemoryPolicy watch in namespace %s expired (410 Gone); listing again",
                    self.namespace,
                )
                if gone_in_a_row > 1:
                    await self._sleep(backoff.next())
            except KubeApiError as exc:
                self._resource_version = None
                delay = backoff.next()
                log.warning(
                    "%s; keeping the policy in force (version %s), reconnecting in %.1fs",
                    _hint(exc, self.namespace),
                    self.holder.version,
                    delay,
                )
                await self._sleep(delay)
            except Exception:
                # Never let the watch die silently: list again after a pause.
                self._resource_version = None
                delay = backoff.next()
                log.exception(
                    "the MemoryPolicy watch in namespace %s failed; listing again in %.1fs",
                    self.namespace,
                    delay,
                )
                await self._sleep(delay)

    async def _watch_once(self) -> bool:
        """Watch from the current resourceVersion until the server ends the stream.
        Returns whether the stream was healthy (delivered events or ended cleanly)."""
        assert self._api is not None and self._resource_version is not None
        timeout = random.randint(*self.watch_timeout_seconds)
        try:
            watch: PolicyWatch = await self._call(
                self._api.watch_policies, self._resource_version, timeout
            )
        except KubeApiError as exc:
            if exc.status == 410:
                raise _Gone() from exc
            raise
        self._watch = watch
        if self._stopping.is_set():
            watch.shutdown()
        healthy = False
        try:
            while True:
                event = await self._call(watch.next_event)
                if event is None:
                    return True
                self._handle(event)
                healthy = True
        except KubeApiError:
            if healthy:
                # A stream that worked and then broke: reconnect at once from its last
                # resourceVersion instead of listing again.
                log.info(
                    "MemoryPolicy watch in namespace %s was interrupted; resuming",
                    self.namespace,
                )
                return True
            raise
        finally:
            if self._watch is watch:
                self._watch = None
            if self._executor is not None:
                self._executor.submit(watch.close)

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise KubeApiError(None, f"a {kind} watch event has no object")
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone()
            raise KubeApiError(
                code if isinstance(code, int) else None,
                f"the MemoryPolicy watch in namespace {self.namespace} reported an error: "
                f"{obj.get('message') or obj}",
            )
        metadata = obj.get("metadata") or {}
        rv = metadata.get("resourceVersion")
        if kind == "BOOKMARK":
            if isinstance(rv, str):
                self._resource_version = rv
            return
        name = metadata.get("name")
        if kind not in ("ADDED", "MODIFIED", "DELETED") or not isinstance(name, str):
            raise KubeApiError(None, f"unexpected watch event {kind!r}")
        if isinstance(rv, str):
            self._resource_version = rv
        if kind == "DELETED":
            self._objects.pop(name, None)
        else:
            self._objects[name] = obj
        self._apply()

    # --- applying -----------------------------------------------------------------

    def _apply(self) -> None:
        """Re-evaluate the objects and install the result (on the event loop)."""
        result = evaluate(self._objects, self._labels, self._policies, self.namespace)
        reported: set[tuple[str, str, int]] = set()
        errors: list[str] = []
        for rejection in result.rejections:
            if not rejection.relevant:
                continue
            key = (rejection.name, rejection.uid, rejection.generation)
            reported.add(key)
            kept = rejection.kept
            keeping = (
                f"keeping generation {kept.generation} of it in force"
                if kept is not None
                else "ignoring it (no valid version of it was loaded before)"
            )
            errors.append(f"{rejection.message}\n{keeping}")
            if key not in self._reported:
                log.warning("%s\n%s", rejection.message, keeping)
        self._reported = reported
        if result.spec is None:
            assert result.merge_error is not None
            message = (
                f"{result.merge_error}\nkeeping the policy in force (version {self.holder.version})"
            )
            if message != self._last_merge_error:
                log.warning("%s", message)
            self._last_merge_error = message
            self.holder.record_error("\n".join([*errors, str(result.merge_error)]))
            return
        self._last_merge_error = None
        before = self.holder.version
        changed = self.holder.replace(result.spec, source=self._source(result.selected))
        self._policies = result.policies
        self._in_force = result.selected
        if errors:
            self.holder.record_error("\n".join(errors))
        if changed:
            self._loads += 1
            log.info(
                "policy loaded from %s: version %s -> %s, %d rules, defaultEffect %s",
                self.holder.source,
                before,
                self.holder.version,
                len(result.spec.rules),
                result.spec.default_effect,
            )
        self._publish(result.annotation())

    def _source(self, selected: Sequence[LoadedPolicy]) -> str:
        if not selected:
            return f"kubernetes:{self.namespace}/(no MemoryPolicy selects this pod)"
        parts = ",".join(f"{p.name}@{p.resource_version}" for p in selected)
        return f"kubernetes:{self.namespace}/{parts}"

    # --- pod labels ---------------------------------------------------------------

    def set_labels(self, labels: Mapping[str, str]) -> None:
        """The pod's labels changed: select again."""
        new = dict(labels)
        if new != self._labels:
            log.info("pod labels changed to %s; selecting MemoryPolicies again", new)
            self._labels = new
            self._apply()

    async def _poll_labels(self) -> None:
        assert self.labels_file is not None
        failing = False
        while not self._stopping.is_set():
            await self._sleep(self.labels_poll_seconds)
            if self._stopping.is_set():
                return
            try:
                labels = await asyncio.to_thread(read_downward_labels, self.labels_file)
            except (OSError, ValueError) as exc:
                if not failing:
                    log.warning(
                        "cannot read the pod's labels from %s (%s); keeping %s",
                        self.labels_file,
                        exc,
                        self._labels,
                    )
                failing = True
                continue
            failing = False
            self.set_labels(labels)

    # --- the pod annotation -------------------------------------------------------

    def _publish(self, value: str) -> None:
        if self.pod_name is None:
            return
        self._desired_annotation = value
        if value != self._published_annotation:
            self._publish_wanted.set()

    async def _publisher(self) -> None:
        assert self.pod_name is not None
        backoff = _Backoff(self._backoff_initial, self._backoff_max)
        while True:
            await self._publish_wanted.wait()
            self._publish_wanted.clear()
            value = self._desired_annotation
            api = self._api
            if value is None or value == self._published_annotation or api is None:
                continue
            try:
                await asyncio.to_thread(
                    api.patch_pod_annotation, self.pod_name, POLICY_ANNOTATION, value
                )
            except KubeApiError as exc:
                delay = backoff.next()
                hint = (
                    f"; the pod's service account needs patch on pods in namespace {self.namespace}"
                    if exc.status == 403
                    else ""
                )
                log.warning(
                    "could not record the loaded policies on pod %s/%s (%s%s); retrying in "
                    "%.1fs (enforcement is not affected)",
                    self.namespace,
                    self.pod_name,
                    exc,
                    hint,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._publish_wanted.wait(), delay)
                self._publish_wanted.set()
                continue
            backoff.reset()
            self._published_annotation = value
            log.debug(
                "pod %s/%s annotated %s=%s", self.namespace, self.pod_name, POLICY_ANNOTATION, value
            )

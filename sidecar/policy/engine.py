"""Policy evaluation: a compiled, immutable rule set and `decide()`.

This module is pure: no I/O, no logging, no global state. Time comes from the
injected monotonic clock; rate-limit state lives in a RateBuckets object that is
passed in (and shared between successive engines so reloads keep buckets).

Semantics (docs/policy.md has the full text):

1. Rules are walked top to bottom; only rules whose match fits the request count.
2. The first matching allow or deny rule decides and ends the walk. If none
   matches, the policy's defaultEffect decides.
3. Matching rate_limit and cap rules reached before the deciding rule (all of
   them when the default decides) apply, but only to requests that are allowed;
   a denied request is not counted against any rate limit.
4. Caps are checked first, in rule order: the first exceeded cap rejects the
   request with RESOURCE_EXHAUSTED (it is never clamped).
5. Then every applicable rate limit must have a token. If any bucket is empty the
   request is rejected with RESOURCE_EXHAUSTED naming the rule with the longest
   wait and that wait as retry-after; no bucket is charged. Otherwise one token is
   taken from each.
"""

from __future__ import annotations

import fnmatch
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from memsidecar.sidecar.calls import CallInfo
from memsidecar.sidecar.errors import MemError, PermissionDenied, ResourceExhausted
from memsidecar.sidecar.identity import Identity
from memsidecar.sidecar.policy.buckets import BucketId, RateBuckets, RuleKey
from memsidecar.sidecar.policy.model import Caps, Effect, KeyField, PolicySpec, Rate, Rule

MonotonicClock = Callable[[], float]

_INT_TYPES = (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64)
_UINT_TYPES = (FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_UINT64)


def _scalar(message: Message, name: str, cpp_types: tuple[int, ...]) -> Any:
    fd = message.DESCRIPTOR.fields_by_name.get(name)
    if fd is None or fd.cpp_type not in cpp_types or fd.is_repeated:
        return None
    return getattr(message, name)


def _positive(message: Message, name: str) -> int | None:
    value = _scalar(message, name, _INT_TYPES + _UINT_TYPES)
    return int(value) if isinstance(value, int) and value > 0 else None


def _namespace(message: Message) -> str:
    value = _scalar(message, "namespace", (FieldDescriptor.CPPTYPE_STRING,))
    if isinstance(value, str):
        return value
    # Request streams whose first message is a header (artifact.put).
    fd = message.DESCRIPTOR.fields_by_name.get("header")
    if (
        fd is not None
        and fd.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        and not fd.is_repeated
        and message.HasField("header")
    ):
        header: Message = getattr(message, fd.name)
        inner = _scalar(header, "namespace", (FieldDescriptor.CPPTYPE_STRING,))
        if isinstance(inner, str):
            return inner
    return ""


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """What policy sees of one call. None / "" = the request does not say."""

    tenant: str
    agent: str
    block: str
    namespace: str
    # "<block>.<method>", e.g. "kv.put", as CallInfo.op.
    op: str
    top_k: int | None = None
    limit: int | None = None
    size_bytes: int | None = None
    # The request field `limit` was read from ("limit" or "last_n"), for error messages.
    limit_field: str = "limit"

    @property
    def method(self) -> str:
        return self.op.partition(".")[2]

    def describe(self) -> str:
        where = f" in namespace {self.namespace!r}" if self.namespace else ""
        return f"{self.op} by tenant {self.tenant!r} agent {self.agent!r}{where}"

    @classmethod
    def from_message(
        cls, identity: Identity, call_info: CallInfo, request_message: Message | None
    ) -> PolicyRequest:
        """Build the request from the caller, the method and the (first) request message.

        Reads `namespace` (or `header.namespace`), `top_k`, and `limit` or `last_n`
        when the message has such fields; 0 means "not given" (the block's default
        applies), so it is read as None. size_bytes is the message's ByteSize().
        Pass None for a request stream that has not sent its first message."""
        base = cls(
            tenant=identity.tenant,
            agent=identity.agent,
            block=call_info.block,
            namespace="",
            op=call_info.op,
        )
        if request_message is None:
            return base
        limit, limit_field = _positive(request_message, "limit"), "limit"
        if limit is None and (last_n := _positive(request_message, "last_n")) is not None:
            limit, limit_field = last_n, "last_n"
        return cls(
            tenant=base.tenant,
            agent=base.agent,
            block=base.block,
            namespace=_namespace(request_message),
            op=base.op,
            top_k=_positive(request_message, "top_k"),
            limit=limit,
            size_bytes=request_message.ByteSize(),
            limit_field=limit_field,
        )


@dataclass(frozen=True)
class ByteCap:
    """The tightest maxBytes cap that applied to an allowed request. A request stream
    (artifact.put) can use it to bound the bytes of the whole stream."""

    max_bytes: int
    rule: str
    message: str | None = None

    def exceeded(self, size_bytes: int) -> bool:
        return size_bytes > self.max_bytes

    def error(self, size_bytes: int, what: str) -> ResourceExhausted:
        text = (
            f"{what} of {size_bytes} bytes exceeds the maxBytes cap of {self.max_bytes} bytes "
            f"set by policy rule {self.rule!r}; send at most {self.max_bytes} bytes"
        )
        return ResourceExhausted(_with_message(text, self.message))


@dataclass(frozen=True)
class Decision:
    """The outcome of one decide() call.

    effect: "allow" (the request may proceed), "deny" (an allow/deny rule or the
    default said no), "rate_limit" or "cap" (allowed, but that limit rejected it).
    rule: the rule responsible (None when defaultEffect decided an allow or deny).
    error: None when allowed, else the MemError to raise as is.
    """

    effect: Effect
    rule: str | None
    policy_version: str
    error: MemError | None = None
    # Seconds until a rate-limited request could pass (effect "rate_limit" only).
    retry_after: float | None = None
    # The rate_limit and cap rules that applied to an allowed request, in rule order.
    applied: tuple[str, ...] = ()
    byte_cap: ByteCap | None = None

    @property
    def allowed(self) -> bool:
        return self.error is None

    def raise_if_rejected(self) -> None:
        if self.error is not None:
            raise self.error


def _with_message(text: str, message: str | None) -> str:
    return f"{text} ({message})" if message else text


def _glob_regex(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns or "*" in patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _fits(regex: re.Pattern[str] | None, value: str) -> bool:
    return regex is None or regex.match(value) is not None


@dataclass(frozen=True)
class _CompiledRule:
    index: int
    name: str
    effect: Effect
    message: str | None
    tenants: re.Pattern[str] | None
    agents: re.Pattern[str] | None
    blocks: re.Pattern[str] | None
    namespaces: re.Pattern[str] | None
    # Ops patterns with a dot match the whole op, the others the method name.
    any_op: bool
    full_ops: re.Pattern[str] | None
    methods: re.Pattern[str] | None
    rate: Rate | None
    caps: Caps | None
    key_fields: tuple[KeyField, ...] = field(default=())

    @classmethod
    def compile(cls, index: int, rule: Rule) -> _CompiledRule:
        ops = rule.match.ops
        any_op = not ops or "*" in ops
        full = [p for p in ops if "." in p]
        methods = [p for p in ops if "." not in p]
        return cls(
            index=index,
            name=rule.name,
            effect=rule.effect,
            message=rule.message,
            tenants=_glob_regex(rule.match.tenants),
            agents=_glob_regex(rule.match.agents),
            blocks=_glob_regex(rule.match.blocks),
            namespaces=_glob_regex(rule.match.namespaces),
            any_op=any_op,
            full_ops=re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in full))
            if full
            else None,
            methods=re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in methods))
            if methods
            else None,
            rate=rule.rate,
            caps=rule.caps,
            key_fields=tuple(rule.rate.key) if rule.rate is not None else (),
        )

    def matches(self, req: PolicyRequest) -> bool:
        return (
            _fits(self.tenants, req.tenant)
            and _fits(self.agents, req.agent)
            and _fits(self.blocks, req.block)
            and _fits(self.namespaces, req.namespace)
            and self._op_fits(req)
        )

    def _op_fits(self, req: PolicyRequest) -> bool:
        if self.any_op:
            return True
        if self.full_ops is not None and self.full_ops.match(req.op):
            return True
        return self.methods is not None and self.methods.match(req.method) is not None

    def bucket(self, req: PolicyRequest) -> BucketId:
        values = {
            "tenant": req.tenant,
            "agent": req.agent,
            "namespace": req.namespace,
            "op": req.op,
        }
        return (self.name, self.key_fields, tuple(values[k] for k in self.key_fields))

    def cap_error(self, req: PolicyRequest) -> ResourceExhausted | None:
        caps = self.caps
        if caps is None:
            return None
        checks = (
            ("top_k", req.top_k, caps.top_k, "topK"),
            (req.limit_field, req.limit, caps.limit, "limit"),
        )
        for wire, value, cap, cap_name in checks:
            if value is not None and cap is not None and value > cap:
                text = (
                    f"{wire} {value} exceeds the {cap_name} cap of {cap} set by policy rule "
                    f"{self.name!r} for {req.describe()}; ask for at most {cap}"
                )
                return ResourceExhausted(_with_message(text, self.message))
        if req.size_bytes is not None and caps.max_bytes is not None:
            cap_bytes = ByteCap(caps.max_bytes, self.name, self.message)
            if cap_bytes.exceeded(req.size_bytes):
                return cap_bytes.error(req.size_bytes, f"the request for {req.describe()}")
        return None


def _retry_after(wait: float) -> float:
    """Whole milliseconds, rounded up, at least one."""
    return max(0.001, math.ceil(wait * 1000 - 1e-6) / 1000)


class PolicyEngine:
    """An immutable compiled rule set. Build a new engine to change the rules."""

    __slots__ = ("_buckets", "_clock", "_default", "_rules", "_spec", "_version")

    def __init__(
        self,
        spec: PolicySpec,
        clock: MonotonicClock = time.monotonic,
        buckets: RateBuckets | None = None,
    ) -> None:
        self._spec = spec
        self._version = spec.version()
        self._default = spec.default_effect
        self._rules = tuple(_CompiledRule.compile(i, r) for i, r in enumerate(spec.rules))
        self._clock = clock
        self._buckets = buckets if buckets is not None else RateBuckets()

    @property
    def spec(self) -> PolicySpec:
        return self._spec

    @property
    def version(self) -> str:
        return self._version

    @property
    def buckets(self) -> RateBuckets:
        return self._buckets

    def rate_rule_keys(self) -> frozenset[RuleKey]:
        """(rule name, key fields) of every rate_limit rule: the buckets this set uses."""
        return frozenset((r.name, r.key_fields) for r in self._rules if r.rate is not None)

    def decide(self, req: PolicyRequest) -> Decision:
        limits: list[_CompiledRule] = []
        deciding: _CompiledRule | None = None
        for rule in self._rules:
            if not rule.matches(req):
                continue
            if rule.effect in ("allow", "deny"):
                deciding = rule
                break
            limits.append(rule)
        name = deciding.name if deciding is not None else None
        effect = deciding.effect if deciding is not None else self._default

        if effect == "deny":
            if deciding is None:
                text = (
                    f"no policy rule allows {req.describe()} and the policy's defaultEffect is "
                    "deny; add an allow rule that matches it"
                )
            else:
                text = _with_message(
                    f"policy rule {deciding.name!r} denies {req.describe()}", deciding.message
                )
            return Decision("deny", name, self._version, error=PermissionDenied(text))

        byte_cap: ByteCap | None = None
        for rule in limits:
            if rule.caps is None:
                continue
            error = rule.cap_error(req)
            if error is not None:
                return Decision("cap", rule.name, self._version, error=error)
            max_bytes = rule.caps.max_bytes
            if max_bytes is not None and (byte_cap is None or max_bytes < byte_cap.max_bytes):
                byte_cap = ByteCap(max_bytes, rule.name, rule.message)

        now = self._clock()
        charged: list[tuple[_CompiledRule, BucketId, Rate]] = []
        worst: tuple[float, _CompiledRule, Rate] | None = None
        for rule in limits:
            if rule.rate is None:
                continue
            bucket = rule.bucket(req)
            wait = self._buckets.wait_seconds(bucket, rule.rate.per_second, rule.rate.burst, now)
            if wait > 0 and (worst is None or wait > worst[0]):
                worst = (wait, rule, rule.rate)
            charged.append((rule, bucket, rule.rate))
        if worst is not None:
            wait, rule, rate = worst
            retry = _retry_after(wait)
            keyed = (
                "per " + ", ".join(rule.key_fields)
                if rule.key_fields
                else "shared by all matching requests"
            )
            text = _with_message(
                f"rate limit of policy rule {rule.name!r} ({rate.per_second:g}/s, burst "
                f"{rate.burst}, {keyed}) exceeded for {req.describe()}; "
                f"retry after {retry:.3f}s",
                rule.message,
            )
            return Decision(
                "rate_limit",
                rule.name,
                self._version,
                error=ResourceExhausted(text),
                retry_after=retry,
            )
        for _rule, bucket, rate in charged:
            self._buckets.take(bucket, rate.per_second, rate.burst, now)
        return Decision(
            "allow",
            name,
            self._version,
            applied=tuple(r.name for r in limits),
            byte_cap=byte_cap,
        )

"""The policy rule schema: what a policy YAML file holds, and what a MemoryPolicy
custom resource's spec will hold (minus its podSelector).

Field names are camelCase on the wire (``defaultEffect``, ``perSecond``, ``topK``,
``maxBytes``), as Kubernetes specs spell them, so a policy can be copied between a
file and a MemoryPolicy unchanged. The snake_case names (the Python attribute names)
are accepted too; giving both spellings of one field is an error. Unknown fields are
errors, so a typo never becomes a silently ignored setting.

`parse_policy` is the one entry point for untrusted data: it returns a PolicySpec or
raises PolicyError listing every problem, each naming the rule (index and name) and
the field.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from memsidecar.sidecar.models import StrictModel
from memsidecar.sidecar.policy.catalog import (
    BLOCKS,
    block_pattern_matches_something,
    known_methods,
    known_ops,
    op_pattern_matches_something,
    op_pattern_targets_full_op,
)
from memsidecar.sidecar.units import ByteSize

Effect = Literal["allow", "deny", "rate_limit", "cap"]
DefaultEffect = Literal["allow", "deny"]
KeyField = Literal["tenant", "agent", "namespace", "op"]
KEY_FIELDS: tuple[KeyField, ...] = ("tenant", "agent", "namespace", "op")

RULE_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$")
MAX_RULES = 1000
MAX_PATTERNS = 256


class PolicyError(ValueError):
    """A policy is invalid; `problems` holds one line per problem."""

    def __init__(self, origin: str, problems: list[str]) -> None:
        self.origin = origin
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid policy ({origin}):\n{lines}")


class PolicyModel(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
    )


def _plain_patterns(kind: str, patterns: list[str]) -> list[str]:
    for pattern in patterns:
        if not pattern or pattern != pattern.strip():
            raise ValueError(f"{kind} pattern {pattern!r} must be non-empty with no outer spaces")
    if len(set(patterns)) != len(patterns):
        raise ValueError(f"{kind} patterns repeat an entry: {patterns}")
    return patterns


def _check_tenants(patterns: list[str]) -> list[str]:
    return _plain_patterns("tenant", patterns)


def _check_agents(patterns: list[str]) -> list[str]:
    return _plain_patterns("agent", patterns)


def _check_namespaces(patterns: list[str]) -> list[str]:
    _plain_patterns("namespace", patterns)
    for pattern in patterns:
        if "/" in pattern:
            raise ValueError(
                f"namespace pattern {pattern!r} contains '/': namespaces match the namespace "
                "name only; name the block under blocks, e.g. blocks: [kv], namespaces: [scratch*]"
            )
    return patterns


def _check_blocks(patterns: list[str]) -> list[str]:
    _plain_patterns("block", patterns)
    for pattern in patterns:
        if not block_pattern_matches_something(pattern):
            raise ValueError(
                f"block pattern {pattern!r} matches no block; blocks are {', '.join(BLOCKS)}"
            )
    return patterns


def _check_ops(patterns: list[str]) -> list[str]:
    _plain_patterns("op", patterns)
    for pattern in patterns:
        if pattern.count(".") > 1:
            raise ValueError(f"op pattern {pattern!r} has more than one '.'; write e.g. 'kv.put'")
        if not op_pattern_matches_something(pattern):
            if op_pattern_targets_full_op(pattern):
                block = pattern.split(".", 1)[0]
                same_block = sorted(
                    op for op in known_ops() if fnmatch.fnmatchcase(op, block + ".*")
                )
                hint = f"; {block} ops are {', '.join(same_block)}" if same_block else ""
                raise ValueError(f"op pattern {pattern!r} matches no operation{hint}")
            raise ValueError(
                f"op pattern {pattern!r} matches no method of any block; methods are "
                f"{', '.join(sorted(known_methods()))}"
            )
    return patterns


def _patterns() -> Any:
    return Field(default_factory=list, max_length=MAX_PATTERNS)


class Match(PolicyModel):
    """Which requests a rule applies to. Each field is a list of globs (``*``, ``?``,
    ``[abc]``, case-sensitive); an empty list matches anything; a request matches
    when every field matches."""

    tenants: Annotated[list[str], AfterValidator(_check_tenants)] = _patterns()
    agents: Annotated[list[str], AfterValidator(_check_agents)] = _patterns()
    blocks: Annotated[list[str], AfterValidator(_check_blocks)] = _patterns()
    namespaces: Annotated[list[str], AfterValidator(_check_namespaces)] = _patterns()
    # "kv.put" / "kv.*" match the whole op; "put" / "list_*" match that method on any block.
    ops: Annotated[list[str], AfterValidator(_check_ops)] = _patterns()

    def matches_everything(self) -> bool:
        return all(
            not patterns or "*" in patterns
            for patterns in (self.tenants, self.agents, self.blocks, self.namespaces, self.ops)
        )


class Rate(PolicyModel):
    """A token bucket: `burst` tokens, refilled at `per_second`; a request takes one."""

    per_second: float = Field(gt=0, allow_inf_nan=False)
    burst: int = Field(ge=1)
    # Which request fields pick the bucket; [] = one bucket for every matching request.
    key: list[KeyField] = Field(default_factory=lambda: list(KEY_FIELDS))

    @field_validator("key")
    @classmethod
    def _unique_key(cls, value: list[KeyField]) -> list[KeyField]:
        if len(set(value)) != len(value):
            raise ValueError(f"key repeats a field: {value}")
        return value


PositiveSize = Annotated[ByteSize, Field(gt=0)]


class Caps(PolicyModel):
    """Upper bounds; a request over any of them is rejected (never clamped)."""

    top_k: int | None = Field(default=None, gt=0)
    limit: int | None = Field(default=None, gt=0)
    max_bytes: PositiveSize | None = None

    @model_validator(mode="after")
    def _some_cap(self) -> Caps:
        if self.top_k is None and self.limit is None and self.max_bytes is None:
            raise ValueError("caps sets nothing; give at least one of topK, limit, maxBytes")
        return self


class Rule(PolicyModel):
    name: str
    effect: Effect
    match: Match = Field(default_factory=Match)
    rate: Rate | None = None
    caps: Caps | None = None
    # Appended to the error a caller gets when this rule rejects a request.
    message: str | None = Field(default=None, max_length=1024)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not RULE_NAME_RE.match(value):
            raise ValueError(
                f"rule name {value!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _effect_fields(self) -> Rule:
        if self.effect == "rate_limit" and self.rate is None:
            raise ValueError(
                "rate is required for a rate_limit rule, e.g. rate: {perSecond: 10, burst: 20}"
            )
        if self.effect == "cap" and self.caps is None:
            raise ValueError("caps is required for a cap rule, e.g. caps: {topK: 50}")
        if self.effect != "rate_limit" and self.rate is not None:
            raise ValueError(f"rate is only used by rate_limit rules, not by a {self.effect} rule")
        if self.effect != "cap" and self.caps is not None:
            raise ValueError(f"caps is only used by cap rules, not by a {self.effect} rule")
        return self


class PolicySpec(PolicyModel):
    """An ordered rule list and the effect of a request no allow/deny rule matches."""

    default_effect: DefaultEffect = "allow"
    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)

    @model_validator(mode="after")
    def _rules_consistent(self) -> PolicySpec:
        problems: list[str] = []
        seen: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                problems.append(
                    f"rules[{index}] (name {rule.name!r}): name is already used by "
                    f"rules[{seen[rule.name]}]; rule names must be unique"
                )
            else:
                seen[rule.name] = index
        for index, rule in enumerate(self.rules):
            if rule.effect in ("allow", "deny") and rule.match.matches_everything():
                for later, unreachable in enumerate(self.rules[index + 1 :], start=index + 1):
                    problems.append(
                        f"rules[{later}] (name {unreachable.name!r}): unreachable, because "
                        f"rules[{index}] (name {rule.name!r}) above it {rule.effect}s every "
                        "request; move it above that rule or remove it"
                    )
                break
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def canonical_json(self) -> str:
        return json.dumps(
            self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
        )

    def version(self) -> str:
        """A short content hash: equal specs have equal versions."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]


def _rule_label(data: object, index: int) -> str:
    name = None
    if isinstance(data, dict):
        rules = data.get("rules")
        if isinstance(rules, list) and 0 <= index < len(rules) and isinstance(rules[index], dict):
            raw = rules[index].get("name")
            name = raw if isinstance(raw, str | int | float) else None
    return f"rules[{index}] (name {name!r})" if name is not None else f"rules[{index}] (unnamed)"


def _describe(err: Any, data: object) -> list[str]:
    loc = list(err["loc"])
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "string_type" and isinstance(err.get("input"), bool):
        msg += (
            f", got {err['input']}: YAML reads unquoted yes/no/on/off/true/false as booleans;"
            " quote the value"
        )
    prefix = ""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        prefix = _rule_label(data, loc[1])
        loc = loc[2:]
    field = ".".join(str(p) for p in loc)
    if not prefix and not field:
        # Spec-level checks already name their rules, one per line.
        return msg.split("\n")
    where = ": ".join(part for part in (prefix, field) if part)
    return [f"{where}: {msg}"]


def parse_policy(data: object, origin: str = "policy") -> PolicySpec:
    """Validate untrusted data into a PolicySpec, or raise PolicyError naming each problem."""
    if data is None:
        raise PolicyError(origin, ["the policy is empty; to allow everything write `rules: []`"])
    if not isinstance(data, dict):
        raise PolicyError(
            origin,
            [f"the policy must be a mapping of defaultEffect and rules, not {type(data).__name__}"],
        )
    try:
        return PolicySpec.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors():
            problems.extend(_describe(err, data))
        raise PolicyError(origin, problems) from exc

"""A MemoryStore object → the sidecar's YAML config, the secret env it needs, and checks.

Pure functions over the object as the API server returns it (a dict). The operator
calls `sidecar_config_map(store)` to create the ConfigMap the injected sidecars mount
(`memsidecar-<store>`, key `sidecar.yaml`), and the webhook calls `store_env(store)`
for the secret env of the injected container. Secrets are never written into the
config: a Postgres DSN becomes `options: {dsn_env: MEMSIDECAR_PG_DSN}` and the
container gets MEMSIDECAR_PG_DSN from the Secret by secretKeyRef.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from memsidecar.webhooks.contract import (
    API_VERSION,
    ARTIFACT_ROOT,
    CONFIG_KEY,
    ENV_PG_DSN,
    ENV_S3_ACCESS_KEY_ID,
    ENV_S3_SECRET_ACCESS_KEY,
    SOCKET_PATH,
    STORE_KIND,
    auth_secret_env,
    config_map_name,
    embedder_api_key_env,
)
from memsidecar.webhooks.fields import (
    BLOCK_DRIVERS,
    BLOCK_LIMITS,
    BLOCKS,
    DATABASE_DRIVERS,
    EMBEDDER_FIELDS,
    NAMESPACE_FIELDS,
    PGVECTOR_FIELDS,
    SESSION_FIELDS,
    SettingField,
)

# Socket callers are the pod's own containers (the socket's directory is an emptyDir only
# this pod mounts), but they run as other uids than the sidecar, so the socket must be
# connectable by anyone who can reach the file.
POD_SOCKET_MODE = "0666"
CONFIG_HASH_ANNOTATION = "memsidecar.io/config-hash"
STORE_LABEL = "memsidecar.io/store"

JSON = dict[str, Any]


class StoreSpecError(ValueError):
    """A MemoryStore cannot be rendered; `problems` names each bad field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _map(value: object, where: str, problems: list[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"{where} must be an object, not {type(value).__name__}")
        return {}
    return value


def store_spec(store: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = store.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def store_tenant(store: Mapping[str, Any]) -> str:
    """spec.tenant, else the store's Kubernetes namespace."""
    tenant = store_spec(store).get("tenant")
    if isinstance(tenant, str) and tenant:
        return tenant
    metadata = store.get("metadata") or {}
    namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    if isinstance(namespace, str) and namespace:
        return namespace
    raise StoreSpecError(["spec.tenant is unset and the store has no metadata.namespace"])


def block_driver(store: Mapping[str, Any], block: str) -> str:
    blocks = store_spec(store).get("blocks") or {}
    spec = blocks.get(block) if isinstance(blocks, Mapping) else None
    driver = spec.get("driver") if isinstance(spec, Mapping) else None
    return driver if isinstance(driver, str) and driver else BLOCK_DRIVERS[block][0]


def drivers_summary(store: Mapping[str, Any]) -> str:
    """'kv=postgres episodic=postgres semantic=pgvector artifact=s3 lease=postgres'."""
    return " ".join(f"{block}={block_driver(store, block)}" for block in BLOCKS)


def uses_postgres(store: Mapping[str, Any]) -> bool:
    return any(block_driver(store, block) in DATABASE_DRIVERS for block in BLOCKS)


def uses_s3(store: Mapping[str, Any]) -> bool:
    return block_driver(store, "artifact") == "s3"


def _settings(
    fields: tuple[SettingField, ...], given: Mapping[str, Any], where: str, problems: list[str]
) -> JSON:
    """camelCase CRD fields → the sidecar's snake_case settings; unknown fields are errors."""
    by_camel = {f.camel: f for f in fields}
    out: JSON = {}
    for key, value in given.items():
        known = by_camel.get(key)
        if known is None:
            allowed = ", ".join(sorted(by_camel)) or "none"
            problems.append(f"{where}.{key} is not a known field (known: {allowed})")
        elif value is not None:
            out[known.name] = value
    return out


def _glob_rank(pattern: str) -> tuple[int, int, int, str]:
    """Sort key: exact names first, then globs with more literal characters, '*' last."""
    if not any(ch in pattern for ch in "*?["):
        return (0, 0, 0, pattern)
    literal = len(pattern) - sum(pattern.count(ch) for ch in "*?[]")
    return (1, -literal, -len(pattern), pattern)


def order_namespaces(patterns: Mapping[str, Any]) -> JSON:
    """Order a namespaces map most specific first.

    The sidecar takes the first matching entry (exact names before globs); the API server
    does not keep a map's key order, so the renderer fixes one: exact names, then globs
    by the number of literal characters (descending), so 'team-a-*' wins over 'team-*'
    and '*' comes last.
    """
    return {key: patterns[key] for key in sorted(patterns, key=_glob_rank)}


def _namespaces(block: str, given: Mapping[str, Any], where: str, problems: list[str]) -> JSON:
    out: JSON = {}
    for pattern, settings in given.items():
        entry = _map(settings, f"{where}.{pattern}", problems)
        out[pattern] = _settings(NAMESPACE_FIELDS[block], entry, f"{where}.{pattern}", problems)
    return order_namespaces(out)


def _postgres_options(spec: Mapping[str, Any], problems: list[str]) -> JSON:
    postgres = _map(spec.get("postgres"), "spec.postgres", problems)
    ref = _map(postgres.get("dsnSecretRef"), "spec.postgres.dsnSecretRef", problems)
    if not ref.get("name"):
        problems.append(
            "spec.postgres.dsnSecretRef.name is required when a block's driver is postgres or "
            "pgvector: name the Secret holding the DSN"
        )
    options: JSON = {"dsn_env": ENV_PG_DSN}
    for camel, snake in (
        ("poolMin", "pool_min"),
        ("poolMax", "pool_max"),
        ("commandTimeoutSeconds", "command_timeout"),
        ("connectTimeoutSeconds", "connect_timeout"),
    ):
        if postgres.get(camel) is not None:
            options[snake] = postgres[camel]
    return options


def _s3_options(spec: Mapping[str, Any], problems: list[str]) -> JSON:
    s3 = _map(spec.get("s3"), "spec.s3", problems)
    if not s3.get("bucket"):
        problems.append("spec.s3.bucket is required when blocks.artifact.driver is s3")
    options: JSON = {"bucket": s3.get("bucket", "")}
    for camel, snake in (("endpoint", "endpoint"), ("region", "region")):
        if s3.get(camel) is not None:
            options[snake] = s3[camel]
    if s3.get("forcePathStyle") is not None:
        options["addressing_style"] = "path" if s3["forcePathStyle"] else "auto"
    if s3.get("credentialsSecretRef"):
        options["access_key_env"] = ENV_S3_ACCESS_KEY_ID
        options["secret_key_env"] = ENV_S3_SECRET_ACCESS_KEY
    return options


def _driver_options(
    block: str, driver: str, given: Mapping[str, Any], spec: Mapping[str, Any], problems: list[str]
) -> JSON:
    if driver in DATABASE_DRIVERS:
        return _postgres_options(spec, problems)
    if driver == "s3":
        return _s3_options(spec, problems)
    if driver == "localfs":
        options: JSON = {"root": ARTIFACT_ROOT}
        localfs = _map(given.get("localfs"), f"spec.blocks.{block}.localfs", problems)
        if localfs.get("fsync") is not None:
            options["fsync"] = localfs["fsync"]
        if localfs.get("staleTempSeconds") is not None:
            options["stale_temp_seconds"] = localfs["staleTempSeconds"]
        return options
    return {}


def _embedders(given: Mapping[str, Any], problems: list[str]) -> JSON:
    out: JSON = {}
    where = "spec.blocks.semantic.embedders"
    for name, raw in given.items():
        spec = _map(raw, f"{where}.{name}", problems)
        embedder: JSON = {"type": spec.get("type") or "fake"}
        for key in ("model", "url"):
            if spec.get(key) is not None:
                embedder[key] = spec[key]
        if spec.get("apiKeySecretRef"):
            embedder["api_key_env"] = embedder_api_key_env(name)
        rest = {
            k: v for k, v in spec.items() if k not in ("type", "model", "url", "apiKeySecretRef")
        }
        embedder.update(_settings(EMBEDDER_FIELDS, rest, f"{where}.{name}", problems))
        out[name] = embedder
    return out


def _block(
    block: str, given: Mapping[str, Any], spec: Mapping[str, Any], problems: list[str]
) -> JSON:
    where = f"spec.blocks.{block}"
    allowed = (
        {"driver", "namespaces", "limits"}
        | ({"embedders", "pgvector"} if block == "semantic" else set())
        | ({"localfs"} if block == "artifact" else set())
    )
    for key in given:
        if key not in allowed:
            problems.append(
                f"{where}.{key} is not a known field (known: {', '.join(sorted(allowed))})"
            )
    driver = given.get("driver") or BLOCK_DRIVERS[block][0]
    if driver not in BLOCK_DRIVERS[block]:
        problems.append(
            f"{where}.driver {driver!r} is not a {block} driver; "
            f"use one of {', '.join(BLOCK_DRIVERS[block])}"
        )
    out: JSON = {"driver": driver}
    options = _driver_options(block, driver, given, spec, problems)
    if options:
        out["options"] = options
    if given.get("namespaces") is not None:
        namespaces = _map(given["namespaces"], f"{where}.namespaces", problems)
        out["namespaces"] = _namespaces(block, namespaces, f"{where}.namespaces", problems)
    limits = _map(given.get("limits"), f"{where}.limits", problems)
    out.update(_settings(BLOCK_LIMITS[block], limits, f"{where}.limits", problems))
    if block == "semantic" and given.get("embedders") is not None:
        embedders = _map(given["embedders"], f"{where}.embedders", problems)
        out["embedders"] = _embedders(embedders, problems)
    if block == "semantic" and given.get("pgvector") is not None:
        pgvector = _map(given["pgvector"], f"{where}.pgvector", problems)
        out["pgvector"] = _settings(PGVECTOR_FIELDS, pgvector, f"{where}.pgvector", problems)
    return out


def _auth(given: Mapping[str, Any], problems: list[str]) -> JSON | None:
    """The `auth` section, or None when the store asks for the sidecar's default (ambient
    socket, no keys), so the rendered config does not depend on that section existing."""
    mode = given.get("mode") or "ambient"
    keys = given.get("keys") or []
    if mode == "ambient" and not keys and given.get("audience") is None:
        if given.get("leewaySeconds") is None:
            return None
    out: JSON = {"socket": mode}
    rendered: list[JSON] = []
    for index, raw in enumerate(keys):
        key = _map(raw, f"spec.auth.keys[{index}]", problems)
        entry: JSON = {"kid": key.get("kid"), "algorithm": key.get("algorithm", "paseto-v4-public")}
        if key.get("publicKey") is not None:
            entry["public_key"] = key["publicKey"]
        if key.get("secretRef"):
            entry["secret_env"] = auth_secret_env(index)
        if key.get("tenants") is not None:
            entry["tenants"] = list(key["tenants"])
        rendered.append(entry)
    out["keys"] = rendered
    if given.get("audience") is not None:
        out["audience"] = given["audience"]
    if given.get("leewaySeconds") is not None:
        out["leeway_seconds"] = given["leewaySeconds"]
    return out


def render_sidecar_config(store: Mapping[str, Any]) -> JSON:
    """The sidecar config (as load_config reads it) for pods using `store`.

    Raises StoreSpecError naming each field that cannot be rendered. Identity: the
    tenant is the store's; the agent id is per pod, set by the injected env
    MEMSIDECAR_IDENTITY__AGENT, which overrides the file.
    """
    problems: list[str] = []
    spec = store_spec(store)
    try:
        tenant = store_tenant(store)
    except StoreSpecError as exc:
        problems.extend(exc.problems)
        tenant = ""
    blocks_spec = _map(spec.get("blocks"), "spec.blocks", problems)
    for key in blocks_spec:
        if key not in (*BLOCKS, "session"):
            problems.append(
                f"spec.blocks.{key} is not a block (blocks: {', '.join(BLOCKS)}, session)"
            )
    blocks: JSON = {}
    for block in BLOCKS:
        given = _map(blocks_spec.get(block), f"spec.blocks.{block}", problems)
        blocks[block] = _block(block, given, spec, problems)
    session = _map(blocks_spec.get("session"), "spec.blocks.session", problems)
    session_settings = _settings(SESSION_FIELDS, session, "spec.blocks.session", problems)
    if session_settings:
        blocks["session"] = session_settings
    sidecar = _map(spec.get("sidecar"), "spec.sidecar", problems)
    config: JSON = {
        "listen": {"socket": SOCKET_PATH, "socket_mode": POD_SOCKET_MODE},
        "identity": {"tenant": tenant},
        "log_level": sidecar.get("logLevel") or "info",
        "blocks": blocks,
        # Injected sidecars enforce the MemoryPolicy objects of their namespace (namespace
        # and pod name come from the injected POD_NAMESPACE / POD_NAME env).
        "policy": {"kubernetes": {}},
    }
    auth = _auth(_map(spec.get("auth"), "spec.auth", problems), problems)
    if auth is not None:
        config["auth"] = auth
    if problems:
        raise StoreSpecError(problems)
    return config


def config_hash(config: Mapping[str, Any]) -> str:
    """A short content hash of a rendered config: equal configs, equal hashes."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def render_sidecar_yaml(store: Mapping[str, Any]) -> str:
    """The rendered config as the YAML text stored in the ConfigMap."""
    metadata = store.get("metadata") or {}
    name = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
    header = (
        f"# memsidecar sidecar config rendered by the operator from MemoryStore {name}.\n"
        "# Edit the MemoryStore, not this file: the operator overwrites it.\n"
    )
    return header + yaml.safe_dump(render_sidecar_config(store), sort_keys=False)


def sidecar_config_map(store: Mapping[str, Any]) -> JSON:
    """The ConfigMap (memsidecar-<store>) the injected sidecars mount, owned by the store so
    it is garbage-collected with it."""
    metadata = store.get("metadata") or {}
    name = str(metadata.get("name", ""))
    config = render_sidecar_config(store)
    owner: JSON = {
        "apiVersion": API_VERSION,
        "kind": STORE_KIND,
        "name": name,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    if metadata.get("uid"):
        owner["uid"] = metadata["uid"]
    out: JSON = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(name),
            "namespace": metadata.get("namespace"),
            "labels": {
                "app.kubernetes.io/name": "memsidecar",
                "app.kubernetes.io/component": "sidecar-config",
                "app.kubernetes.io/managed-by": "memsidecar-operator",
                STORE_LABEL: name,
            },
            "annotations": {CONFIG_HASH_ANNOTATION: config_hash(config)},
            "ownerReferences": [owner],
        },
        "data": {CONFIG_KEY: render_sidecar_yaml(store)},
    }
    return out


def _secret_env(name: str, secret: str, key: str) -> JSON:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def store_env(store: Mapping[str, Any]) -> list[JSON]:
    """Env vars of the injected sidecar that carry the store's secrets (by secretKeyRef):
    the Postgres DSN when a block uses the database, the S3 key pair when artifacts are
    on S3 with static credentials, embedder API keys, HS256 token secrets."""
    spec = store_spec(store)
    env: list[JSON] = []
    if uses_postgres(store):
        ref = (spec.get("postgres") or {}).get("dsnSecretRef") or {}
        if ref.get("name"):
            env.append(_secret_env(ENV_PG_DSN, ref["name"], ref.get("key") or "dsn"))
    if uses_s3(store):
        creds = (spec.get("s3") or {}).get("credentialsSecretRef") or {}
        if creds.get("name"):
            env.append(
                _secret_env(
                    ENV_S3_ACCESS_KEY_ID,
                    creds["name"],
                    creds.get("accessKeyIdKey") or "AWS_ACCESS_KEY_ID",
                )
            )
            env.append(
                _secret_env(
                    ENV_S3_SECRET_ACCESS_KEY,
                    creds["name"],
                    creds.get("secretAccessKeyKey") or "AWS_SECRET_ACCESS_KEY",
                )
            )
    semantic = ((spec.get("blocks") or {}).get("semantic")) or {}
    for name, embedder in sorted((semantic.get("embedders") or {}).items()):
        ref = (embedder or {}).get("apiKeySecretRef") or {}
        if ref.get("name"):
            env.append(
                _secret_env(embedder_api_key_env(name), ref["name"], ref.get("key") or "apiKey")
            )
    for index, key in enumerate((spec.get("auth") or {}).get("keys") or []):
        ref = (key or {}).get("secretRef") or {}
        if ref.get("name"):
            env.append(_secret_env(auth_secret_env(index), ref["name"], ref.get("key") or "secret"))
    return env


def secret_names(store: Mapping[str, Any]) -> list[str]:
    """Every Secret the injected sidecar reads (for the operator's readiness checks)."""
    names: list[str] = []
    for var in store_env(store):
        secret = var["valueFrom"]["secretKeyRef"]["name"]
        if secret not in names:
            names.append(secret)
    return names


# --- validation ------------------------------------------------------------------------


def _spec_path(loc: tuple[int | str, ...]) -> str:
    """A sidecar config location → the MemoryStore field it came from, where one exists."""
    parts = [str(p) for p in loc]
    if len(parts) == 2 and parts[0] == "blocks":
        return f"spec.blocks.{parts[1]}"
    if len(parts) >= 3 and parts[0] == "blocks" and parts[1] in BLOCKS:
        block, field = parts[1], parts[2]
        limit = {f.name: f.camel for f in BLOCK_LIMITS[block]}
        if field in limit:
            return f"spec.blocks.{block}.limits.{limit[field]}"
        if field == "namespaces" and len(parts) >= 5:
            ns = {f.name: f.camel for f in NAMESPACE_FIELDS[block]}
            return f"spec.blocks.{block}.namespaces.{parts[3]}.{ns.get(parts[4], parts[4])}"
        if field == "pgvector" and len(parts) >= 4:
            pg = {f.name: f.camel for f in PGVECTOR_FIELDS}
            return f"spec.blocks.{block}.pgvector.{pg.get(parts[3], parts[3])}"
        if field == "embedders" and len(parts) >= 5:
            emb = {f.name: f.camel for f in EMBEDDER_FIELDS}
            return f"spec.blocks.{block}.embedders.{parts[3]}.{emb.get(parts[4], parts[4])}"
        return "spec.blocks." + ".".join(parts[1:])
    if len(parts) >= 3 and parts[:2] == ["blocks", "session"]:
        session = {f.name: f.camel for f in SESSION_FIELDS}
        return f"spec.blocks.session.{session.get(parts[2], parts[2])}"
    if parts and parts[0] == "identity":
        return "spec.tenant"
    if parts and parts[0] == "auth":
        return "spec.auth" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts[1:])
    return "sidecar config " + ".".join(parts)


def _check(
    model: type[BaseModel] | TypeAdapter[Any], data: object, prefix: tuple[str, ...]
) -> list[str]:
    try:
        if isinstance(model, TypeAdapter):
            model.validate_python(data)
        else:
            model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{_spec_path(prefix + tuple(err['loc']))}: {msg}")
        return problems
    return []


def validate_store(store: Mapping[str, Any]) -> list[str]:
    """Every problem that would stop a sidecar from starting with this store's config,
    each naming the MemoryStore field; [] when the store is valid.

    Renders the config and validates it with the sidecar's own settings models (so a
    semantic namespace naming an undefined embedder, a default over its maximum, an
    invalid tenant... are caught before any pod runs). Env vars are not consulted.
    """
    try:
        config = render_sidecar_config(store)
    except StoreSpecError as exc:
        return list(exc.problems)
    from memsidecar.sidecar.config import (
        BlocksSettings,
        IdentitySettings,
        ListenSettings,
        SidecarConfig,
    )

    problems: list[str] = []
    problems += _check(ListenSettings, config["listen"], ("listen",))
    problems += _check(IdentitySettings, config["identity"], ("identity",))
    problems += _check(BlocksSettings, config["blocks"], ("blocks",))
    level_type: Any = SidecarConfig.model_fields["log_level"].annotation
    log_level: TypeAdapter[Any] = TypeAdapter(level_type)
    problems += _check(log_level, config["log_level"], ("log_level",))
    if "auth" in config:
        from memsidecar.sidecar.auth.settings import AuthSettings

        problems += _check(AuthSettings, config["auth"], ("auth",))
    env_names = [var["name"] for var in store_env(store)]
    for name in sorted({n for n in env_names if env_names.count(n) > 1}):
        problems.append(
            f"spec.blocks.semantic.embedders: two embedder names map to the env var {name}; "
            "rename one (names differing only by '-' and '_' collide)"
        )
    return problems

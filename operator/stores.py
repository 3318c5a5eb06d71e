"""MemoryStore reconciliation: validate, render the sidecar config into its ConfigMap,
check the backends, migrate the database once, and keep `status` true.

Level-based and idempotent: every run reads the store (fresh from the API), the
world, and writes only what differs. A second run on the same input writes nothing:
the ConfigMap is left alone when it already holds the rendered config, and the
status is patched only when a field would change (conditions keep their
lastTransitionTime unless their status flips). The operator never writes a spec.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from memsidecar.operator import conditions as cond
from memsidecar.operator.backends import Probe, S3Target, check_postgres, check_s3, describe_dsn
from memsidecar.operator.conditions import Clock, Condition
from memsidecar.operator.kube import Kube, KubeError, core_path, group_path
from memsidecar.webhooks.contract import (
    ENV_PG_DSN,
    ENV_S3_ACCESS_KEY_ID,
    ENV_S3_SECRET_ACCESS_KEY,
    GROUP,
    STORE_KIND,
    STORE_PLURAL,
    VERSION,
    config_map_name,
)
from memsidecar.webhooks.fields import DATABASE_DRIVERS
from memsidecar.webhooks.store import (
    CONFIG_HASH_ANNOTATION,
    StoreSpecError,
    drivers_summary,
    render_sidecar_config,
    sidecar_config_map,
    store_env,
    store_spec,
    uses_postgres,
    uses_s3,
    validate_store,
)

log = logging.getLogger("memsidecar.operator.stores")

JSON = dict[str, Any]
# (body of the object, event type Normal|Warning, reason, message)
EventSink = Callable[[Mapping[str, Any], str, str, str], None]

OWNED_TYPES = (cond.READY, cond.BACKEND_REACHABLE, cond.MIGRATED, cond.RECONCILING, cond.STALLED)
BACKEND_ENV = frozenset({ENV_PG_DSN, ENV_S3_ACCESS_KEY_ID, ENV_S3_SECRET_ACCESS_KEY})


def store_path(namespace: str, name: str | None = None) -> str:
    return group_path(GROUP, VERSION, STORE_PLURAL, namespace, name)


# --- pure parts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigMapResult:
    """What happened to the store's ConfigMap: created, updated, unchanged, conflict."""

    action: str
    name: str
    message: str = ""

    @property
    def conflict(self) -> bool:
        return self.action == "conflict"


@dataclass
class Observation:
    """What one reconcile found; `store_status` turns it into the status to write."""

    spec_problems: list[str] = field(default_factory=list)
    config_map: ConfigMapResult | None = None
    config_hash: str | None = None
    # Secrets the sidecar needs besides the backends' (embedder API keys, token secrets).
    secret_problems: list[Probe] = field(default_factory=list)
    # None: not checked (invalid spec).
    backend: Probe | None = None
    # The Migrated condition to write, or its type name to keep the existing one.
    migrated: Condition | str = cond.MIGRATED


def _ready(obs: Observation, config_map: str) -> tuple[Condition, bool]:
    """The Ready condition, and whether the problem is one only a human can fix (Stalled)."""
    if obs.spec_problems:
        return (
            Condition(
                cond.READY,
                "False",
                "InvalidSpec",
                "the spec cannot be used: " + "; ".join(obs.spec_problems),
            ),
            True,
        )
    if obs.config_map is not None and obs.config_map.conflict:
        return Condition(cond.READY, "False", "ConfigMapConflict", obs.config_map.message), True
    if obs.backend is not None and not obs.backend.ok:
        return Condition(cond.READY, "False", obs.backend.reason, obs.backend.message), False
    if isinstance(obs.migrated, Condition) and not obs.migrated.true:
        return Condition(cond.READY, "False", obs.migrated.reason, obs.migrated.message), False
    if obs.secret_problems:
        first = obs.secret_problems[0]
        message = "; ".join(p.message for p in obs.secret_problems)
        return Condition(cond.READY, "False", first.reason, message), False
    return (
        Condition(
            cond.READY,
            "True",
            "Ready",
            f"sidecars of pods using this store read their config from ConfigMap {config_map}",
        ),
        False,
    )


def store_status(body: Mapping[str, Any], obs: Observation, now: datetime.datetime) -> JSON:
    """The status fragment to write for `body` given what was observed (pure). A kept
    Migrated condition (obs.migrated is its type name) is one that says True."""
    metadata = body.get("metadata") or {}
    name = str(metadata.get("name", ""))
    generation = int(metadata.get("generation") or 0)
    current = body.get("status") or {}
    existing = current.get("conditions") or []
    cm_name = config_map_name(name)

    ready, stalled = _ready(obs, cm_name)
    backend: Condition | str
    if obs.backend is None:
        backend = Condition(
            cond.BACKEND_REACHABLE, "Unknown", "NotChecked", "not checked while the spec is invalid"
        )
    elif obs.backend.ok:
        backend = Condition(cond.BACKEND_REACHABLE, "True", obs.backend.reason, obs.backend.message)
    else:
        backend = Condition(
            cond.BACKEND_REACHABLE, "False", obs.backend.reason, obs.backend.message
        )
    migrated = obs.migrated
    if isinstance(migrated, str) and cond.find(existing, cond.MIGRATED) is None:
        migrated = Condition(
            cond.MIGRATED, "Unknown", "NotChecked", "not migrated while the spec is invalid"
        )
    desired: list[Condition | str] = [ready, backend, migrated]
    if not ready.true:
        progress = Condition(
            cond.STALLED if stalled else cond.RECONCILING, "True", ready.reason, ready.message
        )
        desired.append(progress)
    conditions = cond.merge(existing, desired, generation=generation, now=now, owned=OWNED_TYPES)
    status: JSON = {
        "observedGeneration": generation,
        "conditions": conditions,
        "reason": ready.reason,
        "message": "" if ready.true else cond.shorten(ready.message),
        "drivers": drivers_summary(body),
        "configMap": cm_name,
    }
    if obs.config_hash is not None:
        status["configHash"] = obs.config_hash
    elif current.get("configHash"):
        status["configHash"] = current["configHash"]
    return status


def owner_reference(store: Mapping[str, Any]) -> JSON:
    metadata = store.get("metadata") or {}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": STORE_KIND,
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def config_map_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> JSON | None:
    """The merge patch that makes `existing` hold `desired` (labels, annotations, owner,
    data), or None when it already does. Other labels, annotations and foreign owner
    references are kept."""
    have_meta = existing.get("metadata") or {}
    want_meta = desired.get("metadata") or {}
    patch_meta: JSON = {}
    for key in ("labels", "annotations"):
        have = have_meta.get(key) or {}
        want = want_meta.get(key) or {}
        diff = {k: v for k, v in want.items() if have.get(k) != v}
        if diff:
            patch_meta[key] = diff
    want_owner = (want_meta.get("ownerReferences") or [])[0]
    have_owners = list(have_meta.get("ownerReferences") or [])
    if want_owner not in have_owners:
        others = [
            o for o in have_owners if not (o.get("kind") == STORE_KIND and o.get("controller"))
        ]
        patch_meta["ownerReferences"] = [want_owner, *others]
    have_data = existing.get("data") or {}
    want_data = desired.get("data") or {}
    patch: JSON = {}
    data_diff: JSON = {k: v for k, v in want_data.items() if have_data.get(k) != v}
    data_diff.update({k: None for k in have_data if k not in want_data})
    if data_diff:
        patch["data"] = data_diff
    if existing.get("binaryData"):
        patch["binaryData"] = None
    if patch_meta:
        patch["metadata"] = patch_meta
    return patch or None


def config_map_is_ours(existing: Mapping[str, Any], store: Mapping[str, Any]) -> bool:
    """Whether the operator may overwrite `existing` for `store`: it is controlled by this
    store, by an earlier store of the same name (deleted and re-created), or is an
    orphan the operator made (its labels say so)."""
    metadata = existing.get("metadata") or {}
    name = (store.get("metadata") or {}).get("name")
    owners = metadata.get("ownerReferences") or []
    controller = next((o for o in owners if o.get("controller")), None)
    if controller is not None:
        return bool(controller.get("kind") == STORE_KIND and controller.get("name") == name)
    labels = metadata.get("labels") or {}
    return bool(
        labels.get("app.kubernetes.io/managed-by") == "memsidecar-operator"
        and labels.get("memsidecar.io/store") == name
    )


@dataclass(frozen=True)
class SecretRef:
    env: str
    secret: str
    key: str

    def describe(self, namespace: str) -> str:
        return f"Secret {namespace}/{self.secret} key {self.key!r}"


def secret_refs(store: Mapping[str, Any]) -> list[SecretRef]:
    refs = []
    for var in store_env(store):
        ref = var["valueFrom"]["secretKeyRef"]
        refs.append(SecretRef(var["name"], ref["name"], ref["key"]))
    return refs


def field_of(env: str) -> str:
    """The MemoryStore field a secret env var comes from, for messages."""
    if env == ENV_PG_DSN:
        return "spec.postgres.dsnSecretRef"
    if env in (ENV_S3_ACCESS_KEY_ID, ENV_S3_SECRET_ACCESS_KEY):
        return "spec.s3.credentialsSecretRef"
    if env.startswith("MEMSIDECAR_EMBEDDER_"):
        return "spec.blocks.semantic.embedders.*.apiKeySecretRef"
    return "spec.auth.keys[*].secretRef"


def migration_targets(config_blocks: Any) -> list[tuple[str, str, int]]:
    """(block, driver, schema version) of each block whose driver has migrations."""
    from memsidecar.sidecar.blocks import BLOCK_TYPES

    targets = []
    for block_type in BLOCK_TYPES:
        settings = getattr(config_blocks, block_type.name)
        registry = block_type.drivers
        if registry is None:
            continue
        migrations = registry.migrations(settings.driver)
        if migrations:
            targets.append((block_type.name, settings.driver, migrations[-1].version))
    return targets


def migrated_message(targets: list[tuple[str, str, int]], where: str) -> str:
    schema = ", ".join(f"{block} ({driver}) v{version}" for block, driver, version in targets)
    return f"schema up to date in postgres at {where}: {schema}"


def database_config(store: Mapping[str, Any], dsn: str) -> Any:
    """The store's rendered block settings with the real DSN (for migrate), never written
    anywhere: the ConfigMap only names the env var."""
    from memsidecar.sidecar.config import BlocksSettings, SidecarConfig

    rendered = render_sidecar_config(store)
    blocks: JSON = {}
    for block, settings in rendered["blocks"].items():
        settings = dict(settings)
        if settings.get("driver") in DATABASE_DRIVERS:
            options = {k: v for k, v in (settings.get("options") or {}).items() if k != "dsn_env"}
            options["dsn"] = dsn
            settings["options"] = options
        blocks[block] = settings
    return SidecarConfig.model_construct(blocks=BlocksSettings.model_validate(blocks))


# --- the reconciler -----------------------------------------------------------------------


@dataclass(frozen=True)
class StoreOutcome:
    ready: bool
    # A transient problem (backend, secret, migration): try again with backoff.
    retry: bool
    reason: str
    message: str
    status_written: bool
    config_map: str


class StoreReconciler:
    def __init__(
        self,
        kube: Kube,
        *,
        backend_timeout: float,
        migration_timeout: float,
        events: EventSink,
        clock: Clock = cond.utcnow,
    ) -> None:
        self.kube = kube
        self.backend_timeout = backend_timeout
        self.migration_timeout = migration_timeout
        self.events = events
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault(f"{namespace}/{name}", asyncio.Lock())

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop(f"{namespace}/{name}", None)

    async def reconcile(self, namespace: str, name: str) -> StoreOutcome | None:
        """Bring the store's ConfigMap and status in line; None if the store is gone."""
        async with self._lock(namespace, name):
            body = await self.kube.get(store_path(namespace, name))
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                return None
            return await self._reconcile(body)

    async def _reconcile(self, body: JSON) -> StoreOutcome:
        metadata = body.get("metadata") or {}
        namespace, name = str(metadata["namespace"]), str(metadata["name"])
        obs = Observation()
        obs.spec_problems = validate_store(body)
        secrets: dict[str, str] = {}
        if not obs.spec_problems:
            try:
                desired_cm = sidecar_config_map(body)
            except StoreSpecError as exc:
                obs.spec_problems = list(exc.problems)
            else:
                obs.config_hash = desired_cm["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
                obs.config_map = await self._ensure_config_map(body, desired_cm)
        if not obs.spec_problems:
            secrets, problems = await self._read_secrets(namespace, body)
            backend_problems = [p for env, p in problems if env in BACKEND_ENV]
            obs.secret_problems = [p for env, p in problems if env not in BACKEND_ENV]
            obs.backend = (
                backend_problems[0]
                if backend_problems
                else await self._check_backends(body, secrets)
            )
            obs.migrated = await self._migrate(body, secrets, obs.backend)
        status = store_status(body, obs, self.clock())
        written = False
        if cond.changed(body.get("status"), status):
            await self.kube.merge_patch(store_path(namespace, name) + "/status", {"status": status})
            written = True
        self._announce(body, status)
        ready = cond.find(status["conditions"], cond.READY) or {}
        stalled = cond.is_true(status["conditions"], cond.STALLED)
        is_ready = ready.get("status") == "True"
        return StoreOutcome(
            ready=is_ready,
            retry=not is_ready and not stalled,
            reason=str(ready.get("reason", "")),
            message=str(ready.get("message", "")),
            status_written=written,
            config_map=obs.config_map.action if obs.config_map else "skipped",
        )

    # --- steps ---------------------------------------------------------------------------

    async def _ensure_config_map(self, body: JSON, desired: JSON) -> ConfigMapResult:
        namespace = str(body["metadata"]["namespace"])
        name = str(desired["metadata"]["name"])
        path = core_path("configmaps", namespace, name)
        existing = await self.kube.get(path)
        if existing is None:
            try:
                await self.kube.create(core_path("configmaps", namespace), desired)
            except KubeError as exc:
                if not exc.conflict:
                    raise
                # Created concurrently; the next run compares it.
                return ConfigMapResult("unchanged", name)
            self.events(body, "Normal", "ConfigRendered", f"created ConfigMap {name}")
            return ConfigMapResult("created", name)
        if not config_map_is_ours(existing, body):
            return ConfigMapResult(
                "conflict",
                name,
                f"ConfigMap {namespace}/{name} exists and is not managed by this MemoryStore; "
                "delete or rename it so the operator can write the sidecar config there",
            )
        patch = config_map_patch(existing, desired)
        if patch is None:
            return ConfigMapResult("unchanged", name)
        await self.kube.merge_patch(path, patch)
        self.events(body, "Normal", "ConfigRendered", f"updated ConfigMap {name}")
        return ConfigMapResult("updated", name)

    async def _read_secrets(
        self, namespace: str, body: JSON
    ) -> tuple[dict[str, str], list[tuple[str, Probe]]]:
        """Values of the store's secret env vars, and a problem per missing one."""
        values: dict[str, str] = {}
        problems: list[tuple[str, Probe]] = []
        cache: dict[str, JSON | None] = {}
        forbidden: set[str] = set()
        for ref in secret_refs(body):
            where = field_of(ref.env)
            if ref.secret not in cache and ref.secret not in forbidden:
                try:
                    cache[ref.secret] = await self.kube.get(
                        core_path("secrets", namespace, ref.secret)
                    )
                except KubeError as exc:
                    if exc.status != 403:
                        raise
                    forbidden.add(ref.secret)
            if ref.secret in forbidden:
                problems.append(
                    (
                        ref.env,
                        Probe(
                            False,
                            "SecretForbidden",
                            f"the operator may not read Secret {namespace}/{ref.secret} "
                            "(403): its ClusterRole needs get on secrets",
                        ),
                    )
                )
                continue
            secret = cache[ref.secret]
            if secret is None:
                problems.append(
                    (
                        ref.env,
                        Probe(
                            False,
                            "SecretNotFound",
                            f"Secret {namespace}/{ref.secret} not found; create it with key "
                            f"{ref.key!r} (named by {where})",
                        ),
                    )
                )
                continue
            data = secret.get("data") or {}
            if ref.key not in data:
                keys = ", ".join(sorted(data)) or "none"
                problems.append(
                    (
                        ref.env,
                        Probe(
                            False,
                            "SecretKeyMissing",
                            f"Secret {namespace}/{ref.secret} has no key {ref.key!r} (it has: "
                            f"{keys}); add it or set the key in {where}",
                        ),
                    )
                )
                continue
            try:
                values[ref.env] = base64.b64decode(data[ref.key]).decode("utf-8").strip()
            except (binascii.Error, UnicodeDecodeError):
                problems.append(
                    (
                        ref.env,
                        Probe(
                            False,
                            "SecretInvalid",
                            f"{ref.describe(namespace)} is not UTF-8 text",
                        ),
                    )
                )
        return values, problems

    async def _check_backends(self, body: JSON, secrets: Mapping[str, str]) -> Probe:
        namespace = str(body["metadata"]["namespace"])
        probes: list[Probe] = []
        refs = {ref.env: ref for ref in secret_refs(body)}
        if uses_postgres(body):
            source = refs[ENV_PG_DSN].describe(namespace)
            probes.append(await check_postgres(secrets[ENV_PG_DSN], source, self.backend_timeout))
        if uses_s3(body):
            s3 = store_spec(body).get("s3") or {}
            creds = s3.get("credentialsSecretRef") or {}
            target = S3Target(
                bucket=str(s3.get("bucket", "")),
                endpoint=s3.get("endpoint"),
                region=s3.get("region"),
                force_path_style=bool(s3.get("forcePathStyle", False)),
                access_key_id=secrets.get(ENV_S3_ACCESS_KEY_ID),
                secret_access_key=secrets.get(ENV_S3_SECRET_ACCESS_KEY),
                source=f"Secret {namespace}/{creds['name']}"
                if creds.get("name")
                else "the operator's default AWS credentials",
            )
            probes.append(await check_s3(target, self.backend_timeout))
        if not probes:
            return Probe(
                True,
                "NoExternalBackend",
                "every block keeps its data in the pod (memory or local disk); nothing to reach",
            )
        failed = [p for p in probes if not p.ok]
        if failed:
            return Probe(False, failed[0].reason, "; ".join(p.message for p in failed))
        return Probe(True, "Reachable", "; ".join(p.message for p in probes) + " reachable")

    async def _migrate(
        self, body: JSON, secrets: Mapping[str, str], backend: Probe | None
    ) -> Condition | str:
        if not uses_postgres(body):
            return Condition(
                cond.MIGRATED,
                "True",
                "NoDatabase",
                "no block keeps its data in Postgres; nothing to migrate",
            )
        dsn = secrets.get(ENV_PG_DSN)
        existing = cond.find((body.get("status") or {}).get("conditions"), cond.MIGRATED)
        if dsn is None:
            return self._waiting(existing)
        config = database_config(body, dsn)
        where = describe_dsn(dsn)
        targets = migration_targets(config.blocks)
        expected = migrated_message(targets, where)
        generation = int(body["metadata"].get("generation") or 0)
        if (
            existing is not None
            and existing.get("status") == "True"
            and existing.get("message") == expected
            and existing.get("observedGeneration") == generation
        ):
            return cond.MIGRATED
        if backend is None or not backend.ok:
            if existing is not None and existing.get("message") == expected:
                return cond.MIGRATED if existing.get("status") == "True" else self._waiting(None)
            return self._waiting(existing)
        return await self._run_migrations(body, config, where, expected)

    @staticmethod
    def _waiting(existing: Mapping[str, Any] | None) -> Condition | str:
        if existing is not None and existing.get("status") == "True":
            # The schema was migrated; it stays so while the database is away.
            return cond.MIGRATED
        return Condition(
            cond.MIGRATED,
            "Unknown",
            "WaitingForBackend",
            "the schema migration runs once postgres is reachable",
        )

    async def _run_migrations(
        self, body: JSON, config: Any, where: str, expected: str
    ) -> Condition:
        from memsidecar.sidecar.migrate import migrate

        try:
            results = await asyncio.wait_for(migrate(config), self.migration_timeout)
        except TimeoutError:
            return Condition(
                cond.MIGRATED,
                "False",
                "MigrationFailed",
                f"migrating postgres at {where} took over {self.migration_timeout:g}s; it "
                "is retried (each block's migration is one transaction)",
            )
        except Exception as exc:  # the database's answer, whatever it is, goes to status
            log.warning("migration of %s failed: %s", where, exc, exc_info=True)
            return Condition(
                cond.MIGRATED,
                "False",
                "MigrationFailed",
                f"migrating postgres at {where} failed: {type(exc).__name__}: {exc}",
            )
        applied = [r for r in results if r.applied]
        if applied:
            detail = ", ".join(f"{r.block} to v{r.version} ({r.applied})" for r in applied)
            self.events(body, "Normal", "Migrated", f"migrated postgres at {where}: {detail}")
        return Condition(cond.MIGRATED, "True", "SchemaUpToDate", expected)

    def _announce(self, body: JSON, status: Mapping[str, Any]) -> None:
        """Events for the state changes of Ready and BackendReachable."""
        before = (body.get("status") or {}).get("conditions") or []
        after = status["conditions"]
        for type_ in (cond.BACKEND_REACHABLE, cond.READY):
            old = cond.find(before, type_)
            new = cond.find(after, type_)
            if new is None or new.get("status") == "Unknown":
                continue
            if old is not None and old.get("status") == new.get("status"):
                continue
            if new.get("status") == "True":
                self.events(body, "Normal", str(new["reason"]), f"{type_}: {new['message']}")
            else:
                self.events(body, "Warning", str(new["reason"]), f"{type_}: {new['message']}")

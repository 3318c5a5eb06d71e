"""The injection contract (DESIGN.md section 7), point by point, on the pure function."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from memsidecar.webhooks.contract import SOCKET_DIR, SOCKET_PATH
from memsidecar.webhooks.injection import (
    InjectionSettings,
    InvalidAnnotation,
    StoreNotFound,
    agent_id,
    inject,
)
from tests.webhooks.support import SETTINGS, apply_patch, pod, postgres_minio_store, store


def injected(p: dict[str, Any], s: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return apply_patch(p, inject(p, store() if s is None else s, SETTINGS, **kw))


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = [i["name"] for i in items]
    assert len(names) == len(set(names)), f"duplicate names: {names}"
    return {i["name"]: i for i in items}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def mounts_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def sidecar_of(p: dict[str, Any]) -> dict[str, Any]:
    sidecar: dict[str, Any] = p["spec"]["initContainers"][0]
    return sidecar


# --- opting in -----------------------------------------------------------------------------


def test_pod_without_the_annotation_is_untouched() -> None:
    assert inject(pod(annotations={}), store(), SETTINGS) == []
    assert inject(pod(annotations={"other": "x"}), None, SETTINGS) == []


@pytest.mark.parametrize("value", ["false", "False", " false "])
def test_inject_false_opts_out(value: str) -> None:
    assert inject(pod({"memsidecar.io/inject": value}), None, SETTINGS) == []


@pytest.mark.parametrize("value", ["True", "TRUE", "true"])
def test_inject_true_in_any_case_opts_in(value: str) -> None:
    assert inject(pod({"memsidecar.io/inject": value}), store(), SETTINGS) != []


@pytest.mark.parametrize("value", ["yes", "1", "ture", ""])
def test_an_unusable_inject_value_is_an_error_not_a_silent_skip(value: str) -> None:
    with pytest.raises(InvalidAnnotation, match=r'must be "true" or "false"'):
        inject(pod({"memsidecar.io/inject": value}), store(), SETTINGS)


# --- the store -----------------------------------------------------------------------------


def test_missing_store_raises_store_not_found_naming_it() -> None:
    with pytest.raises(StoreNotFound) as info:
        inject(pod({"memsidecar.io/inject": "true", "memsidecar.io/store": "prod"}), None, SETTINGS)
    assert info.value.message == (
        "MemoryStore team-a/prod does not exist; create it or set memsidecar.io/store"
    )
    assert (info.value.namespace, info.value.name) == ("team-a", "prod")


def test_missing_default_store_names_default_and_the_request_namespace() -> None:
    p = pod()
    del p["metadata"]["namespace"]  # pods from a ReplicaSet have none yet
    with pytest.raises(StoreNotFound, match="MemoryStore ns-x/default does not exist"):
        inject(p, None, SETTINGS, namespace="ns-x")


@pytest.mark.parametrize("name", ["Prod", "a_b", "-x", "x" * 243, "a/b"])
def test_invalid_store_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidAnnotation, match="is not a MemoryStore name"):
        inject(
            pod({"memsidecar.io/inject": "true", "memsidecar.io/store": name}), store(), SETTINGS
        )


def test_store_annotation_picks_the_config_map_and_env() -> None:
    p = injected(
        pod({"memsidecar.io/inject": "true", "memsidecar.io/store": "prod"}), store("prod")
    )
    volumes = by_name(p["spec"]["volumes"])
    assert volumes["memsidecar-config"]["configMap"]["name"] == "memsidecar-prod"
    assert env_of(p["spec"]["containers"][0])["MEMSIDECAR_STORE"] == "prod"
    assert env_of(sidecar_of(p))["MEMSIDECAR_STORE"] == "prod"


# --- identity ------------------------------------------------------------------------------


def test_agent_id_from_annotation_then_service_account_then_default() -> None:
    annotated = pod({"memsidecar.io/inject": "true", "memsidecar.io/agent-id": "planner"})
    annotated["spec"]["serviceAccountName"] = "sa-1"
    assert agent_id(annotated) == "planner"
    with_sa = pod(serviceAccountName="sa-1")
    assert agent_id(with_sa) == "sa-1"
    assert agent_id(pod()) == "default"
    p = injected(with_sa)
    assert env_of(sidecar_of(p))["MEMSIDECAR_IDENTITY__AGENT"] == "sa-1"
    assert env_of(p["spec"]["containers"][0])["MEMSIDECAR_AGENT_ID"] == "sa-1"


def test_tenant_is_the_store_namespace_unless_the_store_sets_one() -> None:
    assert env_of(sidecar_of(injected(pod())))["MEMSIDECAR_IDENTITY__TENANT"] == "team-a"
    p = injected(pod(), store(tenant="acme"))
    assert env_of(sidecar_of(p))["MEMSIDECAR_IDENTITY__TENANT"] == "acme"


def test_sidecar_knows_its_pod_through_the_downward_api() -> None:
    env = env_of(sidecar_of(injected(pod())))
    assert env["POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_UID"]["fieldRef"]["fieldPath"] == "metadata.uid"


# --- what is injected ----------------------------------------------------------------------


def test_native_sidecar_is_the_first_init_container() -> None:
    p = pod(initContainers=[{"name": "migrate", "image": "busybox"}])
    out = injected(p)
    names = [c["name"] for c in out["spec"]["initContainers"]]
    assert names == ["memsidecar", "migrate"]
    sidecar = sidecar_of(out)
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == [
        "memsidecar",
        "serve",
        "--config",
        "/etc/memsidecar/sidecar.yaml",
        "--socket",
        SOCKET_PATH,
        "--ready-file",
        "/tmp/ready",
    ]
    assert out["spec"]["initContainers"][1] == {"name": "migrate", "image": "busybox"}


def test_sidecar_mounts_socket_config_data_and_a_writable_tmp() -> None:
    out = injected(pod())
    volumes = by_name(out["spec"]["volumes"])
    assert volumes["memsidecar-socket"]["emptyDir"]["medium"] == "Memory"
    assert volumes["memsidecar-data"] == {"name": "memsidecar-data", "emptyDir": {}}
    assert volumes["memsidecar-tmp"] == {"name": "memsidecar-tmp", "emptyDir": {}}
    assert volumes["memsidecar-podinfo"]["downwardAPI"]["items"][0]["fieldRef"] == {
        "fieldPath": "metadata.labels"
    }
    sources = volumes["memsidecar-kube-api-access"]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    mounts = mounts_of(sidecar_of(out))
    assert mounts[SOCKET_DIR]["name"] == "memsidecar-socket"
    assert not mounts[SOCKET_DIR].get("readOnly")
    assert mounts["/etc/memsidecar"] == {
        "name": "memsidecar-config",
        "mountPath": "/etc/memsidecar",
        "readOnly": True,
    }
    assert mounts["/var/lib/memsidecar"]["name"] == "memsidecar-data"
    # readOnlyRootFilesystem: --ready-file /tmp/ready needs /tmp to be a volume.
    assert mounts["/tmp"]["name"] == "memsidecar-tmp"
    assert mounts["/etc/memsidecar-podinfo"]["readOnly"] is True
    assert mounts["/var/run/secrets/kubernetes.io/serviceaccount"]["readOnly"] is True


def test_every_app_container_gets_the_socket_and_env() -> None:
    out = injected(
        pod(
            containers=[
                {"name": "agent", "image": "a"},
                {"name": "tool", "image": "b", "env": [{"name": "X", "value": "1"}]},
            ]
        )
    )
    for container in out["spec"]["containers"]:
        env = env_of(container)
        assert env["MEMSIDECAR_SOCKET"] == SOCKET_PATH
        assert env["MEMSIDECAR_STORE"] == "default"
        assert env["MEMSIDECAR_AGENT_ID"] == "default"
        assert mounts_of(container)[SOCKET_DIR] == {
            "name": "memsidecar-socket",
            "mountPath": SOCKET_DIR,
            "readOnly": True,
        }
    assert env_of(out["spec"]["containers"][1])["X"] == "1"


def test_app_containers_never_get_the_store_secrets() -> None:
    out = injected(pod(), postgres_minio_store())
    app_env = env_of(out["spec"]["containers"][0])
    assert set(app_env) == {"MEMSIDECAR_SOCKET", "MEMSIDECAR_STORE", "MEMSIDECAR_AGENT_ID"}
    sidecar_env = env_of(sidecar_of(out))
    assert sidecar_env["MEMSIDECAR_PG_DSN"] == {
        "secretKeyRef": {"name": "memsidecar-pg", "key": "dsn"}
    }
    assert sidecar_env["MEMSIDECAR_S3_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "memsidecar-minio", "key": "rootUser"}
    }
    assert sidecar_env["MEMSIDECAR_EMBEDDER_OPENAI_SMALL_API_KEY"] == {
        "secretKeyRef": {"name": "openai-key", "key": "apiKey"}
    }


def test_init_containers_get_the_socket_only_when_named() -> None:
    init = [{"name": "seed", "image": "x"}, {"name": "other", "image": "y"}]
    plain = injected(pod(initContainers=copy.deepcopy(init)))
    assert "env" not in plain["spec"]["initContainers"][1]
    opted = injected(
        pod(
            {"memsidecar.io/inject": "true", "memsidecar.io/init-containers": "seed"},
            initContainers=copy.deepcopy(init),
        )
    )
    seed, other = opted["spec"]["initContainers"][1:]
    assert seed["name"] == "seed" and env_of(seed)["MEMSIDECAR_SOCKET"] == SOCKET_PATH
    assert mounts_of(seed)[SOCKET_DIR]["readOnly"] is True
    assert other == {"name": "other", "image": "y"}


def test_naming_an_unknown_init_container_is_an_error() -> None:
    p = pod({"memsidecar.io/inject": "true", "memsidecar.io/init-containers": "seed, nope"})
    p["spec"]["initContainers"] = [{"name": "seed", "image": "x"}]
    with pytest.raises(InvalidAnnotation, match="names nope, which is not an init container"):
        inject(p, store(), SETTINGS)


def test_probes_exec_memsidecar_probe_on_the_socket() -> None:
    sidecar = sidecar_of(injected(pod()))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = sidecar[probe]["exec"]["command"]
        assert command[:4] == ["memsidecar", "probe", "--socket", SOCKET_PATH]
    assert sidecar["livenessProbe"]["periodSeconds"] > sidecar["readinessProbe"]["periodSeconds"]
    startup = sidecar["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_restricted_security_context() -> None:
    sc = sidecar_of(injected(pod()))["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_image_and_resources_from_the_store_else_the_settings() -> None:
    default = sidecar_of(injected(pod()))
    assert default["image"] == SETTINGS.default_image
    assert default["imagePullPolicy"] == "IfNotPresent"
    assert default["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
    }
    custom = injected(pod(), postgres_minio_store())
    sidecar = sidecar_of(custom)
    assert sidecar["image"] == "registry.example.com/memsidecar:1.2.3"
    assert sidecar["imagePullPolicy"] == "Always"
    assert sidecar["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}}
    data = by_name(custom["spec"]["volumes"])["memsidecar-data"]
    assert data["emptyDir"] == {"sizeLimit": "2Gi"}
    own = InjectionSettings(default_image="img:2", default_resources={"limits": {"cpu": "1"}})
    p = pod()
    sidecar = apply_patch(p, inject(p, store(), own))["spec"]["initContainers"][0]
    assert sidecar["image"] == "img:2" and sidecar["resources"] == {"limits": {"cpu": "1"}}


def test_marker_annotation_is_added_with_an_escaped_path() -> None:
    p = pod()
    ops = inject(p, store(), SETTINGS)
    assert {
        "op": "add",
        "path": "/metadata/annotations/memsidecar.io~1status",
        "value": "injected",
    } in ops
    out = apply_patch(p, ops)
    assert out["metadata"]["annotations"] == {
        "memsidecar.io/inject": "true",
        "memsidecar.io/status": "injected",
    }


# --- JSON patch shape ----------------------------------------------------------------------


def test_absent_arrays_are_added_whole() -> None:
    p = pod()
    ops = inject(p, store(), SETTINGS)
    paths = {op["path"]: op for op in ops}
    assert isinstance(paths["/spec/volumes"]["value"], list)
    assert isinstance(paths["/spec/initContainers"]["value"], list)
    assert isinstance(paths["/spec/containers/0/env"]["value"], list)
    assert isinstance(paths["/spec/containers/0/volumeMounts"]["value"], list)
    assert all(op["op"] == "add" for op in ops)


def test_present_arrays_are_appended_to() -> None:
    p = pod(
        containers=[
            {
                "name": "agent",
                "image": "a",
                "env": [{"name": "A", "value": "1"}],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            }
        ],
        volumes=[{"name": "work", "emptyDir": {}}],
        initContainers=[{"name": "init", "image": "x"}],
    )
    ops = inject(p, store(), SETTINGS)
    paths = [op["path"] for op in ops]
    assert "/spec/volumes/-" in paths and "/spec/volumes" not in paths
    assert "/spec/containers/0/env/-" in paths
    assert "/spec/containers/0/volumeMounts/-" in paths
    assert "/spec/initContainers/0" in paths
    out = apply_patch(p, ops)
    assert out["spec"]["volumes"][0] == {"name": "work", "emptyDir": {}}
    assert out["spec"]["containers"][0]["env"][0] == {"name": "A", "value": "1"}
    assert mounts_of(out["spec"]["containers"][0])["/work"] == {
        "name": "work",
        "mountPath": "/work",
    }


# --- nothing of the user's is clobbered ----------------------------------------------------


def test_user_env_volumes_and_mount_paths_are_kept() -> None:
    user_volume = {"name": "memsidecar-data", "persistentVolumeClaim": {"claimName": "mine"}}
    user_mount = {"name": "shared", "mountPath": SOCKET_DIR + "/"}
    p = pod(
        containers=[
            {
                "name": "agent",
                "image": "a",
                "env": [
                    {"name": "MEMSIDECAR_SOCKET", "value": "/elsewhere.sock"},
                    {"name": "MEMSIDECAR_AGENT_ID", "value": "mine"},
                ],
                "volumeMounts": [user_mount],
            }
        ],
        volumes=[user_volume, {"name": "shared", "emptyDir": {}}],
    )
    out = injected(p)
    container = out["spec"]["containers"][0]
    env = env_of(container)
    assert env["MEMSIDECAR_SOCKET"] == "/elsewhere.sock"
    assert env["MEMSIDECAR_AGENT_ID"] == "mine"
    assert env["MEMSIDECAR_STORE"] == "default"
    assert [e["name"] for e in container["env"]].count("MEMSIDECAR_SOCKET") == 1
    assert container["volumeMounts"] == [user_mount]
    volumes = by_name(out["spec"]["volumes"])
    assert volumes["memsidecar-data"] == user_volume
    assert "memsidecar-socket" in volumes


# --- idempotence ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: pod(),
        lambda: pod(
            initContainers=[{"name": "i", "image": "x"}],
            volumes=[{"name": "v", "emptyDir": {}}],
            containers=[
                {"name": "a", "image": "a", "env": [], "volumeMounts": []},
                {"name": "b", "image": "b"},
            ],
        ),
        lambda: pod(
            {"memsidecar.io/inject": "true", "memsidecar.io/init-containers": "i"},
            initContainers=[{"name": "i", "image": "x"}],
        ),
    ],
)
def test_injecting_an_injected_pod_again_changes_nothing(make: Any) -> None:
    once = injected(make(), postgres_minio_store())
    assert inject(once, postgres_minio_store(), SETTINGS) == []
    # The store may even be gone by then: an injected pod needs nothing from it.
    assert inject(once, None, SETTINGS) == []


def test_reinvocation_reaches_containers_added_after_injection() -> None:
    once = injected(pod())
    once["spec"]["containers"].append({"name": "late", "image": "c"})
    ops = inject(once, None, SETTINGS)
    assert {op["path"] for op in ops} == {
        "/spec/containers/1/env",
        "/spec/containers/1/volumeMounts",
    }
    twice = apply_patch(once, ops)
    assert env_of(twice["spec"]["containers"][1])["MEMSIDECAR_SOCKET"] == SOCKET_PATH
    assert len(twice["spec"]["initContainers"]) == 1
    assert inject(twice, None, SETTINGS) == []


def test_a_users_own_container_named_memsidecar_is_left_alone() -> None:
    mine = pod(containers=[{"name": "memsidecar", "image": "mine"}])
    assert inject(mine, store(), SETTINGS) == []
    mine_init = pod(initContainers=[{"name": "memsidecar", "image": "mine"}])
    assert inject(mine_init, None, SETTINGS) == []


def test_a_marker_without_our_sidecar_is_left_alone() -> None:
    p = pod({"memsidecar.io/inject": "true", "memsidecar.io/status": "injected"})
    assert inject(p, None, SETTINGS) == []


def test_inject_does_not_mutate_its_input() -> None:
    p = pod(initContainers=[{"name": "i", "image": "x"}])
    s = postgres_minio_store()
    before = (copy.deepcopy(p), copy.deepcopy(s))
    inject(p, s, SETTINGS)
    assert (p, s) == before

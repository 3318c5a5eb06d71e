"""The CRD files: up to date with webhooks/crds.py, structural, described everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from memsidecar.sidecar.blocks import BLOCK_TYPES
from memsidecar.webhooks.crds import FILES, main, memorypolicy_crd, memorystore_crd
from memsidecar.webhooks.fields import BLOCK_DRIVERS

CRDS = Path(__file__).resolve().parents[2] / "crds"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `node` with its dotted path (maps as {}, lists as [])."""
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")


def all_nodes() -> Iterator[tuple[str, dict[str, Any]]]:
    for crd in (memorystore_crd(), memorypolicy_crd()):
        yield from walk(schema_of(crd), crd["spec"]["names"]["kind"])


def test_files_and_docs_are_generated_from_the_code(tmp_path: Path) -> None:
    assert main(["--check", str(CRDS), "--docs", str(DOCS / "crds.md")]) == 0
    stale = tmp_path / "crds"
    stale.mkdir()
    (stale / "memorystores.yaml").write_text("old\n")
    assert main(["--check", str(stale)]) == 1
    assert main([str(stale)]) == 0 and main(["--check", str(stale)]) == 0


@pytest.mark.parametrize("filename", sorted(FILES))
def test_file_parses_to_the_crd(filename: str) -> None:
    loaded = yaml.safe_load((CRDS / filename).read_text())
    assert loaded == FILES[filename]()


@pytest.mark.parametrize(
    ("crd", "kind", "plural", "short"),
    [
        (memorystore_crd(), "MemoryStore", "memorystores", "mstore"),
        (memorypolicy_crd(), "MemoryPolicy", "memorypolicies", "mpol"),
    ],
)
def test_names_scope_version_and_status(
    crd: dict[str, Any], kind: str, plural: str, short: str
) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.memsidecar.io"
    spec = crd["spec"]
    assert spec["group"] == "memsidecar.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind and spec["names"]["plural"] == plural
    assert spec["names"]["shortNames"] == [short]
    [version] = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    status = schema_of(crd)["properties"]["status"]["properties"]
    assert {"observedGeneration", "conditions", "reason", "message"} <= set(status)
    condition = status["conditions"]["items"]
    assert condition["required"] == ["type", "status", "lastTransitionTime", "reason", "message"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_printer_columns() -> None:
    def columns(crd: dict[str, Any]) -> dict[str, str]:
        return {
            c["name"]: c["jsonPath"]
            for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
            if not c.get("priority")
        }

    ready = '.status.conditions[?(@.type=="Ready")].status'
    assert columns(memorystore_crd()) == {
        "Ready": ready,
        "Reason": ".status.reason",
        "Drivers": ".status.drivers",
        "Age": ".metadata.creationTimestamp",
    }
    assert columns(memorypolicy_crd()) == {
        "Ready": ready,
        "Default": ".spec.defaultEffect",
        "Sidecars": ".status.sidecarsLoaded",
        "Age": ".metadata.creationTimestamp",
    }


def test_every_property_has_a_description() -> None:
    missing = [
        path
        for path, node in all_nodes()
        # Kubernetes forbids anything but `type` on the root metadata.
        if not node.get("description")
        and not path.endswith(".metadata")
        # Map values and list items are described by their map or list.
        and not path.endswith(("{}", "[]"))
    ]
    assert missing == []


def test_schemas_are_structural() -> None:
    for path, node in all_nodes():
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            assert "type" not in node, path
            continue
        assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean"), (
            path
        )
        assert "anyOf" not in node and "oneOf" not in node, path
        if node["type"] == "array":
            assert "items" in node and "maxItems" in node, path
        if node["type"] == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path
    assert schema_of(memorystore_crd())["properties"]["metadata"] == {"type": "object"}


def test_kubectl_explain_path_has_what_a_user_needs() -> None:
    kv = schema_of(memorystore_crd())["properties"]["spec"]["properties"]["blocks"]["properties"][
        "kv"
    ]
    assert set(kv["properties"]) == {"driver", "namespaces", "limits"}
    assert kv["properties"]["driver"]["enum"] == ["memory", "postgres"]
    assert "maxValueBytes" in kv["properties"]["limits"]["properties"]


def test_offered_drivers_include_every_driver_the_sidecar_has() -> None:
    for block_type in BLOCK_TYPES:
        if block_type.drivers is not None and block_type.name in BLOCK_DRIVERS:
            offered = set(BLOCK_DRIVERS[block_type.name])
            assert set(block_type.drivers.names) <= offered, block_type.name


def _rules(crd: dict[str, Any]) -> list[str]:
    return [
        rule["message"]
        for _, node in walk(schema_of(crd), "")
        for rule in node.get("x-kubernetes-validations", [])
    ]


def test_cel_rules_cover_the_cross_field_checks() -> None:
    store = " | ".join(_rules(memorystore_crd()))
    for needle in (
        "spec.postgres (with dsnSecretRef) is required",
        "spec.s3 (with bucket) is required",
        "defaultHeartbeatTimeout must be longer than defaultHeartbeatInterval",
        "model is required for an ollama or openai embedder",
        "token mode needs at least one key",
        "poolMin must not be over poolMax",
    ):
        assert needle in store
    policy = " | ".join(_rules(memorypolicy_crd()))
    for needle in ("rate is required for a rate_limit rule", "caps is required for a cap rule"):
        assert needle in policy


def test_reference_lists_every_field() -> None:
    text = (DOCS / "crds.md").read_text()
    for path, node in all_nodes():
        if path.endswith(("{}", "[]", ".metadata", ".apiVersion", ".kind")) or "." not in path:
            continue
        field = path.split(".", 1)[1].replace("{}.", ".<pattern>.").replace("[].", "[].")
        if "embedders.<pattern>" in field:
            field = field.replace("embedders.<pattern>", "embedders.<name>")
        if node.get("description"):
            assert f"| `{field}` |" in text, field

"""Generated CRDs: committed YAML matches the models, schemas are structural, every CEL rule's
inputs are bounded (kube-apiserver's cost estimator needs it) and every rule is evaluable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import cel as labcel
from lbspeaker.api import crdgen
from lbspeaker.api.constants import GROUP
from lbspeaker.api.models import KINDS

CRD_DIR = crdgen.DEFAULT_OUT
PLURALS = [
    "ipaddresspools",
    "l2advertisements",
    "bgpadvertisements",
    "bgppeers",
    "bfdprofiles",
    "configurationstates",
    "communities",
    "servicel2statuses",
    "servicebgpstatuses",
]


def _committed() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob(f"{GROUP}_*.yaml"))}


CRDS = _committed()


def _schemas() -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]) for name, doc in CRDS.items()]


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _unbounded(node: dict[str, Any], path: str) -> list[str]:
    """Strings without maxLength/enum, arrays without maxItems, maps without maxProperties."""
    bad = []
    for where, sub in _walk(node, path):
        kind = sub.get("type")
        if kind == "string" and "maxLength" not in sub and "enum" not in sub:
            bad.append(f"{where}: string without maxLength")
        elif kind == "array" and "maxItems" not in sub:
            bad.append(f"{where}: array without maxItems")
        elif (
            kind == "object"
            and isinstance(sub.get("additionalProperties"), dict)
            and "maxProperties" not in sub
        ):
            bad.append(f"{where}: map without maxProperties")
    return bad


def test_committed_crds_match_the_models() -> None:
    """Fails when manifests/crds/ differs from what the models generate.

    Fix: run `python -m lbspeaker.api.crdgen` and commit the result."""
    diffs = crdgen.check(CRD_DIR)
    assert diffs == [], "".join(diffs)


def test_check_detects_a_stale_file(tmp_path: Path) -> None:
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0
    target = tmp_path / f"{GROUP}_ipaddresspools.yaml"
    target.write_text(target.read_text().replace("maxItems: 256", "maxItems: 257"))
    (tmp_path / "stray.yaml").write_text("{}\n")
    diffs = crdgen.check(tmp_path)
    assert len(diffs) == 2 and "maxItems: 257" in diffs[0] and "stray.yaml" in diffs[1]
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1


def test_one_file_per_kind_and_kustomization() -> None:
    assert sorted(CRDS) == sorted(f"{GROUP}_{p}.yaml" for p in PLURALS)
    kust = yaml.safe_load((CRD_DIR / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization" and sorted(kust["resources"]) == sorted(CRDS)


@pytest.mark.parametrize("name", sorted(CRDS))
def test_crd_shape(name: str) -> None:
    doc = CRDS[name]
    spec = doc["spec"]
    plural = name.removeprefix(f"{GROUP}_").removesuffix(".yaml")
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["metadata"]["name"] == f"{plural}.{GROUP}"
    assert spec["group"] == GROUP and spec["scope"] == "Namespaced"
    assert spec["names"]["plural"] == plural
    assert spec["names"]["kind"] in KINDS
    assert "lbspeaker" in spec["names"]["categories"] and spec["names"]["shortNames"]
    [version] = spec["versions"]
    assert version["served"] and version["storage"]
    assert version["name"] == ("v1beta2" if plural == "bgppeers" else "v1beta1")
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["properties"]["metadata"] == {"type": "object"}
    columns = version["additionalPrinterColumns"]
    assert columns[-1] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    for column in columns[:-1]:  # every column points at a field the schema has
        node = schema
        for part in column["jsonPath"].split("[?")[0].lstrip(".").split("."):
            part = part.split("[")[0]
            node = node.get("items", node)["properties"][part]


def test_ipaddresspool_columns() -> None:
    version = CRDS[f"{GROUP}_ipaddresspools.yaml"]["spec"]["versions"][0]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    for wanted in ("Auto Assign", "Avoid Buggy IPs", "Addresses", "Assigned IPv4", "Available IPv4", "Age"):
        assert wanted in names


@pytest.mark.parametrize(("name", "schema"), _schemas(), ids=[n for n, _ in _schemas()])
def test_schema_is_structural(name: str, schema: dict[str, Any]) -> None:
    """No $ref/anyOf/oneOf/nullable/title, a type on every node, no additionalProperties beside properties."""
    for where, node in _walk(schema):
        for key in (
            "$ref",
            "anyOf",
            "oneOf",
            "allOf",
            "not",
            "nullable",
            "title",
            "$defs",
            "propertyNames",
            "const",
        ):
            assert key not in node, f"{name}{where}: {key}"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{name}{where}: no type"
        assert not ("properties" in node and "additionalProperties" in node), f"{name}{where}"
        if "default" in node:
            assert node["default"] is not None, f"{name}{where}"
        if node.get("x-kubernetes-list-type") == "map":
            for key in node["x-kubernetes-list-map-keys"]:
                item = node["items"]
                assert key in item.get("required", []) or "default" in item["properties"][key]


@pytest.mark.parametrize(("name", "schema"), _schemas(), ids=[n for n, _ in _schemas()])
def test_everything_a_rule_can_reach_is_bounded(name: str, schema: dict[str, Any]) -> None:
    """kube-apiserver rejects a CRD whose estimated CEL cost is unbounded: every string, list and map
    inside the scope of a rule needs maxLength/maxItems/maxProperties."""
    bad = []
    for where, node in _walk(schema):
        if node.get("x-kubernetes-validations"):
            bad += _unbounded(node, where)
    assert bad == [], f"{name}: {sorted(set(bad))}"


@pytest.mark.parametrize(("name", "schema"), _schemas(), ids=[n for n, _ in _schemas()])
def test_whole_schema_is_bounded(name: str, schema: dict[str, Any]) -> None:
    """Stricter than needed, so a rule added later never finds an unbounded field."""
    bad = [b for b in _unbounded(schema, "") if not b.startswith((".apiVersion", ".kind"))]
    assert bad == [], f"{name}: {bad}"


def test_bounds_check_can_fail() -> None:
    schema = {
        "type": "object",
        "x-kubernetes-validations": [{"rule": "true"}],
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "array", "items": {"type": "string", "maxLength": 1}},
            "c": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 1}},
        },
    }
    assert len(_unbounded(schema, "")) == 3


def _rules() -> list[tuple[str, str, str]]:
    out = []
    for name, schema in _schemas():
        for where, node in _walk(schema):
            out += [(name, where, r["rule"]) for r in node.get("x-kubernetes-validations", ())]
    return out


@pytest.mark.parametrize(("name", "where", "rule"), _rules(), ids=[f"{n}{w}" for n, w, _ in _rules()])
def test_every_rule_compiles_and_has_a_message(name: str, where: str, rule: str) -> None:
    labcel._program(rule)  # raises _Unsupported if lab/cel.py could not evaluate it
    for _, node in _walk(dict(CRDS[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])):
        for entry in node.get("x-kubernetes-validations", ()):
            assert entry.get("message"), entry


def test_metallb_examples_pass_openapi_and_cel() -> None:
    """The documented examples pass the whole schema (OpenAPI via jsonschema, then CEL), as on apply."""
    import jsonschema

    from tests.unit.test_api_models import METALLB_EXAMPLES

    by_kind = {doc["spec"]["names"]["kind"]: doc for doc in CRDS.values()}
    for obj in yaml.safe_load_all(METALLB_EXAMPLES):
        schema = by_kind[obj["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        jsonschema.validate(obj, schema)
        assert labcel.validate_rules(schema, labcel.apply_defaults(schema, obj)) == [], obj


def test_structural_postprocessing() -> None:
    """$refs inlined, Optional collapsed, int|str marked int-or-string, null defaults dropped."""
    from pydantic import BaseModel, Field

    class Inner(BaseModel):
        """Inner doc."""

        a: int = 1

    class Outer(BaseModel):
        inner: Inner | None = Field(default=None, description="wrapped", json_schema_extra={"x-k": 1})
        port: int | str = Field(max_length=15)
        maybe: list[str] | None = None
        required: Inner

    full = Outer.model_json_schema()
    got = crdgen.structural(full, full["$defs"])
    props = got["properties"]
    assert props["inner"] == {
        "description": "wrapped",
        "properties": {"a": {"default": 1, "type": "integer"}},
        "type": "object",
        "x-k": 1,
    }
    assert props["port"].get("x-kubernetes-int-or-string") is True and "anyOf" not in props["port"]
    assert props["maybe"] == {"items": {"type": "string"}, "type": "array"}
    assert props["required"]["description"] == "Inner doc."
    assert got["required"] == ["port", "required"] and "title" not in got and "$defs" not in got


def test_structural_rejects_what_kubernetes_cannot_express() -> None:
    with pytest.raises(crdgen.SchemaError):
        crdgen.structural({"anyOf": [{"type": "string"}, {"type": "boolean"}]}, {})

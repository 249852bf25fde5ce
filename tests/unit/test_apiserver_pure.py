"""Pure pieces of the lab API server: patches, selectors, schema defaulting/validation, allocators."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.apiserver import patches, schema
from lab.apiserver.errors import ApiError
from lab.apiserver.selectors import labels_match, parse_field_selector, parse_label_selector
from lab.apiserver.services import IPAllocator, PortAllocator, ServiceAllocator

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


# -- merge patch (RFC 7386 examples) ------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386(target: Any, patch: Any, result: Any) -> None:
    assert patches.merge_patch(target, patch) == result


@given(json_values)
def test_merge_patch_with_itself_is_identity_for_null_free_docs(doc: Any) -> None:
    def has_null(x: Any) -> bool:
        if x is None:
            return True
        if isinstance(x, dict):
            return any(has_null(v) for v in x.values())
        if isinstance(x, list):
            return any(has_null(v) for v in x)
        return False

    if not has_null(doc):
        assert patches.merge_patch(doc, doc) == doc


def test_json_patch_ops() -> None:
    doc = {"a": {"b": [1, 2]}, "c": 1}
    out = patches.json_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/1", "value": 9},
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/c", "value": 2},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e"},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "add", "path": "/x~1y", "value": True},
            {"op": "test", "path": "/e", "value": 2},
        ],
    )
    assert out == {"a": {"b": [9, 2, 3]}, "c": 2, "e": 2, "x/y": True}
    assert doc == {"a": {"b": [1, 2]}, "c": 1}  # input untouched
    with pytest.raises(ApiError) as e:
        patches.json_patch(doc, [{"op": "test", "path": "/c", "value": 5}])
    assert e.value.code == 422
    with pytest.raises(ApiError):
        patches.json_patch(doc, [{"op": "remove", "path": "/nope"}])


def test_strategic_merge_lists_by_key() -> None:
    cur = {
        "status": {"conditions": [{"type": "A", "status": "False"}, {"type": "B", "status": "True"}]},
        "metadata": {"finalizers": ["x"]},
        "spec": {
            "ports": [{"port": 80, "nodePort": 30001}, {"port": 443}],
            "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}],
            "tolerations": [{"key": "t"}],
        },
    }
    out = patches.strategic_merge_patch(
        cur,
        {
            "status": {"conditions": [{"type": "A", "status": "True"}, {"type": "C", "status": "True"}]},
            "metadata": {"finalizers": ["y"]},
            "spec": {
                "ports": [{"port": 80, "name": "http"}, {"port": 443, "$patch": "delete"}],
                "containers": [{"name": "c", "image": "i"}],
                "tolerations": [{"key": "u"}],
            },
        },
    )
    assert out["status"]["conditions"] == [
        {"type": "A", "status": "True"},
        {"type": "B", "status": "True"},
        {"type": "C", "status": "True"},
    ]
    assert out["metadata"]["finalizers"] == ["x", "y"]
    assert out["spec"]["ports"] == [{"port": 80, "nodePort": 30001, "name": "http"}]
    assert out["spec"]["containers"] == [{"name": "c", "ports": [{"containerPort": 8080}], "image": "i"}]
    assert out["spec"]["tolerations"] == [{"key": "u"}]  # no merge key: replaced
    out = patches.strategic_merge_patch(
        out,
        {
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]},
            "status": {"$patch": "replace", "phase": "P"},
        },
    )
    assert out["metadata"]["finalizers"] == ["y"] and out["status"] == {"phase": "P"}


# -- selectors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sel", "labels", "want"),
    [
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "c"}, False),
        ("a!=b", {}, True),
        ("a!=b", {"a": "b"}, False),
        ("a in (b, c),d", {"a": "c", "d": ""}, True),
        ("a in (b,c)", {}, False),
        ("a notin (b)", {}, True),
        ("a notin (b)", {"a": "b"}, False),
        ("a", {"a": ""}, True),
        ("!a", {"a": ""}, False),
        ("!a,b=c", {"b": "c"}, True),
        ("", {"x": "y"}, True),
        ("example.com/role in (x)", {"example.com/role": "x"}, True),
    ],
)
def test_label_selectors(sel: str, labels: dict[str, str], want: bool) -> None:
    assert labels_match(parse_label_selector(sel), {"metadata": {"labels": labels}}) is want


@pytest.mark.parametrize("bad", ["a in b", "!a in (b)", "(x)"])
def test_label_selector_syntax_errors(bad: str) -> None:
    with pytest.raises(ApiError) as e:
        parse_label_selector(bad)
    assert e.value.code == 400


def test_field_selectors_per_kind() -> None:
    reqs = parse_field_selector("spec.nodeName=n1,status.phase!=Failed", "pods")
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    assert all(r.matches(pod) for r in reqs)
    with pytest.raises(ApiError):
        parse_field_selector("spec.nodeName=n1", "services")
    ev = parse_field_selector("involvedObject.kind=Service,involvedObject.name=s", "events")
    assert all(r.matches({"involvedObject": {"kind": "Service", "name": "s"}}) for r in ev)


# -- schema ------------------------------------------------------------------------------------------------
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "default": 3, "maximum": 5},
                "s": {"type": "string", "nullable": True},
                "ios": {"x-kubernetes-int-or-string": True},
                "m": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"k": {"type": "string", "default": "d"}},
                    },
                },
                "keep": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "l": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"x": {"type": "integer", "default": 1}}},
                },
            },
        },
    },
}


def test_defaults_prune_validate() -> None:
    obj = {
        "apiVersion": "g/v1",
        "kind": "K",
        "metadata": {"name": "x", "labels": {"a": "b"}},
        "spec": {"m": {"one": {"junk": 1}}, "keep": {"z": {"y": 1}}, "l": [{}, {"x": 2, "y": 3}], "junk": 1},
        "junk": 2,
    }
    schema.apply_defaults(SCHEMA, obj)
    schema.prune(SCHEMA, obj, root=True)
    assert obj == {
        "apiVersion": "g/v1",
        "kind": "K",
        "metadata": {"name": "x", "labels": {"a": "b"}},
        "spec": {"n": 3, "m": {"one": {"k": "d"}}, "keep": {"z": {"y": 1}}, "l": [{"x": 1}, {"x": 2}]},
    }
    assert schema.validate(SCHEMA, obj) == []
    assert schema.validate(SCHEMA, {"spec": {"s": None, "ios": "50%"}}) == []
    assert schema.validate(SCHEMA, {"spec": {"ios": 5}}) == []
    errs = schema.validate(SCHEMA, {"spec": {"n": 9, "l": [{"x": "a"}]}})
    assert (
        "spec.l[0].x",
        'Invalid value: "string": spec.l[0].x in body must be of type integer: "string"',
    ) in errs
    assert ("spec.n", "Invalid value: 9: spec.n in body should be less than or equal to 5") in errs


# -- allocators --------------------------------------------------------------------------------------------
def test_ip_allocator_never_hands_out_twice() -> None:
    alloc = IPAllocator("10.0.0.0/29")  # .2-.6 usable
    got = [alloc.allocate() for _ in range(5)]
    assert got == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    with pytest.raises(ValueError):
        alloc.allocate()
    alloc.release("10.0.0.4")
    assert alloc.allocate() == "10.0.0.4"
    with pytest.raises(ValueError):
        alloc.allocate("10.0.0.4")


def test_port_allocator_range() -> None:
    alloc = PortAllocator(30000, 30001)
    assert {alloc.allocate(), alloc.allocate()} == {30000, 30001}
    with pytest.raises(ValueError):
        alloc.allocate()
    with pytest.raises(ValueError, match="valid range"):
        PortAllocator().allocate(80)


def test_service_type_change_frees_node_ports() -> None:
    sa = ServiceAllocator()
    svc: dict[str, Any] = {"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    sa.prepare(svc, None)
    sa.allocate(svc, None)
    port = svc["spec"]["ports"][0]["nodePort"]
    assert port in sa.ports.used
    new: dict[str, Any] = {
        "metadata": {"name": "s"},
        "spec": {"type": "ClusterIP", "ports": [{"port": 80}], "clusterIP": svc["spec"]["clusterIP"]},
    }
    sa.prepare(new, svc)
    sa.allocate(new, svc)
    sa.commit_release(svc, new)
    assert "nodePort" not in new["spec"]["ports"][0] and port not in sa.ports.used
    assert new["spec"]["clusterIP"] == svc["spec"]["clusterIP"]


# -- tables (kubectl columns) --------------------------------------------------------------------------------
def test_printer_column_jsonpath_subset() -> None:
    from lab.apiserver.tables import jsonpath

    obj = {
        "spec": {"a": [{"x": 1}, {"x": 2}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]},
    }
    assert jsonpath(obj, ".spec.a[1].x") == [2]
    assert jsonpath(obj, ".spec.a[*].x") == [1, 2]
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert jsonpath(obj, "{.spec.missing}") == []


def test_age_formatting() -> None:
    import time as _time

    from lab.apiserver.tables import age

    now = _time.time()
    stamp = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(now - 3 * 3600))
    assert age(stamp) == "3h"
    assert age(None) == "<unknown>"


def test_service_type_dependent_fields() -> None:
    sa = ServiceAllocator()
    bad: dict[str, Any] = {
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80}], "externalTrafficPolicy": "Local"},
    }
    with pytest.raises(ApiError) as e:
        sa.prepare(bad, None)
    assert e.value.code == 422 and "externalTrafficPolicy" in e.value.message
    lb: dict[str, Any] = {
        "metadata": {"name": "s"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "loadBalancerClass": "x"},
    }
    sa.prepare(lb, None)
    sa.allocate(lb, None)
    back = {"metadata": {"name": "s"}, "spec": {**lb["spec"], "type": "ClusterIP"}}
    sa.prepare(back, lb)
    assert {"externalTrafficPolicy", "allocateLoadBalancerNodePorts", "loadBalancerClass"}.isdisjoint(
        back["spec"]
    )


def test_list_type_set_refuses_a_repeated_entry_as_kube_does() -> None:
    """`x-kubernetes-list-type: set`: kube-apiserver answers `spec.names[2]: Duplicate value: "a"`."""
    sch: dict[str, Any] = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "names": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        "sels": {"type": "array", "x-kubernetes-list-type": "set",
                 "items": {"type": "object", "x-kubernetes-map-type": "atomic"}}}}}}
    assert schema.validate(sch, {"spec": {"names": ["a", "b"]}}) == []
    assert schema.validate(sch, {"spec": {"names": ["a", "b", "a"]}}) == [
        ("spec.names[2]", 'Duplicate value: "a"')]
    assert schema.validate(sch, {"spec": {"sels": [{"k": 1}, {"k": 1}]}}) == [
        ("spec.sels[1]", 'Duplicate value: {"k": 1}')]

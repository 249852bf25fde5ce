"""Models: MetalLB's documented examples parse, defaults are MetalLB's, bad input fails clearly."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from lbspeaker.api import models
from lbspeaker.api.models import (
    BGPAdvertisement,
    BGPPeer,
    Community,
    IPAddressPool,
    L2Advertisement,
    ServiceBGPStatus,
    ServiceL2Status,
    format_duration,
    parse_community,
    parse_duration,
    parse_object,
)

# MetalLB documentation examples (metallb.io apiVersion kept: migrating only changes the group).
METALLB_EXAMPLES = """
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: first-pool, namespace: metallb-system}
spec:
  addresses:
  - 192.168.10.0/24
  - 192.168.9.1-192.168.9.5
  - fc00:f853:0ccd:e799::/124
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: ns-pool, namespace: metallb-system}
spec:
  addresses: [192.168.20.0/24]
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 50
    namespaces: [namespace-a, namespace-b]
    namespaceSelectors:
    - matchLabels: {foo: bar}
    serviceSelectors:
    - matchExpressions:
      - {key: app, operator: In, values: [bar]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: example, namespace: metallb-system}
spec:
  ipAddressPools: [first-pool]
  interfaces: [eth0, eth1]
  nodeSelectors:
  - matchLabels: {kubernetes.io/hostname: NodeA}
  ipAddressPoolSelectors:
  - matchExpressions:
    - {key: ipaddresspool-name, operator: In, values: [first-pool]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: empty, namespace: metallb-system}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: local, namespace: metallb-system}
spec:
  ipAddressPools: [bgp-pool]
  aggregationLength: 32
  localPref: 100
  communities: [65535:65282, vpn-only, large:64512:1:2]
  peers: [peer1]
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: communities, namespace: metallb-system}
spec:
  communities:
  - {name: vpn-only, value: "1234:1"}
  - {name: NO_ADVERTISE, value: "65535:65282"}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: sample, namespace: metallb-system}
spec:
  myASN: 64500
  peerASN: 64501
  peerAddress: 10.0.0.1
  holdTime: 90s
  keepaliveTime: 30s
  passwordSecret: {name: secretname, namespace: metallb-system}
  bfdProfile: full-profile
  nodeSelectors:
  - matchExpressions:
    - {key: kubernetes.io/hostname, operator: In, values: [hostA, hostB]}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: dynamic, namespace: metallb-system}
spec: {myASN: 64500, dynamicASN: external, interface: eth1, connectTime: 10s, ebgpMultiHop: true}
---
apiVersion: metallb.io/v1beta1
kind: ServiceL2Status
metadata: {name: l2-xyz, namespace: metallb-system}
status: {node: kind-worker, serviceName: nginx, serviceNamespace: default, interfaces: [{name: eth0}]}
---
apiVersion: metallb.io/v1beta1
kind: ServiceBGPStatus
metadata: {name: bgp-xyz, namespace: metallb-system}
status: {node: kind-worker, serviceName: nginx, serviceNamespace: default, peers: [peer1, peer2]}
"""


@pytest.mark.parametrize(
    "doc", list(yaml.safe_load_all(METALLB_EXAMPLES)), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_metallb_examples_parse(doc: dict[str, Any]) -> None:
    obj = parse_object(doc)
    assert type(obj).__name__ == doc["kind"]
    assert obj.metadata.name == doc["metadata"]["name"]
    # Round trip: every field given comes back under the same (MetalLB) name.
    dumped = obj.model_dump(exclude_unset=True)
    for key, value in (doc.get("spec") or {}).items():
        assert dumped["spec"][key] == value


def _pool(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lbspeaker.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": "p", "namespace": "lbspeaker-system"},
        "spec": spec,
    }


def test_object_as_api_server_returns_it() -> None:
    """metadata noise, unknown fields and a status written by a newer controller are all accepted."""
    doc = _pool(addresses=["172.18.255.200-172.18.255.250"], someFutureField=1)
    doc["metadata"].update(
        {
            "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"a": "b"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        }
    )
    doc["status"] = {
        "assignedIPv4": 2,
        "availableIPv4": 49,
        "unknownCounter": 5,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Valid",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 3,
            }
        ],
    }
    pool = parse_object(doc)
    assert isinstance(pool, IPAddressPool)
    assert pool.metadata.resourceVersion == "42"
    assert pool.metadata.model_extra and "managedFields" in pool.metadata.model_extra
    assert pool.status.assignedIPv4 == 2
    assert pool.status.conditions[0].observedGeneration == 3
    assert [str(r) for r in pool.spec.ranges()] == ["172.18.255.200-172.18.255.250"]


@pytest.mark.parametrize(
    ("model", "doc", "expected"),
    [
        (
            IPAddressPool,
            _pool(addresses=["10.0.0.0/24"]),
            {"autoAssign": True, "avoidBuggyIPs": False, "serviceAllocation": None},
        ),
        (
            BGPAdvertisement,
            {"kind": "BGPAdvertisement"},
            {
                "aggregationLength": 32,
                "aggregationLengthV6": 128,
                "localPref": None,
                "communities": [],
                "ipAddressPools": [],
                "peers": [],
                "nodeSelectors": [],
            },
        ),
        (
            BGPPeer,
            {"kind": "BGPPeer", "spec": {"myASN": 1, "peerASN": 2, "peerAddress": "10.0.0.1"}},
            {
                "peerPort": 179,
                "holdTime": None,
                "enableGracefulRestart": False,
                "ebgpMultiHop": False,
                "disableMP": False,
                "dualStackAddressFamily": False,
            },
        ),
        (L2Advertisement, {"kind": "L2Advertisement"}, {"interfaces": [], "ipAddressPoolSelectors": []}),
    ],
)
def test_defaults_are_metallbs(
    model: type[models.CustomResource], doc: dict[str, Any], expected: dict[str, Any]
) -> None:
    spec = model.model_validate(doc).model_dump()["spec"]
    for key, value in expected.items():
        assert spec[key] == value, key


def test_bgppeer_api_version_is_v1beta2() -> None:
    assert BGPPeer.model_validate({"spec": {"myASN": 1}}).apiVersion == "lbspeaker.io/v1beta2"
    assert Community().apiVersion == "lbspeaker.io/v1beta1"


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"kind": "Nope", "spec": {}}, "kind"),
        ({"spec": {}}, "kind"),
        (_pool(addresses=["10.0.0.300/24"]), "addresses"),
        (_pool(addresses=["10.0.0.9-10.0.0.1"]), "addresses"),
        (_pool(), "addresses"),
        (_pool(addresses=["10.0.0.0/24"] * 257), "addresses"),
        (_pool(addresses=["10.0.0.0/24"], autoAssign="sometimes"), "autoAssign"),
        ({"kind": "BGPPeer", "spec": {"myASN": 0}}, "myASN"),
        ({"kind": "BGPPeer", "spec": {"myASN": 4294967296}}, "myASN"),
        ({"kind": "BGPPeer", "spec": {"myASN": 1, "peerPort": 0}}, "peerPort"),
        ({"kind": "BGPPeer", "spec": {"myASN": 1, "dynamicASN": "both"}}, "dynamicASN"),
        ({"kind": "BGPPeer", "spec": {"myASN": 1, "holdTime": "90 seconds"}}, "holdTime"),
        ({"kind": "BGPAdvertisement", "spec": {"aggregationLength": 33}}, "aggregationLength"),
        ({"kind": "BGPAdvertisement", "spec": {"aggregationLengthV6": 129}}, "aggregationLengthV6"),
        ({"kind": "BGPAdvertisement", "spec": {"aggregationLength": 0}}, "aggregationLength"),  # 0.0.0.0/0
        ({"kind": "BGPAdvertisement", "spec": {"aggregationLengthV6": 0}}, "aggregationLengthV6"),
        (
            {
                "kind": "L2Advertisement",
                "spec": {"nodeSelectors": [{"matchExpressions": [{"key": "a", "operator": "Maybe"}]}]},
            },
            "operator",
        ),
    ],
)
def test_bad_objects_raise_validation_error_naming_the_field(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_object(doc)
    assert where in str(info.value)


def test_status_kinds_parse_without_spec() -> None:
    l2 = parse_object({"kind": "ServiceL2Status", "status": {"node": "n1", "interfaces": [{"name": "eth0"}]}})
    assert isinstance(l2, ServiceL2Status) and l2.status.interfaces[0].name == "eth0"
    bgp = parse_object({"kind": "ServiceBGPStatus", "status": {"peers": ["a"]}})
    assert isinstance(bgp, ServiceBGPStatus) and bgp.status.peers == ["a"]


def test_label_selector_as_dict_is_plain() -> None:
    adv = parse_object(
        {
            "kind": "L2Advertisement",
            "spec": {
                "nodeSelectors": [
                    {"matchLabels": {"a": "b"}},
                    {"matchExpressions": [{"key": "k", "operator": "Exists"}]},
                ]
            },
        }
    )
    assert isinstance(adv, L2Advertisement)
    assert [s.as_dict() for s in adv.spec.nodeSelectors] == [
        {"matchLabels": {"a": "b"}},
        {"matchExpressions": [{"key": "k", "operator": "Exists"}]},
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("90s", 90.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("2h45m", 9900.0),
        ("1us", 1e-6),
        ("1µs", 1e-6),
        ("10ns", 1e-8),
        ("-3s", -3.0),
        (".5m", 30.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "90", "s", "1d", "1m30", "abc", "1 s", "1.5.2s", "--1s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (90, "1m30s"), (3600, "1h"), (3601, "1h0m1s"), (59, "59s")]
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**7))
def test_duration_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("holdTime", "500ms", "holdTime must be 0s (no keepalives) or between 3s and 65535s"),
        ("holdTime", "0.4s", "holdTime must be 0s"),
        ("holdTime", "2s", "holdTime must be 0s"),
        ("holdTime", "18h13m", "holdTime must be 0s"),
        ("holdTime", "90 seconds", "invalid duration '90 seconds': use e.g. 90s, 1m30s or 500ms"),
        ("holdTime", "-3s", "invalid duration '-3s': use e.g. 90s"),
        ("holdTime", "+90s", "invalid duration '+90s': use e.g. 90s"),
        ("holdTime", "1" * 40 + "s", "invalid duration"),
        ("connectTime", "0.5s", "connectTime must be between 1s and 65535s"),
        ("connectTime", "1.5s", "connectTime must be a whole number of seconds"),
        ("keepaliveTime", "1d", "invalid duration '1d'"),
    ],
)
def test_bad_durations_get_the_rule_not_the_pattern(field: str, value: str, message: str) -> None:
    """The CEL rules hold without the API server too, and the message is the friendly one."""
    with pytest.raises(ValidationError) as info:
        BGPPeer.model_validate({"spec": {"myASN": 1, field: value}})
    assert message in str(info.value)
    assert "pattern" not in str(info.value) and "^(" not in str(info.value)


@pytest.mark.parametrize(
    ("spec", "hold"),
    [({"holdTime": "0s"}, 0), ({"holdTime": "0"}, 0), ({"holdTime": "3s"}, 3), ({"holdTime": "3.5s"}, 3.5),
     ({"holdTime": "18h12m15s"}, 65535), ({"holdTime": "9s", "keepaliveTime": "3s"}, 9), ({}, 90),
     ({"keepaliveTime": "60s"}, 180), ({"keepaliveTime": "8h"}, 65535)],  # MetalLB: 3 x keepalive
)
def test_good_hold_times(spec: dict[str, str], hold: float) -> None:
    assert BGPPeer.model_validate({"spec": {"myASN": 1, **spec}}).spec.hold_time_seconds() == hold


def test_bgppeer_timer_helpers() -> None:
    peer = BGPPeer.model_validate({"spec": {"myASN": 1, "holdTime": "1m30s", "connectTime": "5s"}})
    assert peer.spec.hold_time_seconds() == 90
    assert peer.spec.keepalive_time_seconds() == 30
    assert peer.spec.connect_time_seconds() == 5
    bare = BGPPeer.model_validate({"spec": {"myASN": 1}})
    assert (bare.spec.hold_time_seconds(), bare.spec.connect_time_seconds()) == (90, None)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("65535:65282", (65535, 65282)),
        ("0:0", (0, 0)),
        ("large:64512:1:2", (64512, 1, 2)),
        ("large:4294967295:0:4294967295", (4294967295, 0, 4294967295)),
    ],
)
def test_parse_community(text: str, parts: tuple[int, ...]) -> None:
    assert parse_community(text) == parts


@pytest.mark.parametrize(
    "text",
    ["65536:1", "1:2:3", "large:1:2", "large:4294967296:1:1", "no-export", "", "1:", "+1:2", "\u0661:2"],
)
def test_parse_community_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="community"):
        parse_community(text)


def test_community_values_are_validated_in_python_too() -> None:
    with pytest.raises(ValidationError, match="community"):
        parse_object({"kind": "Community", "spec": {"communities": [{"name": "a", "value": "1:99999"}]}})
    with pytest.raises(ValidationError, match="community"):
        parse_object({"kind": "BGPAdvertisement", "spec": {"communities": ["1:99999"]}})
    adv = parse_object({"kind": "BGPAdvertisement", "spec": {"communities": ["alias-name", "1:2"]}})
    assert isinstance(adv, BGPAdvertisement)

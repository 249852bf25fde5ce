"""`lbctl migrate-metallb`: MetalLB's documented configuration examples convert, nothing is lost silently.

The inputs follow MetalLB's own documentation (metallb.universe.tf configuration pages and
the `configsamples/` of the MetalLB repository for the CRDs; the 0.12 documentation for
the legacy `config` ConfigMap), shortened but with the same fields.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
import yaml

from lbspeaker.api.models import parse_object
from lbspeaker.lbctl.cli import main
from lbspeaker.lbctl.migrate import convert_text

CRDS = """
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: first-pool
  namespace: metallb-system
  labels: {zone: a}
  resourceVersion: "42"
  uid: 0000-1111
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
    team: net
spec:
  addresses:
  - 192.168.10.0/24
  - 192.168.9.1-192.168.9.5
  - fc00:f853:0ccd:e799::/124
  autoAssign: false
status:
  assignedIPv4: 3
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: ippool-ns-service-alloc-sample
  namespace: metallb-system
spec:
  addresses:
  - 192.168.20.0/24
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
metadata:
  name: example
  namespace: metallb-system
spec:
  ipAddressPools: [first-pool]
  nodeSelectors:
  - matchLabels:
      kubernetes.io/hostname: NodeA
  interfaces: [eth0]
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: peer-with-secret
  namespace: metallb-system
spec:
  holdTime: 9m0s
  keepaliveTime: 0s
  myASN: 64512
  passwordSecret:
    name: secretname
    namespace: metallb-system
  peerASN: 64512
  peerAddress: 172.30.0.3
  peerPort: 179
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: peer-bfd
  namespace: metallb-system
spec:
  myASN: 64512
  peerASN: 64513
  peerAddress: 172.30.0.4
  bfdProfile: full1
  vrf: red
  connectTime: 120s
---
apiVersion: metallb.io/v1beta1
kind: BGPPeer
metadata:
  name: old-peer
  namespace: metallb-system
spec:
  myASN: 64512
  peerASN: 64514
  peerAddress: 10.0.0.1
  routerID: 10.10.10.10
  ebgpMultiHop: true
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: local
  namespace: metallb-system
spec:
  ipAddressPools: [bgp-pool]
  aggregationLength: 32
  localPref: 100
  communities: [NO_ADVERTISE, 65535:65282]
  peers: [peer-with-secret]
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata:
  name: community1
  namespace: metallb-system
spec:
  communities:
  - name: NO_ADVERTISE
    value: 65535:65282
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata:
  name: full1
  namespace: metallb-system
spec:
  receiveInterval: 380
  echoMode: true
  passiveMode: true
  minimumTtl: 250
---
apiVersion: metallb.io/v1beta1
kind: ServiceL2Status
metadata:
  name: l2-abc
  namespace: metallb-system
---
apiVersion: metallb.io/v1beta1
kind: ConfigurationState
metadata:
  name: speaker-kind-worker
  namespace: metallb-system
  labels: {metallb.io/component-type: speaker, metallb.io/node-name: kind-worker}
status:
  result: Invalid
  errorSummary: peer peer1 referencing non existing bfd profile my-bfd-profile
"""

LEGACY = """
apiVersion: v1
kind: ConfigMap
metadata:
  namespace: metallb-system
  name: config
data:
  config: |
    peers:
    - peer-address: 10.0.0.1
      peer-asn: 64501
      my-asn: 64500
      peer-port: 179
      hold-time: 120s
      keepalive-time: 30s
      router-id: 10.0.0.2
      source-address: 10.0.0.2
      ebgp-multihop: true
      password: yourPassword
      bfd-profile: bfdprofile1
      node-selectors:
      - match-labels:
          rack: frontend
        match-expressions:
        - key: network-speed
          operator: NotIn
          values: [slow]
    bgp-communities:
      bar: 64512:1234
    address-pools:
    - name: default
      protocol: layer2
      addresses:
      - 192.168.1.240-192.168.1.250
    - name: bgp-space
      protocol: bgp
      avoid-buggy-ips: true
      auto-assign: false
      addresses:
      - 198.51.100.0/24
      bgp-advertisements:
      - aggregation-length: 32
        localpref: 100
        communities: [bar]
      - aggregation-length: 24
    bfd-profiles:
    - name: bfdprofile1
      receive-interval: 179
      transmit-interval: 180
      detect-multiplier: 4
      echo-interval: 62
      echo-mode: false
      passive-mode: true
      minimum-ttl: 10
"""


def by_kind_name(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_crds_move_over_with_the_same_fields() -> None:
    result = convert_text(CRDS)
    objs = by_kind_name(result.objects)
    assert set(objs) == {
        ("IPAddressPool", "first-pool"),
        ("IPAddressPool", "ippool-ns-service-alloc-sample"),
        ("L2Advertisement", "example"),
        ("BGPPeer", "peer-with-secret"),
        ("BGPPeer", "peer-bfd"),
        ("BGPPeer", "old-peer"),
        ("BGPAdvertisement", "local"),
        ("Community", "community1"),
        ("BFDProfile", "full1"),
    }
    pool = objs[("IPAddressPool", "first-pool")]
    assert pool["apiVersion"] == "lbspeaker.io/v1beta1"
    assert pool["metadata"] == {
        "name": "first-pool", "namespace": "lbspeaker-system", "labels": {"zone": "a"},
        "annotations": {"team": "net"},
    }
    assert pool["spec"] == {
        "addresses": ["192.168.10.0/24", "192.168.9.1-192.168.9.5", "fc00:f853:0ccd:e799::/124"],
        "autoAssign": False,
    }
    assert "status" not in pool
    alloc = objs[("IPAddressPool", "ippool-ns-service-alloc-sample")]["spec"]["serviceAllocation"]
    assert alloc["priority"] == 50 and alloc["serviceSelectors"][0]["matchExpressions"][0]["key"] == "app"
    assert objs[("L2Advertisement", "example")]["spec"]["interfaces"] == ["eth0"]
    peer = objs[("BGPPeer", "peer-with-secret")]
    assert peer["apiVersion"] == "lbspeaker.io/v1beta2"
    assert peer["spec"]["holdTime"] == "9m0s" and peer["spec"]["passwordSecret"] == {"name": "secretname"}
    assert objs[("BGPPeer", "old-peer")]["spec"]["ebgpMultiHop"] is True
    assert objs[("BGPAdvertisement", "local")]["spec"]["communities"] == ["NO_ADVERTISE", "65535:65282"]
    assert objs[("BGPPeer", "peer-bfd")]["spec"]["bfdProfile"] == "full1"
    bfd = objs[("BFDProfile", "full1")]
    assert bfd["apiVersion"] == "lbspeaker.io/v1beta1"
    assert bfd["spec"] == {"receiveInterval": 380, "echoMode": True, "passiveMode": True, "minimumTtl": 250}
    for obj in result.objects:
        parse_object(obj)  # every converted object is a valid lbspeaker object


def test_crds_report_what_does_not_carry_over() -> None:
    notes = "\n".join(convert_text(CRDS).notes)
    assert "bfdProfile" not in notes
    assert "BGPPeer peer-bfd: spec.vrf='red' not carried over" in notes
    assert "BFDProfile full1: echoMode is carried over but lbspeaker has no BFD echo function" in notes
    assert "ServiceL2Status l2-abc: skipped" in notes
    assert "ConfigurationState speaker-kind-worker: skipped: runtime state" in notes
    assert not [o for o in convert_text(CRDS).objects if o["kind"] == "ConfigurationState"]
    assert "copy that Secret into lbspeaker-system" in notes
    peer = by_kind_name(convert_text(CRDS).objects)[("BGPPeer", "peer-bfd")]
    assert "vrf" not in peer["spec"]


def test_unknown_fields_are_reported_and_dropped() -> None:
    text = textwrap.dedent("""
        apiVersion: metallb.io/v1beta1
        kind: L2Advertisement
        metadata: {name: x, namespace: metallb-system}
        spec:
          ipAddressPools: [a]
          interfaces: [eth0]
          futureField: 1
          nodeSelectors:
          - matchLabels: {a: b}
            weird: true
    """)
    result = convert_text(text)
    (obj,) = result.objects
    assert obj["spec"] == {
        "ipAddressPools": ["a"], "interfaces": ["eth0"], "nodeSelectors": [{"matchLabels": {"a": "b"}}],
    }
    assert any("spec.futureField" in n for n in result.notes)
    assert any("spec.nodeSelectors[0].weird" in n for n in result.notes)


def test_legacy_configmap() -> None:
    result = convert_text(LEGACY)
    objs = by_kind_name(result.objects)
    assert set(objs) == {
        ("Community", "communities"),
        ("BGPPeer", "peer-10-0-0-1"),
        ("IPAddressPool", "default"),
        ("L2Advertisement", "default-l2"),
        ("IPAddressPool", "bgp-space"),
        ("BGPAdvertisement", "bgp-space-bgp-1"),
        ("BGPAdvertisement", "bgp-space-bgp-2"),
        ("BFDProfile", "bfdprofile1"),
    }
    assert objs[("BFDProfile", "bfdprofile1")]["spec"] == {
        "receiveInterval": 179, "transmitInterval": 180, "detectMultiplier": 4, "echoInterval": 62,
        "echoMode": False, "passiveMode": True, "minimumTtl": 10,
    }
    assert objs[("IPAddressPool", "default")]["spec"] == {"addresses": ["192.168.1.240-192.168.1.250"]}
    assert objs[("L2Advertisement", "default-l2")]["spec"] == {"ipAddressPools": ["default"]}
    assert objs[("IPAddressPool", "bgp-space")]["spec"] == {
        "addresses": ["198.51.100.0/24"], "autoAssign": False, "avoidBuggyIPs": True,
    }
    assert objs[("BGPAdvertisement", "bgp-space-bgp-1")]["spec"] == {
        "ipAddressPools": ["bgp-space"], "aggregationLength": 32, "localPref": 100, "communities": ["bar"],
    }
    assert objs[("BGPAdvertisement", "bgp-space-bgp-2")]["spec"]["aggregationLength"] == 24
    assert objs[("Community", "communities")]["spec"] == {
        "communities": [{"name": "bar", "value": "64512:1234"}],
    }
    peer = objs[("BGPPeer", "peer-10-0-0-1")]["spec"]
    assert peer == {
        "peerAddress": "10.0.0.1", "peerASN": 64501, "myASN": 64500, "peerPort": 179, "holdTime": "120s",
        "keepaliveTime": "30s", "routerID": "10.0.0.2", "sourceAddress": "10.0.0.2", "ebgpMultiHop": True,
        "password": "yourPassword", "bfdProfile": "bfdprofile1",
        "nodeSelectors": [{
            "matchLabels": {"rack": "frontend"},
            "matchExpressions": [{"key": "network-speed", "operator": "NotIn", "values": ["slow"]}],
        }],
    }
    notes = "\n".join(result.notes)
    assert "bfd" not in notes.lower()
    assert "clear text" in notes
    for obj in result.objects:
        parse_object(obj)


def test_legacy_bgp_pool_without_advertisements_gets_a_default_one() -> None:
    result = convert_text(textwrap.dedent("""
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: config, namespace: metallb-system}
        data:
          config: |
            address-pools:
            - name: p
              protocol: bgp
              addresses: [10.1.0.0/28]
              unknown-key: 1
            - name: q
              protocol: ospf
              addresses: [10.2.0.0/28]
    """))
    objs = by_kind_name(result.objects)
    assert objs[("BGPAdvertisement", "p-bgp")]["spec"] == {"ipAddressPools": ["p"]}
    assert ("IPAddressPool", "q") in objs
    notes = "\n".join(result.notes)
    assert "address-pool p: unknown-key" in notes
    assert "protocol 'ospf' unknown" in notes


def test_list_and_other_kinds() -> None:
    text = yaml.safe_dump({
        "apiVersion": "v1", "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
            {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
             "metadata": {"name": "p", "namespace": "metallb-system"},
             "spec": {"addresses": ["10.0.0.0/30"]}},
        ],
    })
    result = convert_text(text, namespace="other")
    (obj,) = result.objects
    assert obj["metadata"]["namespace"] == "other"
    assert any("Secret s: skipped" in n for n in result.notes)


def test_deprecated_addresspool_kind() -> None:
    text = textwrap.dedent("""
        apiVersion: metallb.io/v1beta1
        kind: AddressPool
        metadata: {name: old, namespace: metallb-system}
        spec:
          protocol: bgp
          addresses: [3.3.3.1-3.3.3.100]
          autoAssign: false
          bgpAdvertisements:
          - aggregationLength: 24
            aggregationLengthV6: 124
            localPref: 100
            communities: [65535:65282, 7003:007]
    """)
    objs = by_kind_name(convert_text(text).objects)
    assert objs[("IPAddressPool", "old")]["spec"] == {"addresses": ["3.3.3.1-3.3.3.100"], "autoAssign": False}
    adv = objs[("BGPAdvertisement", "old-bgp")]["spec"]
    assert adv["aggregationLength"] == 24 and adv["aggregationLengthV6"] == 124
    assert adv["communities"] == ["65535:65282", "7003:007"]


def test_cli_stdout_yaml_stderr_notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metallb.yaml"
    path.write_text(CRDS)
    out, err = io.StringIO(), io.StringIO()
    assert main(["migrate-metallb", "-f", str(path)], out, err) == 0
    docs = [d for d in yaml.safe_load_all(out.getvalue()) if d]
    assert len(docs) == 9 and all(d["apiVersion"].startswith("lbspeaker.io/") for d in docs)
    assert "vrf" in err.getvalue() and "vrf" not in out.getvalue()
    monkeypatch.setattr("sys.stdin", io.StringIO("kind: Secret\n"))
    out, err = io.StringIO(), io.StringIO()
    assert main(["migrate-metallb", "-f", "-"], out, err) == 1
    assert "no MetalLB configuration" in err.getvalue()


def _has_field(kind: str, name: str) -> bool:
    from lbspeaker.api.crdgen import openapi_schema
    from lbspeaker.api.models import KINDS

    return name in openapi_schema(KINDS[kind])["properties"]["spec"].get("properties", {})


# MetalLB v0.16 fields added to lbspeaker by issue 10: carried over verbatim, no note. (Skipped while
# the field is not in the schema yet; tests/unit/test_metallb_examples.py lists them as pending.)
V016_FIELDS = [
    ("L2Advertisement", "v1beta1", {"ipAddressPools": ["p"], "serviceSelectors": [
        {"matchLabels": {"expose": "l2"}}, {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}]}),
    ("L2Advertisement", "v1beta1", {"ipAddressPools": ["p"],
                                    "nodeSelectors": [{"matchLabels": {"role": "lb"}}],
                                    "preferredNodeSelectors": [
                                        {"weight": 100, "preference": {"matchLabels": {"node-role": "edge"}}},
                                        {"weight": 1, "preference": {}}]}),
    ("BGPAdvertisement", "v1beta1", {"ipAddressPools": ["p"],
                                     "serviceSelectors": [{"matchLabels": {"expose": "bgp"}}]}),
    ("BGPPeer", "v1beta2", {"myASN": 64500, "localASN": 64510, "peerASN": 64520, "peerAddress": "10.0.0.1"}),
]


@pytest.mark.parametrize("kind,version,spec", V016_FIELDS,
                         ids=[f"{k}-{sorted(s)[-1]}" for k, _, s in V016_FIELDS])
def test_v016_fields_are_carried_over(kind: str, version: str, spec: dict[str, object]) -> None:
    new = [f for f in spec if not _has_field(kind, f)]
    if new:
        pytest.skip(f"lbspeaker has no {kind}.spec.{new[0]} yet")
    doc = {"apiVersion": f"metallb.io/{version}", "kind": kind,
           "metadata": {"name": "x", "namespace": "metallb-system"}, "spec": spec}
    result = convert_text(yaml.safe_dump(doc))
    assert result.notes == []
    [obj] = result.objects
    assert obj["spec"] == spec and obj["metadata"]["namespace"] == "lbspeaker-system"
    parse_object(obj)

"""MetalLB's configuration-parsing test tables, ported to our API (issue 10).

Sources (metallb/metallb, main after v0.16.1), ``internal/config/config_test.go``:

* TestParse: each case is a set of objects and either the parsed config or an error;
* TestServiceSelectors, TestL2AdvertisementFromCRPreferred, TestSetL2AdvertisementsToPoolsPreferred;
* TestContainsAdvertisement, for what is observable here (see its section).

MetalLB's ``config.For`` parses everything at once and fails as a whole. lbspeaker has no such
function: an object is refused where its fault can be seen (docs/metallb-compat.md, "Where
validation runs" and "Cross-object errors"). `parse` below is the whole of that, applied to the
case's objects:

1. at apply time, each object against its CRD as generated in manifests/crds/ (defaults, OpenAPI and
   CEL, the lab API server's validator, `lab.apiserver.schema`), as kube-apiserver would;
2. the controller: the IPAddressPools together (`controller.translate.validate_pools`: overlaps) and
   each advertisement's checks (`controller.advertisements`: repeated entries, aggregation length,
   localPref conflicts);
3. a speaker: its BGP plan for one node (`bgp.plan.compute_bgp_plan`: peers that cannot be
   configured, a passwordSecret that cannot be read, a bfdProfile that does not exist) and the
   advertisements' communities (`bgp.routes.resolve_communities`).

A case MetalLB rejects must be refused by one of these, for the object at fault (`Refused` names it
and a fragment of the reason); a case MetalLB accepts must pass all three, and what we read agrees with
MetalLB's Config (`summary`: CIDRs, avoidBuggyIPs, autoAssign, the pools, nodes, aggregation lengths,
localPref, communities and peers of each advertisement, the peers' timers and fields, BFD profiles).

How MetalLB's inputs map onto ours (adaptations, not differences):

* MetalLB's v1beta2 BGPPeer fields have the same names here (``myASN``, ``peerASN``, ``peerAddress``,
  ``peerPort``, ``holdTime``...), written as the YAML/JSON an operator applies;
* MetalLB leaves many objects nameless; Kubernetes requires a name, so they get one (``adv1``...);
  the cases about names themselves (two objects with one name, no name) are the API server's job and
  are checked against the lab API server's store (`test_names_are_the_api_servers`);
* MetalLB's Pool holds the advertisements that apply to it; `summary` lists, per advertisement, the
  pools it applies to, which is the same relation;
* MetalLB's ``Nodes`` of an advertisement are the selected Node names (empty when there are no Nodes);
  ours are computed from the same Node objects;
* a Secret is passed to the speaker's reading (`speaker.secrets.secret_password`), as it would GET it;
* a speaker plans for one node, named ``node1`` unless the case's Nodes say otherwise, labelled as the
  case says so that node-selected peers are configured;
* peer timers: MetalLB's nil (FRR's default) is our documented default (holdTime 90s, keepalives at a
  third of it).

Differences from MetalLB that remain are `xfail(strict=True)` rows whose reason says why;
docs/metallb-compat.md lists them too.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.apiserver.errors import ApiError
from lab.apiserver.registry import Registry
from lab.apiserver.schema import apply_defaults, prune, validate
from lab.apiserver.store import Store
from lbspeaker.bfd.profile import ProfileFacts, profiles_by_name
from lbspeaker.bgp.aggregation import pool_cidrs
from lbspeaker.bgp.config import PeerSpec
from lbspeaker.bgp.plan import compute_bgp_plan
from lbspeaker.bgp.routes import resolve_communities
from lbspeaker.controller.advertisements import (
    aggregation_length_problems,
    duplicate_problems,
    local_pref_problems,
)
from lbspeaker.controller.allocator import Allocator
from lbspeaker.controller.translate import validate_pools
from lbspeaker.election import preference_scores
from lbspeaker.facts import (
    BGPAdvertisementFacts,
    L2AdvertisementFacts,
    NodeFacts,
    PeerFacts,
    Pool,
    ServiceRequest,
    community_aliases,
)
from lbspeaker.plan import _interfaces_for, advertisement_problems
from lbspeaker.speaker.secrets import secret_password

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]


def _crd_schemas() -> dict[str, Obj]:
    out = {}
    for path in (REPO / "manifests" / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd.get("kind") == "CustomResourceDefinition":
            out[crd["spec"]["names"]["kind"]] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return out


SCHEMAS = _crd_schemas()
API_VERSION = {"BGPPeer": "lbspeaker.io/v1beta2"}

# Problem reasons that refuse (the object, or the part of it at fault, is not used as written).
# The others (UnknownPool, PoolSelectorMatchesNothing, PeerFieldIgnored, EchoModeNotSupported...)
# say something about a configuration that runs as written.
REFUSING = {
    "InvalidSpec",
    "Overlap",
    "CoversNodeIP",  # pools (controller)
    "DuplicateEntries",
    "AggregationLengthTooShort",
    "LocalPrefConflict",  # advertisements (controller)
    "InvalidPeer",
    "PasswordSecretMissing",
    "BFDProfileNotFound",
    "BFDProfileInvalid",  # peers (speaker)
    "UnknownCommunity",
    "AdvertisementProblem",  # communities (speaker)
}


# --- objects, as an operator writes them ------------------------------------------------------------


def obj(kind: str, name: str, spec: Obj | None, labels: Mapping[str, str] | None = None) -> Obj:
    out: Obj = {
        "apiVersion": API_VERSION.get(kind, "lbspeaker.io/v1beta1"),
        "kind": kind,
        "metadata": {"name": name, "namespace": "lbspeaker-system"},
    }
    if labels:
        out["metadata"]["labels"] = dict(labels)
    if spec is not None:
        out["spec"] = spec
    return out


def pool(name: str, *addresses: str, labels: Mapping[str, str] | None = None, **spec: Any) -> Obj:
    return obj("IPAddressPool", name, {"addresses": list(addresses), **spec}, labels)


def bgp(name: str, **spec: Any) -> Obj:
    return obj("BGPAdvertisement", name, spec)


def l2(name: str, **spec: Any) -> Obj:
    return obj("L2Advertisement", name, spec)


def peer(name: str, **spec: Any) -> Obj:
    return obj("BGPPeer", name, spec)


def community(name: str, *aliases: tuple[str, str]) -> Obj:
    return obj("Community", name, {"communities": [{"name": n, "value": v} for n, v in aliases]})


def bfd(name: str, **spec: Any) -> Obj:
    return obj("BFDProfile", name, spec)


def node(name: str, **labels: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
    }


def namespace(name: str, **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def secret(name: str, password: str | None = None, type_: str = "kubernetes.io/basic-auth") -> Obj:
    data = {} if password is None else {"password": base64.b64encode(password.encode()).decode()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": type_,
        "metadata": {"name": name, "namespace": "lbspeaker-system"},
        "data": data,
    }


def sel(**labels: str) -> Obj:
    return {"matchLabels": labels}


def expr(key: str | None, operator: str | None, *values: str, **labels: str) -> Obj:
    req: Obj = {"values": list(values)}
    if key is not None:
        req["key"] = key
    if operator is not None:
        req["operator"] = operator
    out: Obj = {"matchExpressions": [req]}
    if labels:
        out["matchLabels"] = labels
    return out


# --- our verdict ------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What lbspeaker makes of a set of objects (see the module docstring)."""

    refused: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> where reason: why
    warnings: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, reason)
    pools: dict[str, Pool] = field(default_factory=dict)
    bgp: list[BGPAdvertisementFacts] = field(default_factory=list)
    l2: list[L2AdvertisementFacts] = field(default_factory=list)
    peers: dict[str, PeerSpec] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    bfd: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, NodeFacts] = field(default_factory=dict)
    namespaces: dict[str, Mapping[str, str]] = field(default_factory=dict)


def admit(o: Obj) -> tuple[list[str], Obj]:
    """kube-apiserver's part: defaults, pruning (a test typo must not vanish), OpenAPI, CEL."""
    schema = SCHEMAS[o["kind"]]
    out = apply_defaults(schema, copy.deepcopy(o))
    removed: list[str] = []
    prune(schema, out, root=True, removed=removed)
    assert removed == [], f"fields unknown to the CRD (a mistake in the table): {removed}"
    return [f"{f}: {m}" if f else m for f, m in validate(schema, out)], out


def parse(*objects: Obj, node_labels: Mapping[str, str] | None = None) -> Verdict:
    v = Verdict()
    ok: dict[str, list[Obj]] = {}
    secrets: dict[str, Obj] = {}
    node_objs: list[Obj] = []
    for o in objects:
        kind, name = o["kind"], o["metadata"]["name"]
        if kind == "Node":
            node_objs.append(o)
            continue
        if kind == "Secret":
            secrets[name] = o
            continue
        if kind == "Namespace":
            v.namespaces[name] = o["metadata"].get("labels") or {}
            continue
        errors, admitted = admit(o)
        if errors:
            v.refused[(kind, name)] = "apply: " + "; ".join(errors)
        else:
            ok.setdefault(kind, []).append(admitted)

    def refuse_or_warn(kind: str, name: str, where: str, reason: str, message: str) -> None:
        if reason in REFUSING:
            v.refused.setdefault((kind, name), f"{where} {reason}: {message}")
        else:
            v.warnings.append((kind, name, reason))

    # the controller
    poolset = validate_pools(ok.get("IPAddressPool", []), {}, {})
    for name, problem in poolset.problems.items():
        refuse_or_warn("IPAddressPool", name, "controller", problem.reason, problem.message)
    v.pools = dict(poolset.active)
    v.nodes = {n.name: n for n in map(NodeFacts.from_node, node_objs)}
    bgp_objs = ok.get("BGPAdvertisement", [])
    for adv in [*ok.get("L2Advertisement", []), *bgp_objs]:
        problems = duplicate_problems(adv)
        problems += advertisement_problems(
            "", v.nodes, v.pools, [L2AdvertisementFacts.from_object(adv)], None
        )
        if adv["kind"] == "BGPAdvertisement":
            problems += aggregation_length_problems(adv, v.pools)
            problems += local_pref_problems(adv, bgp_objs, v.pools, v.nodes)
        for p in problems:
            refuse_or_warn(
                p.kind if p.kind != "Advertisement" else adv["kind"],
                p.name,
                "controller",
                p.reason,
                p.message,
            )
    v.l2 = [L2AdvertisementFacts.from_object(o) for o in ok.get("L2Advertisement", [])]
    v.bgp = [BGPAdvertisementFacts.from_object(o) for o in bgp_objs]

    # a speaker
    v.aliases = community_aliases(ok.get("Community", []))
    for adv_facts in v.bgp:
        for reason, message in resolve_communities(adv_facts.route.communities, v.aliases)[2]:
            refuse_or_warn("BGPAdvertisement", adv_facts.name, "speaker", reason, message)
    peer_facts = [PeerFacts.from_object(o) for o in ok.get("BGPPeer", [])]
    passwords = {
        pf.name: secret_password(secrets.get(pf.secret_ref[1]))
        for pf in peer_facts
        if pf.secret_ref is not None
    }
    v.bfd, bfd_invalid = profiles_by_name(ProfileFacts.from_object(o) for o in ok.get("BFDProfile", []))
    me = next(iter(v.nodes.values()), NodeFacts("node1"))
    me = NodeFacts(me.name, labels={**me.labels, **(node_labels or {})})
    plan = compute_bgp_plan(
        me.name,
        me,
        [],
        v.pools.values(),
        v.bgp,
        peer_facts,
        aliases=v.aliases,
        passwords=passwords,
        bfd_profiles=v.bfd,
        bfd_invalid=bfd_invalid,
    )
    for p in plan.problems:
        if p.kind == "BGPPeer":
            refuse_or_warn("BGPPeer", p.name, "speaker", p.reason, p.message)
    v.peers = {p.name: p for p in plan.peers}
    return v


def cidrs(p: Pool) -> list[str]:
    return [str(n) for fam in (4, 6) for n in pool_cidrs(p.ranges, fam)]


def serves(p: Pool, ns: str, ns_labels: Mapping[str, str], svc_labels: Mapping[str, str]) -> bool:
    """Whether the allocator gives `p`'s addresses to a Service of namespace `ns` asking for the pool."""
    req = ServiceRequest(
        key=f"{ns}/svc",
        namespace=ns,
        labels=dict(svc_labels),
        namespace_labels=dict(ns_labels),
        requested_pool=p.name,
    )
    return Allocator([p]).allocate(req).ok


def summary(v: Verdict) -> dict[str, Any]:
    """Our reading in MetalLB Config's terms (see the module docstring)."""
    nodes = sorted(v.nodes)
    out: dict[str, Any] = {
        "pools": {
            n: {"cidrs": cidrs(p), "avoidBuggyIPs": p.avoid_buggy_ips, "autoAssign": p.auto_assign}
            for n, p in sorted(v.pools.items())
        },
        "byNamespace": {
            ns: sorted(
                n
                for n, p in v.pools.items()
                if p.namespaces or p.namespace_selectors
                if serves(p, ns, labels, {})
            )
            for ns, labels in sorted(v.namespaces.items())
        },
        "priority": {n: p.priority for n, p in sorted(v.pools.items()) if p.priority is not None},
        "bgp": {},
        "l2": {},
        "peers": {},
        "bfd": {n: s.model_dump(exclude_none=True) for n, s in sorted(v.bfd.items())},
    }
    for a in v.bgp:
        r = a.route
        standard, large, _ = resolve_communities(r.communities, v.aliases)
        out["bgp"][a.name] = {
            "pools": sorted(n for n, p in v.pools.items() if a.matches_pool(p)),
            "aggregationLength": r.aggregation_length,
            "aggregationLengthV6": r.aggregation_length_v6,
            "localPref": r.local_pref,
            "communities": sorted(standard | large),
            "nodes": [n for n in nodes if a.selects_node(v.nodes[n])],
            "peers": list(r.peers),
        }
    for a2 in v.l2:
        out["l2"][a2.name] = {
            "pools": sorted(n for n, p in v.pools.items() if a2.matches_pool(p)),
            "nodes": [n for n in nodes if a2.selects_node(v.nodes[n])],
            "interfaces": list(a2.interfaces),
        }
    for name, p in sorted(v.peers.items()):
        out["peers"][name] = {
            "myASN": p.my_asn,
            "peerASN": p.peer_asn,
            "dynamicASN": p.dynamic_asn,
            "localASN": p.local_asn,
            "address": p.peer_address,
            "port": p.peer_port,
            "sourceAddress": p.source_address,
            "holdTime": p.hold_time,
            "keepaliveTime": p.keepalive_time if p.keepalive_time is not None else p.hold_time / 3,
            "connectTime": p.connect_time,
            "routerID": p.router_id,
            "ebgpMultiHop": p.ebgp_multihop,
            "gracefulRestart": p.graceful_restart,
            "bfdProfile": p.bfd_profile,
            "password": p.password,
        }
    return out


# --- expectations -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """MetalLB rejects: each (kind, name) must be refused with a reason containing the fragment."""

    at: Mapping[tuple[str, str], str]


def peer_want(my: int, asn: int | None, address: str = "1.2.3.4", **fields: Any) -> dict[str, Any]:
    """A peer of our summary; unset timers are the defaults (holdTime 90s, keepalive a third)."""
    hold = fields.pop("holdTime", 90.0)
    out = {
        "myASN": my,
        "peerASN": asn,
        "dynamicASN": None,
        "localASN": None,
        "address": address,
        "port": 179,
        "sourceAddress": None,
        "holdTime": hold,
        "keepaliveTime": hold / 3,
        "connectTime": None,
        "routerID": None,
        "ebgpMultiHop": False,
        "gracefulRestart": False,
        "bfdProfile": None,
        "password": None,
    }
    out.update(fields)
    return out


def adv_want(
    pools: Sequence[str],
    agg: int = 32,
    agg6: int = 128,
    local_pref: int | None = None,
    communities: Sequence[str] = (),
    nodes: Sequence[str] = (),
    peers: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "pools": list(pools),
        "aggregationLength": agg,
        "aggregationLengthV6": agg6,
        "localPref": local_pref,
        "communities": list(communities),
        "nodes": list(nodes),
        "peers": list(peers),
    }


def l2_want(
    pools: Sequence[str], nodes: Sequence[str] = (), interfaces: Sequence[str] = ()
) -> dict[str, Any]:
    return {"pools": list(pools), "nodes": list(nodes), "interfaces": list(interfaces)}


def pool_want(*cidr_list: str, avoid: bool = False, auto: bool = True) -> dict[str, Any]:
    return {"cidrs": list(cidr_list), "avoidBuggyIPs": avoid, "autoAssign": auto}


def refused(*at: tuple[str, str, str]) -> Refused:
    return Refused({(k, n): frag for k, n, frag in at})


def check(
    objects: Sequence[Obj], want: Mapping[str, Any] | Refused, node_labels: Mapping[str, str] | None = None
) -> None:
    v = parse(*objects, node_labels=node_labels)
    if isinstance(want, Refused):
        for key, fragment in want.at.items():
            assert key in v.refused, f"{key} not refused; refused: {v.refused}"
            assert fragment in v.refused[key], (key, v.refused[key])
        return
    assert v.refused == {}, v.refused
    got = summary(v)
    for key, value in want.items():
        assert got[key] == value, key


# Differences (docs/metallb-compat.md rows)
VRF = (
    "BGPPeer.spec.vrf: MetalLB peers from a host VRF (FRR modes); lbspeaker accepts the field but the "
    "speaker cannot bind an ExaBGP session to a VRF, so the peer is not configured (InvalidPeer)"
)
UNNUMBERED = (
    "BGPPeer.spec.interface (unnumbered BGP): MetalLB's FRR modes peer over the interface; the "
    "CRD accepts it but ExaBGP has no unnumbered sessions, so the peer is not configured"
)
CONTROL_CHARS = (
    "a newline or carriage return in password (or the passwordSecret's value): MetalLB refuses "
    "it (FRR configuration injection); lbspeaker writes the MD5 password base64-encoded "
    "(md5-base64), so any byte is carried and nothing is refused"
)
DUP_VALUES = (
    "repeated values inside one label-selector requirement (In [a, a]), or two requirements that "
    "repeat each other: MetalLB refuses (validateLabelSelectorDuplicate); lbspeaker's CRD only "
    "refuses whole repeated selectors, and In [a, a] selects what In [a] selects"
)
AGG_RANGE = (
    "aggregationLength with a range pool: MetalLB checks each address entry's widest CIDR (a range "
    "3.3.3.2-3.3.3.254 allows 26); lbspeaker requires every CIDR of the pool to fit (32 here, "
    "AggregationLengthTooShort), so no announced prefix covers addresses outside the pool"
)
ALIAS_DUP = (
    "one community alias defined in two Community objects: MetalLB refuses the configuration; "
    "lbspeaker takes the first object by name, silently"
)
ECHO_V6 = (
    "BFD echo mode with an IPv6 pool: MetalLB refuses (echo mode is not supported with IPv6); "
    "lbspeaker has no echo mode at all, so a profile with echoMode runs without echo and the "
    "combination is not refused (BFD row of docs/metallb-compat.md)"
)


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


# --- TestParse --------------------------------------------------------------------------------------

ALL_PEERS = [
    peer(
        "peer1",
        myASN=42,
        peerASN=142,
        peerAddress="1.2.3.4",
        peerPort=1179,
        holdTime="180s",
        connectTime="1s",
        routerID="10.20.30.40",
        sourceAddress="10.20.30.40",
        enableGracefulRestart=True,
        ebgpMultiHop=True,
        vrf="foo",
    ),
    peer(
        "peer2",
        myASN=100,
        peerASN=200,
        peerAddress="2.3.4.5",
        connectTime="1s",
        nodeSelectors=[expr("bar", "In", "quux", foo="bar")],
    ),
]
ALL_POOLS = [
    pool("pool1", "10.20.0.0/16", "10.50.0.0/24", avoidBuggyIPs=True, autoAssign=False),
    pool("pool2", "30.0.0.0/8"),
    pool(
        "pool3", "40.0.0.0/25", "40.0.0.150-40.0.0.200", "40.0.0.210 - 40.0.0.240", "40.0.0.250 - 40.0.0.250"
    ),
    pool("pool4", "2001:db8::/64"),
]
ALL_ADS = [
    bgp(
        "adv1",
        aggregationLength=32,
        localPref=100,
        communities=["bar"],
        ipAddressPools=["pool1"],
        peers=["peer1"],
    ),
    bgp("adv2", aggregationLength=24, aggregationLengthV6=64, ipAddressPools=["pool1"]),
    bgp("adv3", ipAddressPools=["pool2"]),
    l2("l2adv1", ipAddressPools=["pool3"]),
    l2("l2adv2"),
]
ALL_WANT = {
    "pools": {
        "pool1": pool_want("10.20.0.0/16", "10.50.0.0/24", avoid=True, auto=False),
        "pool2": pool_want("30.0.0.0/8"),
        "pool3": pool_want(
            "40.0.0.0/25",
            "40.0.0.150/31",
            "40.0.0.152/29",
            "40.0.0.160/27",
            "40.0.0.192/29",
            "40.0.0.200/32",
            "40.0.0.210/31",
            "40.0.0.212/30",
            "40.0.0.216/29",
            "40.0.0.224/28",
            "40.0.0.240/32",
            "40.0.0.250/32",
        ),
        "pool4": pool_want("2001:db8::/64"),
    },
    "bgp": {
        "adv1": adv_want(["pool1"], local_pref=100, communities=["64512:1234"], peers=["peer1"]),
        "adv2": adv_want(["pool1"], agg=24, agg6=64),
        "adv3": adv_want(["pool2"]),
    },
    "l2": {"l2adv1": l2_want(["pool3"]), "l2adv2": l2_want(["pool1", "pool2", "pool3", "pool4"])},
    "peers": {
        "peer1": peer_want(
            42,
            142,
            port=1179,
            holdTime=180.0,
            connectTime=1.0,
            routerID="10.20.30.40",
            sourceAddress="10.20.30.40",
            gracefulRestart=True,
            ebgpMultiHop=True,
        ),
        "peer2": peer_want(100, 200, "2.3.4.5", connectTime=1.0),
    },
}
NO_VRF = [peer("peer1", **{k: v for k, v in ALL_PEERS[0]["spec"].items() if k != "vrf"}), ALL_PEERS[1]]
PEER_LABELS = {"foo": "bar", "bar": "quux"}

TEST_POOL = pool("testPool", "10.20.0.0/16")
P1 = peer("peer1", myASN=42, peerASN=42, peerAddress="1.2.3.4")
TWO_NODES = [node("node1"), node("node2")]
FIRST_SECOND = [node("first", first="true"), node("second", second="true")]
NONDEFAULT_BFD = bfd(
    "nondefault",
    receiveInterval=50,
    transmitInterval=51,
    detectMultiplier=52,
    echoInterval=54,
    echoMode=True,
    passiveMode=True,
    minimumTtl=55,
)
PASS_PEER = {"myASN": 42, "peerASN": 42, "peerAddress": "1.2.3.4"}


def nl_peer(**spec: Any) -> list[Obj]:
    return [peer("peer1", myASN=42, peerASN=142, **spec)]


def pl(name: str, **labels: str) -> Obj:
    return pool(name, "10.20.0.0/16" if name == "pool1" else "30.0.0.0/16", labels=labels)


PARSE: list[Any] = [
    pytest.param([], {"pools": {}, "bgp": {}, "l2": {}, "peers": {}, "bfd": {}}, id="empty config"),
    pytest.param(
        [*ALL_PEERS, *ALL_POOLS, *ALL_ADS, community("community", ("bar", "64512:1234"))],
        ALL_WANT,
        marks=xfail(VRF),
        id="config using all features",
    ),
    pytest.param(
        [*NO_VRF, *ALL_POOLS, *ALL_ADS, community("community", ("bar", "64512:1234"))],
        ALL_WANT,
        id="config using all features (without vrf)",
    ),
    pytest.param(
        [
            pool(
                "pool1",
                "10.20.0.0/16",
                "10.50.0.0/24",
                avoidBuggyIPs=True,
                autoAssign=False,
                serviceAllocation={"priority": 1, "namespaces": ["test-ns1"]},
            ),
            pool(
                "pool2",
                "30.0.0.0/8",
                serviceAllocation={"priority": 2, "namespaceSelectors": [sel(team="metallb")]},
            ),
            pool(
                "pool3",
                "40.0.0.0/8",
                serviceAllocation={"priority": 3, "namespaceSelectors": [sel(team="red")]},
            ),
            namespace("test-ns1"),
            namespace("test-ns2", team="metallb"),
        ],
        {
            "pools": {
                "pool1": pool_want("10.20.0.0/16", "10.50.0.0/24", avoid=True, auto=False),
                "pool2": pool_want("30.0.0.0/8"),
                "pool3": pool_want("40.0.0.0/8"),
            },
            "byNamespace": {"test-ns1": ["pool1"], "test-ns2": ["pool2"]},
            "priority": {"pool1": 1, "pool2": 2, "pool3": 3},
        },
        id="ip address pool with namespace selection",
    ),
    pytest.param(
        [
            pool(
                "pool1",
                "10.20.0.0/16",
                serviceAllocation={"priority": 1, "namespaces": ["test-ns1", "test-ns1"]},
            ),
            namespace("test-ns1"),
        ],
        refused(("IPAddressPool", "pool1", "Duplicate value")),
        id="ip address pool with duplicate namespace selection",
    ),
    pytest.param(
        [
            pool(
                "pool1",
                "10.20.0.0/16",
                serviceAllocation={"priority": 1, "namespaceSelectors": [sel(foo="bar"), sel(foo="bar")]},
            ),
            namespace("test-ns1", foo="bar"),
        ],
        refused(("IPAddressPool", "pool1", "Duplicate value")),
        id="ip address pool with duplicate namespace selectors",
    ),
    pytest.param(
        [
            pool(
                "pool1",
                "30.0.0.0/8",
                serviceAllocation={"priority": 2, "serviceSelectors": [sel(team="metallb")]},
            ),
            pool(
                "pool2",
                "40.0.0.0/8",
                serviceAllocation={"priority": 3, "serviceSelectors": [sel(team="red")]},
            ),
        ],
        {
            "pools": {"pool1": pool_want("30.0.0.0/8"), "pool2": pool_want("40.0.0.0/8")},
            "priority": {"pool1": 2, "pool2": 3},
        },
        id="ip address pool with service selection",
    ),
    pytest.param(
        [
            pool(
                "pool1",
                "30.0.0.0/8",
                serviceAllocation={"priority": 2, "serviceSelectors": [expr("foo", "In", "bar", "bar")]},
            )
        ],
        refused(("IPAddressPool", "pool1", "")),
        marks=xfail(DUP_VALUES),
        id="ip address pool with duplicate service selection",
    ),
    pytest.param(
        [
            pool(
                "pool1",
                "30.0.0.0/8",
                serviceAllocation={
                    "priority": 2,
                    "namespaces": ["test-ns1"],
                    "serviceSelectors": [sel(**{"testsvc-1": "1"})],
                },
            ),
            pool(
                "pool2",
                "40.0.0.0/8",
                serviceAllocation={
                    "priority": 3,
                    "namespaceSelectors": [sel(team="metallb")],
                    "serviceSelectors": [sel(**{"testsvc-2": "2"})],
                },
            ),
            namespace("test-ns1"),
            namespace("test-ns2", team="metallb"),
        ],
        {
            "pools": {"pool1": pool_want("30.0.0.0/8"), "pool2": pool_want("40.0.0.0/8")},
            "priority": {"pool1": 2, "pool2": 3},
        },
        id="ip address pool with namespace and service selection",
    ),
    pytest.param(
        [
            pool(
                "pool1",
                "10.20.0.0/16",
                "10.50.0.0/24",
                avoidBuggyIPs=True,
                autoAssign=False,
                serviceAllocation={"priority": 1},
            )
        ],
        {
            "pools": {"pool1": pool_want("10.20.0.0/16", "10.50.0.0/24", avoid=True, auto=False)},
            "priority": {"pool1": 1},
        },
        id="ip address pool with only priority",
    ),
    pytest.param([P1], {"peers": {"peer1": peer_want(42, 42)}, "pools": {}}, id="peer-only"),
    pytest.param(
        [peer("p", myASN=42, peerASN=42, peerAddress="1.2.3.400")],
        refused(("BGPPeer", "p", "single IPv4 or IPv6")),
        id="invalid peer-address",
    ),
    pytest.param(
        [peer("p", peerASN=42, peerAddress="1.2.3.4")],
        refused(("BGPPeer", "p", "spec.myASN: Required")),
        id="invalid my-asn",
    ),
    pytest.param(
        [peer("p", myASN=42, peerAddress="1.2.3.4")],
        refused(("BGPPeer", "p", "exactly one of peerASN")),
        id="invalid peer-asn",
    ),
    pytest.param(
        [peer("p", myASN=42, peerASN=42, peerAddress="1.2.3.4", ebgpMultiHop=True)],
        refused(("BGPPeer", "p", "ebgpMultiHop is for eBGP only")),
        id="invalid ebgp-multihop",
    ),
    *[row for what, ch in (("newline", "\n"), ("carriage return", "\r")) for row in (
        pytest.param(
            nl_peer(interface=f"eth0{ch}router bgp 666"),
            refused(("BGPPeer", "peer1", "spec.interface")),
            id=f"invalid interface with {what}",
        ),
        pytest.param(
            nl_peer(peerAddress="1.2.3.4", password=f"password{ch}"),
            refused(("BGPPeer", "peer1", "")),
            marks=xfail(CONTROL_CHARS),
            id=f"invalid password with {what}",
        ),
        pytest.param(
            [
                *nl_peer(peerAddress="1.2.3.4", passwordSecret={"name": "bgpsecret"}),
                secret("bgpsecret", f"nopass{ch}"),
            ],
            refused(("BGPPeer", "peer1", "")),
            marks=xfail(CONTROL_CHARS),
            id=f"invalid password secret with {what}",
        ),
        pytest.param(
            nl_peer(peerAddress="1.2.3.4", vrf=f"vrf{ch}"),
            refused(("BGPPeer", "peer1", "vrf")),
            id=f"invalid VRF name with {what}",
        ),
    )],
    pytest.param(
        [peer("p", **PASS_PEER, holdTime="30s", keepaliveTime="90s")],
        refused(("BGPPeer", "p", "keepaliveTime must not exceed")),
        id="invalid keepalivetime larger than holdtime",
    ),
    pytest.param(
        [peer("p", **PASS_PEER, holdTime="1s")],
        refused(("BGPPeer", "p", "holdTime must be 0s")),
        id="invalid hold time (too short)",
    ),
    pytest.param(
        [peer("peer1", **PASS_PEER, holdTime="180s")],
        {"peers": {"peer1": peer_want(42, 42, holdTime=180.0)}},
        id="peer with holdtime only",
    ),
    pytest.param(
        [peer("peer1", **PASS_PEER, keepaliveTime="60s")],
        {"peers": {"peer1": peer_want(42, 42, holdTime=180.0)}},
        id="peer with keepalive only",
    ),
    pytest.param(
        [peer("peer1", **PASS_PEER, holdTime="0s", keepaliveTime="0s")],
        {"peers": {"peer1": peer_want(42, 42, holdTime=0.0)}},
        id="peer with zero hold/keepalive timers",
    ),
    pytest.param([P1], {"peers": {"peer1": peer_want(42, 42)}}, id="peer without hold/keepalive timers"),
    pytest.param(
        [peer("p", **PASS_PEER, routerID="oh god how do I BGP")],
        refused(("BGPPeer", "p", "routerID must be written as an IPv4")),
        id="invalid RouterID",
    ),
    pytest.param([P1], {"peers": {"peer1": peer_want(42, 42)}}, id="empty node selector (select everything)"),
    pytest.param(
        [peer("p", **PASS_PEER, nodeSelectors=[expr(None, "In", "quux", foo="bar")])],
        refused(("BGPPeer", "p", "matchExpressions[0].key: Required")),
        id="invalid expression node selector (missing key)",
    ),
    pytest.param(
        [peer("p", **PASS_PEER, nodeSelectors=[expr("bar", None, "quux", foo="bar")])],
        refused(("BGPPeer", "p", "matchExpressions[0].operator: Required")),
        id="invalid expression node selector (missing operator)",
    ),
    pytest.param(
        [peer("p", **PASS_PEER, nodeSelectors=[expr("bar", "surrounds", "quux", foo="bar")])],
        refused(("BGPPeer", "p", "Unsupported value")),
        id="invalid expression node selector (invalid operator)",
    ),
    pytest.param(
        [
            peer(
                "peer",
                myASN=100,
                peerASN=200,
                peerAddress="2.3.4.5",
                nodeSelectors=[expr("bar", "In", "quux", "quux", foo="bar")],
            )
        ],
        refused(("BGPPeer", "peer", "")),
        marks=xfail(DUP_VALUES),
        id="duplicate values node selector match expression",
    ),
    # "duplicate peers" (two nameless peers), "no pool name": test_names_are_the_api_servers
    pytest.param(
        [obj("IPAddressPool", "pool1", {})],
        refused(("IPAddressPool", "pool1", "spec.addresses: Required")),
        id="address pool with no address",
    ),
    pytest.param(
        [obj("IPAddressPool", "pool1", None)],
        refused(("IPAddressPool", "pool1", "spec: Required")),
        id="address pool with no protocol",
    ),
    pytest.param(
        [pool("pool1", "100.200.300.400/24")],
        refused(("IPAddressPool", "pool1", "each address must be")),
        id="invalid pool CIDR",
    ),
    pytest.param(
        [pool("pool1", "1.2.3.0/33")],
        refused(("IPAddressPool", "pool1", "each address must be")),
        id="invalid pool CIDR prefix length",
    ),
    pytest.param(
        [pool("pool1", "1.2.3.10-1.2.3.1")],
        refused(("IPAddressPool", "pool1", "must not start after")),
        id="invalid pool CIDR, first address of the range is after the second",
    ),
    pytest.param(
        [pool("pool1", "1.2.3.0/24"), bgp("adv3")],
        {"pools": {"pool1": pool_want("1.2.3.0/24")}, "bgp": {"adv3": adv_want(["pool1"])}},
        id="simple advertisement",
    ),
    pytest.param(
        [pool("pool1", "1.2.3.0/24"), bgp("adv3")],
        {"bgp": {"adv3": adv_want(["pool1"])}},
        id="advertisement with default BGP settings",
    ),
    pytest.param(
        [pool("pool1", "1.2.3.10-1.2.3.1"), bgp("adv1", aggregationLength=34)],
        refused(
            ("IPAddressPool", "pool1", "must not start after"),
            ("BGPAdvertisement", "adv1", "less than or equal to 32"),
        ),
        id="bad aggregation length (too long)",
    ),
    pytest.param(
        [pool("pool1", "10.20.30.40/24", "1.2.3.0/28"), bgp("adv1", aggregationLength=26)],
        refused(("BGPAdvertisement", "adv1", "AggregationLengthTooShort")),
        id="bad aggregation length (incompatible with CIDR)",
    ),
    pytest.param(
        [*TWO_NODES, pool("pool1", "10.20.30.40/24"), bgp("adv1", localPref=100), bgp("adv2", localPref=200)],
        refused(("BGPAdvertisement", "adv2", "LocalPrefConflict")),
        id="different local pref - same peers and nodes",
    ),
    pytest.param(
        [
            *TWO_NODES,
            pool("pool1", "10.20.30.40/24"),
            bgp("adv1", localPref=100, aggregationLength=24),
            bgp("adv2", localPref=200),
        ],
        {
            "bgp": {
                "adv1": adv_want(["pool1"], agg=24, local_pref=100, nodes=["node1", "node2"]),
                "adv2": adv_want(["pool1"], local_pref=200, nodes=["node1", "node2"]),
            }
        },
        id="different local pref - different ipv4 aggregation length",
    ),
    pytest.param(
        [
            *TWO_NODES,
            pool("pool1", "10.20.30.40/24"),
            bgp("adv1", localPref=100, aggregationLength=24, aggregationLengthV6=120),
            bgp("adv2", localPref=200),
        ],
        {
            "bgp": {
                "adv1": adv_want(["pool1"], agg=24, agg6=120, local_pref=100, nodes=["node1", "node2"]),
                "adv2": adv_want(["pool1"], local_pref=200, nodes=["node1", "node2"]),
            }
        },
        id="different local pref - different aggregation lengths",
    ),
    pytest.param(
        [
            node("node1", node="node1"),
            node("node2", node="node2"),
            pool("pool1", "10.20.30.40/24"),
            bgp("adv1", localPref=100, nodeSelectors=[sel(node="node1")]),
            bgp("adv2", localPref=200, nodeSelectors=[sel(node="node2")]),
        ],
        {
            "bgp": {
                "adv1": adv_want(["pool1"], local_pref=100, nodes=["node1"]),
                "adv2": adv_want(["pool1"], local_pref=200, nodes=["node2"]),
            }
        },
        id="different local pref - same peers & different nodes",
    ),
    pytest.param(
        [
            *TWO_NODES,
            pool("pool1", "10.20.30.40/24"),
            bgp("adv1", localPref=100, peers=["peer1"]),
            bgp("adv2", localPref=200, peers=["peer2"]),
        ],
        {
            "bgp": {
                "adv1": adv_want(["pool1"], local_pref=100, nodes=["node1", "node2"], peers=["peer1"]),
                "adv2": adv_want(["pool1"], local_pref=200, nodes=["node1", "node2"], peers=["peer2"]),
            }
        },
        id="different local pref - different peers & same nodes",
    ),
    pytest.param(
        [pool("pool1", "3.3.3.2-3.3.3.254"), bgp("adv1", aggregationLength=26)],
        {
            "pools": {
                "pool1": pool_want(
                    "3.3.3.2/31",
                    "3.3.3.4/30",
                    "3.3.3.8/29",
                    "3.3.3.16/28",
                    "3.3.3.32/27",
                    "3.3.3.64/26",
                    "3.3.3.128/26",
                    "3.3.3.192/27",
                    "3.3.3.224/28",
                    "3.3.3.240/29",
                    "3.3.3.248/30",
                    "3.3.3.252/31",
                    "3.3.3.254/32",
                )
            },
            "bgp": {"adv1": adv_want(["pool1"], agg=26)},
        },
        marks=xfail(AGG_RANGE),
        id="aggregation length by range",
    ),
    pytest.param(
        [pool("pool1", "3.3.3.2-3.3.3.254"), bgp("adv1", aggregationLength=24)],
        refused(("BGPAdvertisement", "adv1", "AggregationLengthTooShort")),
        id="aggregation length by range, too wide",
    ),
    pytest.param(
        [TEST_POOL, l2("testAdv", ipAddressPools=["testPool", "testPool"])],
        refused(("L2Advertisement", "testAdv", "Duplicate value")),
        id="duplicate ip address pools - in L2 adv",
    ),
    pytest.param(
        [TEST_POOL, bgp("testAdv", ipAddressPools=["testPool", "testPool"])],
        refused(("BGPAdvertisement", "testAdv", "Duplicate value")),
        id="duplicate ip address pools - in BGP adv",
    ),
    pytest.param(
        [TEST_POOL, P1, bgp("testAdv", ipAddressPools=["testPool"], peers=["peer1", "peer1"])],
        refused(("BGPAdvertisement", "testAdv", "Duplicate value")),
        id="duplicate peers - in BGP adv",
    ),
    pytest.param(
        [TEST_POOL, bgp("testAdv", communities=["1234"], ipAddressPools=["testPool"])],
        refused(("BGPAdvertisement", "testAdv", "UnknownCommunity")),
        id="bad community literal (wrong format) - in BGP adv",
    ),
    pytest.param(
        [TEST_POOL, bgp("testAdv", communities=["99999999:1"], ipAddressPools=["testPool"])],
        refused(("BGPAdvertisement", "testAdv", "Community alias")),
        id="bad community literal (asn part doesn't fit) - in BGP adv",
    ),
    pytest.param(
        [TEST_POOL, bgp("testAdv", communities=["1:99999999"], ipAddressPools=["testPool"])],
        refused(("BGPAdvertisement", "testAdv", "Community alias")),
        id="bad community literal (community# part doesn't fit) - in BGP adv",
    ),
    pytest.param(
        [TEST_POOL, bgp("testAdv", communities=["community"], ipAddressPools=["testPool"])],
        refused(("BGPAdvertisement", "testAdv", "UnknownCommunity")),
        id="bad community ref (unknown ref) - in BGP adv",
    ),
    pytest.param(
        [TEST_POOL, bgp("testAdv", communities=["1234:5678", "1234:5678"], ipAddressPools=["testPool"])],
        refused(("BGPAdvertisement", "testAdv", "Duplicate value")),
        id="duplicate community literal - in BGP adv",
    ),
    pytest.param(
        [community("community", ("bar", "1234"))],
        refused(("Community", "community", "a community is")),
        id="bad community literal (wrong format) - in the community CR",
    ),
    pytest.param(
        [community("community", ("bar", "99999999:1"))],
        refused(("Community", "community", "a community is")),
        id="bad community literal (asn part doesn't fit) - in the community CR",
    ),
    pytest.param(
        [community("community", ("bar", "1:99999999"))],
        refused(("Community", "community", "a community is")),
        id="bad community literal (community# part doesn't fit) - in the community CR",
    ),
    pytest.param(
        [community("community1", ("bar", "1234:5678")), community("community2", ("bar", "1234:5678"))],
        refused(("Community", "community2", "")),
        marks=xfail(ALIAS_DUP),
        id="duplicate communities definition (in 2 different crs)",
    ),
    # "duplicate communities definition (in the same cr)":
    # test_repeated_alias_in_one_community_is_the_api_servers
    pytest.param(
        [obj("IPAddressPool", "pool1", {}), obj("IPAddressPool", "pool2", {})],
        refused(("IPAddressPool", "pool1", "Required"), ("IPAddressPool", "pool2", "Required")),
        id="duplicate pool definition (and the spec with no address)",
    ),
    pytest.param(
        [pool("pool1", " 10.0.0.0/8"), pool("pool2", " 10.0.0.0/8")],
        refused(
            ("IPAddressPool", "pool1", "each address must be"),
            ("IPAddressPool", "pool2", "each address must be"),
        ),
        id="duplicate CIDRs",
    ),
    pytest.param(
        [pool("pool1", "10.0.0.0/8"), pool("pool2", "10.0.0.0/8")],
        refused(("IPAddressPool", "pool2", "Overlap")),
        id="duplicate CIDRs (without the leading space)",
    ),
    pytest.param(
        [pool("pool1", " 10.0.0.0/8"), pool("pool2", "10.0.0.0/16")],
        refused(("IPAddressPool", "pool1", "each address must be")),
        id="overlapping CIDRs",
    ),
    pytest.param(
        [pool("pool1", "10.0.0.0/8"), pool("pool2", "10.0.0.0/16")],
        refused(("IPAddressPool", "pool2", "Overlap")),
        id="overlapping CIDRs (without the leading space)",
    ),
    pytest.param(
        [
            peer("peer1", **PASS_PEER, bfdProfile="default"),
            pool("pool1", "1.2.3.0/24"),
            bfd("default"),
            bgp("adv3"),
        ],
        {
            "peers": {"peer1": peer_want(42, 42, bfdProfile="default")},
            "bfd": {"default": {}},
            "bgp": {"adv3": adv_want(["pool1"])},
        },
        id="Session with default BFD Profile",
    ),
    pytest.param(
        [peer("p", **PASS_PEER, password="nopass", passwordSecret={"name": "nosecret"})],
        refused(("BGPPeer", "p", "at most one of password")),
        id="BGP Peer with both password and secret ref set",
    ),
    pytest.param(
        [peer("p", **PASS_PEER, passwordSecret={"name": "bgpsecret"}), secret("bgpsecret", type_="Opaque")],
        refused(("BGPPeer", "p", "PasswordSecretMissing")),
        id="BGP Peer with invalid secret type",
    ),
    pytest.param(
        [peer("p", **PASS_PEER, passwordSecret={"name": "bgpsecret"}), secret("bgpsecret")],
        refused(("BGPPeer", "p", "PasswordSecretMissing")),
        id="BGP Peer without password set in the secret",
    ),
    pytest.param(
        [
            peer("peer1", **PASS_PEER, peerPort=179, passwordSecret={"name": "bgpsecret"}),
            secret("bgpsecret", "nopass"),
        ],
        {"peers": {"peer1": peer_want(42, 42, password="nopass")}},
        id="BGP Peer with a valid secret",
    ),
    pytest.param(
        [peer("p", **PASS_PEER, passwordSecret={"name": "nosecret"})],
        refused(("BGPPeer", "p", "PasswordSecretMissing")),
        id="BGP Peer with unavailable secret ref",
    ),
    # the two "frrk8s secret passthrough" cases: FRR-K8s mode only (ForOptions), which lbspeaker has not
    pytest.param(
        [peer("p", **PASS_PEER, bfdProfile="default"), pool("pool1", "1.2.3.0/24"), bgp("adv3")],
        refused(("BGPPeer", "p", "BFDProfileNotFound")),
        id="Peer with non existing BFD Profile",
    ),
    # "Multiple BFD Profiles with the same name": test_names_are_the_api_servers
    pytest.param(
        [pool("pool1", "1.2.3.0/24"), NONDEFAULT_BFD, bgp("adv3")],
        {
            "bfd": {
                "nondefault": {
                    "receiveInterval": 50,
                    "transmitInterval": 51,
                    "detectMultiplier": 52,
                    "echoInterval": 54,
                    "echoMode": True,
                    "passiveMode": True,
                    "minimumTtl": 55,
                }
            },
            "bgp": {"adv3": adv_want(["pool1"])},
        },
        id="Session with nondefault BFD Profile",
    ),
    pytest.param(
        [bfd("default", receiveInterval=2)],
        refused(("BFDProfile", "default", "greater than or equal to 10")),
        id="BFD Profile with too low receive interval",
    ),
    pytest.param(
        [bfd("default", receiveInterval=90000)],
        refused(("BFDProfile", "default", "less than or equal to 60000")),
        id="BFD Profile with too high receive interval",
    ),
    pytest.param(
        [
            pool("pool1", "fc00:f853:0ccd:e793::/64"),
            NONDEFAULT_BFD,
            bgp("adv3"),
            peer(
                "peer1",
                myASN=42,
                peerASN=142,
                peerAddress="1.2.3.4",
                peerPort=1179,
                holdTime="180s",
                routerID="10.20.30.40",
                sourceAddress="10.20.30.40",
                ebgpMultiHop=True,
                bfdProfile="nondefault",
            ),
        ],
        refused(("BGPPeer", "peer1", "")),
        marks=xfail(ECHO_V6),
        id="Session with ipv6 and bfd echo mode",
    ),
    pytest.param(
        [
            pool("pool1", "1.2.3.0/24"),
            bfd("with-echo", echoMode=True),
            bgp("adv"),
            peer(
                "peer1", myASN=42, peerASN=142, peerAddress="1.2.3.4", peerPort=1179, bfdProfile="with-echo"
            ),
        ],
        {
            "peers": {"peer1": peer_want(42, 142, port=1179, bfdProfile="with-echo")},
            "pools": {"pool1": pool_want("1.2.3.0/24")},
            "bgp": {"adv": adv_want(["pool1"])},
            "bfd": {"with-echo": {"echoMode": True}},
        },
        id="Session with ipv4 and bfd echo mode",
    ),
]

LARGE = [
    pool("pool1", "10.20.0.0/16", "10.50.0.0/24", avoidBuggyIPs=True, autoAssign=False),
    bgp(
        "adv1",
        aggregationLength=32,
        localPref=100,
        communities=["bar"],
        ipAddressPools=["pool1"],
        peers=["peer1"],
    ),
    bgp("adv2", aggregationLength=24, aggregationLengthV6=64, ipAddressPools=["pool1"]),
    bgp("adv3", ipAddressPools=["pool2"]),
    community("community", ("bar", "large:123:64512:1234")),
]
LARGE_PEER = {
    "myASN": 42,
    "peerASN": 142,
    "peerAddress": "1.2.3.4",
    "peerPort": 1179,
    "holdTime": "180s",
    "routerID": "10.20.30.40",
    "sourceAddress": "10.20.30.40",
    "ebgpMultiHop": True,
}
LARGE_WANT = {
    "peers": {
        "peer1": peer_want(
            42,
            142,
            port=1179,
            holdTime=180.0,
            routerID="10.20.30.40",
            sourceAddress="10.20.30.40",
            ebgpMultiHop=True,
        )
    },
    "pools": {"pool1": pool_want("10.20.0.0/16", "10.50.0.0/24", avoid=True, auto=False)},
    "bgp": {
        "adv1": adv_want(["pool1"], local_pref=100, communities=["123:64512:1234"], peers=["peer1"]),
        "adv2": adv_want(["pool1"], agg=24, agg6=64),
        "adv3": adv_want([]),
    },
}
SELECTORS_BGP = [
    bgp("adv1", aggregationLength=32, localPref=100, ipAddressPoolSelectors=[sel(test="pool1")]),
    bgp("adv2", aggregationLength=32, localPref=200, ipAddressPoolSelectors=[sel(test="pool2")]),
]
NONE_SELECTED = [
    l2("l2adv1", ipAddressPoolSelectors=[sel(test="do-not-select-pool")]),
    bgp("adv1", aggregationLength=32, localPref=100, ipAddressPoolSelectors=[sel(test="do-not-select-pool")]),
    bgp("adv2", aggregationLength=32, localPref=200, ipAddressPoolSelectors=[sel(test="do-not-select-pool")]),
]
HOSTS = "kubernetes.io/hostname"

PARSE += [
    pytest.param(
        [peer("peer1", **LARGE_PEER, vrf="foo"), *LARGE],
        LARGE_WANT,
        marks=xfail(VRF),
        id="config IPAddressPool with large communities CR",
    ),
    pytest.param(
        [peer("peer1", **LARGE_PEER), *LARGE],
        LARGE_WANT,
        id="config IPAddressPool with large communities CR (without vrf)",
    ),
    pytest.param(
        [
            pl("pool1", test="pool1"),
            pl("pool2", test="pool2"),
            l2("l2adv1", ipAddressPoolSelectors=[sel(test="pool1")]),
            *SELECTORS_BGP,
        ],
        {
            "pools": {"pool1": pool_want("10.20.0.0/16"), "pool2": pool_want("30.0.0.0/16")},
            "l2": {"l2adv1": l2_want(["pool1"])},
            "bgp": {"adv1": adv_want(["pool1"], local_pref=100), "adv2": adv_want(["pool2"], local_pref=200)},
        },
        id="use ip pool selectors",
    ),
    pytest.param(
        [
            pl("pool1", test="pool1"),
            l2("l2adv1", ipAddressPoolSelectors=[sel(test="pool1")], interfaces=["eth0"]),
        ],
        {"l2": {"l2adv1": l2_want(["pool1"], interfaces=["eth0"])}},
        id="specify interfaces",
    ),
    pytest.param(
        [
            pl("pool1", test="pool1"),
            bgp("adv1", ipAddressPoolSelectors=[sel(test="pool1"), sel(test="pool1")]),
        ],
        refused(("BGPAdvertisement", "adv1", "Duplicate value")),
        id="use duplicate match labels in ip pool selectors - in BGP adv",
    ),
    pytest.param(
        [
            pl("pool1", test="pool1"),
            bgp("adv1", ipAddressPoolSelectors=[expr("test", "In", "pool1", "pool1")]),
        ],
        refused(("BGPAdvertisement", "adv1", "")),
        marks=xfail(DUP_VALUES),
        id="use duplicate match expression in ip pool selector - in BGP adv",
    ),
    pytest.param(
        [
            pl("pool1", test="pool1"),
            l2("adv1", ipAddressPoolSelectors=[sel(test="pool1"), sel(test="pool1")]),
        ],
        refused(("L2Advertisement", "adv1", "Duplicate value")),
        id="use duplicate ip pool selectors - in L2 adv",
    ),
    pytest.param(
        [pl("pool1", test="pool1"), pl("pool2", test="pool2"), *NONE_SELECTED],
        {
            "pools": {"pool1": pool_want("10.20.0.0/16"), "pool2": pool_want("30.0.0.0/16")},
            "l2": {"l2adv1": l2_want([])},
            "bgp": {"adv1": adv_want([], local_pref=100), "adv2": adv_want([], local_pref=200)},
        },
        id="use non existent label for ip pool selectors",
    ),
    pytest.param(
        [
            pl("pool1"),
            pl("pool2"),
            *FIRST_SECOND,
            bgp("adv1", ipAddressPools=["pool1"], nodeSelectors=[sel(second="true")]),
            bgp("adv2", ipAddressPools=["pool2"], nodeSelectors=[sel(first="true")]),
            l2("l2adv1", nodeSelectors=[sel(first="true")], ipAddressPools=["pool1"]),
        ],
        {
            "bgp": {
                "adv1": adv_want(["pool1"], nodes=["second"]),
                "adv2": adv_want(["pool2"], nodes=["first"]),
            },
            "l2": {"l2adv1": l2_want(["pool1"], nodes=["first"])},
        },
        id="use node selectors",
    ),
    pytest.param(
        [
            pl("pool1"),
            *FIRST_SECOND,
            bgp("adv1", ipAddressPools=["pool1"], nodeSelectors=[sel(second="true"), sel(second="true")]),
            l2("l2adv1", nodeSelectors=[sel(first="true"), sel(first="true")], ipAddressPools=["pool1"]),
        ],
        refused(
            ("BGPAdvertisement", "adv1", "Duplicate value"), ("L2Advertisement", "l2adv1", "Duplicate value")
        ),
        id="use duplicate match labels in node selectors",
    ),
    pytest.param(
        [
            pl("pool1"),
            *FIRST_SECOND,
            bgp(
                "adv1",
                ipAddressPools=["pool1"],
                nodeSelectors=[
                    {
                        "matchExpressions": [
                            {"key": HOSTS, "operator": "In", "values": ["first", "second"]},
                            {"key": HOSTS, "operator": "In", "values": ["second", "first"]},
                        ]
                    }
                ],
            ),
            l2("l2adv1", nodeSelectors=[expr(HOSTS, "In", "first")], ipAddressPools=["pool1"]),
        ],
        refused(("BGPAdvertisement", "adv1", "")),
        marks=xfail(DUP_VALUES),
        id="use duplicate match expression values in node selector",
    ),
    pytest.param(
        [pl("pool1"), bgp("adv1"), l2("l2adv1"), *FIRST_SECOND],
        {
            "bgp": {"adv1": adv_want(["pool1"], nodes=["first", "second"])},
            "l2": {"l2adv1": l2_want(["pool1"], nodes=["first", "second"])},
        },
        id="no nodes means all nodes",
    ),
    pytest.param(
        [
            pool("pool1", "1.2.3.0/24"),
            P1,
            bgp("adv1", aggregationLength=32, localPref=100, ipAddressPools=["pool1"], peers=["peer1"]),
        ],
        {
            "peers": {"peer1": peer_want(42, 42)},
            "bgp": {"adv1": adv_want(["pool1"], local_pref=100, peers=["peer1"])},
        },
        id="advertisement with peer selector",
    ),
    pytest.param(
        [peer("peer1", myASN=42, dynamicASN="internal", peerAddress="1.2.3.4")],
        {"peers": {"peer1": peer_want(42, None, dynamicASN="internal")}},
        id="peer with dynamic asn",
    ),
    pytest.param(
        [peer("p", myASN=42)],
        refused(("BGPPeer", "p", "exactly one of peerASN")),
        id="peer without asn or dynamic asn",
    ),
    pytest.param(
        [peer("p", myASN=42, peerASN=42, dynamicASN="internal")],
        refused(("BGPPeer", "p", "exactly one of peerASN")),
        id="peer with both asn and dynamic asn",
    ),
    pytest.param(
        [peer("peer1", myASN=42, dynamicASN="internal", interface="net0")],
        {"peers": {"peer1": peer_want(42, None, "", dynamicASN="internal")}},
        marks=xfail(UNNUMBERED),
        id="unnumbered peer without address with interface ok",
    ),
    pytest.param(
        [peer("invalid", myASN=42, dynamicASN="internal")],
        refused(("BGPPeer", "invalid", "exactly one of peerAddress")),
        id="unnumbered peer without address without interface nok",
    ),
    pytest.param(
        [peer("invalid", myASN=42, dynamicASN="internal", peerAddress="1.2.3.4", interface="net0")],
        refused(("BGPPeer", "invalid", "exactly one of peerAddress")),
        id="unnumbered peer with address with interface nok",
    ),
    pytest.param(
        [peer("peer1", myASN=42, peerASN=142, peerAddress="1.2.3.4", disableMP=True)],
        {"peers": {"peer1": peer_want(42, 142)}},
        id="peer with DisableMP field",
    ),
    pytest.param(
        [peer("peer1", myASN=100, peerASN=200, peerAddress="1.2.3.4", localASN=65410)],
        {"peers": {"peer1": peer_want(100, 200, localASN=65410)}},
        id="peer with localASN field",
    ),
]


@pytest.mark.parametrize(("objects", "want"), PARSE)
def test_parse(objects: list[Obj], want: Mapping[str, Any] | Refused) -> None:
    check(objects, want, node_labels=PEER_LABELS)


def test_parse_namespace_and_service_selection_both_apply() -> None:
    """MetalLB's ByNamespace and ByServiceSelector for one pool: the Service must pass both."""
    v = parse(
        pool(
            "pool1",
            "30.0.0.0/8",
            serviceAllocation={
                "priority": 2,
                "namespaces": ["test-ns1"],
                "serviceSelectors": [sel(**{"testsvc-1": "1"})],
            },
        )
    )
    p = v.pools["pool1"]
    assert serves(p, "test-ns1", {}, {"testsvc-1": "1"})
    assert not serves(p, "test-ns1", {}, {})
    assert not serves(p, "test-ns2", {}, {"testsvc-1": "1"})


def test_parse_only_priority_serves_every_service() -> None:
    """MetalLB (main): serviceAllocation with only priority gets ServiceSelectors [Everything]."""
    p = parse(pool("pool1", "10.20.0.0/16", serviceAllocation={"priority": 1})).pools["pool1"]
    assert p.allocation_tier and serves(p, "any", {}, {"app": "x"})


# --- what one object cannot show: the API server's part -------------------------------------------


@pytest.mark.parametrize(
    "desc", ["duplicate peers", "duplicate pool definition", "Multiple BFD Profiles with the same name"]
)
def test_names_are_the_api_servers(desc: str) -> None:
    """MetalLB keys these by name and rejects a repeat; the API server holds one object per name."""
    registry = Registry()
    rt = registry.get("", "v1", "configmaps")
    assert rt is not None
    store = Store(registry)
    store.create(rt, "default", {"metadata": {"name": "peer1"}})
    with pytest.raises(ApiError) as exc:
        store.create(rt, "default", {"metadata": {"name": "peer1"}})
    assert (exc.value.code, exc.value.reason) == (409, "AlreadyExists"), desc


def test_no_pool_name_is_the_api_servers() -> None:
    """MetalLB's "no pool name": the API server requires metadata.name."""
    registry = Registry()
    rt = registry.get("", "v1", "configmaps")
    assert rt is not None
    with pytest.raises(ApiError) as exc:
        Store(registry).create(rt, "default", {"metadata": {}})
    assert (exc.value.code, exc.value.reason) == (422, "Invalid")


def test_repeated_alias_in_one_community_is_the_api_servers() -> None:
    """MetalLB's "duplicate communities definition (in the same cr)": spec.communities is a list map
    keyed by name, so kube-apiserver refuses a repeated name ("Duplicate value"). (The lab validator
    checks list-type set, not map keys, hence the schema check.)"""
    items = SCHEMAS["Community"]["properties"]["spec"]["properties"]["communities"]
    assert items["x-kubernetes-list-type"] == "map"
    assert items["x-kubernetes-list-map-keys"] == ["name"]


# --- cross-object errors: MetalLB rejects the whole configuration ---------------------------------


@pytest.mark.parametrize(
    ("objects", "innocent"),
    [
        pytest.param(
            [pool("pool1", "10.0.0.0/8"), pool("pool2", "10.0.0.0/16")],
            "pool1",
            marks=xfail(
                "Overlapping pools: the older pool keeps the addresses, the later one is refused "
                "(Overlap); MetalLB rejects the configuration as a whole"
            ),
            id="overlapping CIDRs",
        ),
        pytest.param(
            [
                *TWO_NODES,
                pool("pool1", "10.20.30.40/24"),
                bgp("adv1", localPref=100),
                bgp("adv2", localPref=200),
            ],
            "pool1",
            marks=xfail(
                "Cross-object errors: the object at fault (adv2, LocalPrefConflict) is flagged and "
                "every other object keeps running; MetalLB rejects the whole configuration"
            ),
            id="different local pref - same peers and nodes",
        ),
    ],
)
def test_whole_configuration_rejected(objects: list[Obj], innocent: str) -> None:
    assert innocent not in parse(*objects).pools


# --- TestServiceSelectors ---------------------------------------------------------------------------

NGINX = [sel(app="nginx")]
SERVICE_SELECTORS: list[Any] = [
    pytest.param(
        [pool("pool1", "1.2.3.0/24"), bgp("adv1", serviceSelectors=NGINX)],
        {"bgp": {"adv1": adv_want(["pool1"])}},
        id="BGP advertisement with service selectors",
    ),
    pytest.param(
        [pool("pool1", "1.2.3.0/24"), l2("adv1", serviceSelectors=[sel(app="web")])],
        {"l2": {"adv1": l2_want(["pool1"])}},
        id="L2 advertisement with service selectors",
    ),
    pytest.param(
        [pool("pool1", "1.2.3.0/24"), bgp("adv1", serviceSelectors=[sel(app="nginx"), sel(app="apache")])],
        {"bgp": {"adv1": adv_want(["pool1"])}},
        id="BGP advertisement with multiple service selectors (OR logic)",
    ),
    pytest.param(
        [pool("pool1", "1.2.3.0/24"), bgp("adv1", aggregationLength=24, serviceSelectors=NGINX)],
        refused(("BGPAdvertisement", "adv1", "serviceSelectors announce each")),
        id="BGP advertisement - serviceSelectors with non-default aggregationLength is mutually exclusive",
    ),
    pytest.param(
        [pool("pool1", "2001:db8::/64"), bgp("adv1", aggregationLengthV6=64, serviceSelectors=NGINX)],
        refused(("BGPAdvertisement", "adv1", "serviceSelectors announce each")),
        id="BGP advertisement - serviceSelectors with non-default aggregationLengthV6 is mutually exclusive",
    ),
    pytest.param(
        [pool("pool1", "1.2.3.0/24"), bgp("adv1", aggregationLength=32, serviceSelectors=NGINX)],
        {"bgp": {"adv1": adv_want(["pool1"])}},
        id="BGP advertisement - serviceSelectors with default aggregationLengthV4 is allowed",
    ),
    pytest.param(
        [pool("pool1", "1000::/64"), bgp("adv1", aggregationLengthV6=128, serviceSelectors=NGINX)],
        {"bgp": {"adv1": adv_want(["pool1"])}},
        id="BGP advertisement - serviceSelectors with default aggregationLengthV6 is allowed",
    ),
    pytest.param(
        [
            pool("pool1", "1.2.3.0/24", "1000::/64"),
            bgp("adv1", aggregationLength=32, aggregationLengthV6=128, serviceSelectors=NGINX),
        ],
        {"pools": {"pool1": pool_want("1.2.3.0/24", "1000::/64")}, "bgp": {"adv1": adv_want(["pool1"])}},
        id="BGP advertisement - serviceSelectors with both default lengths is allowed",
    ),
    pytest.param(
        [pool("pool1", "1.2.3.0/24"), bgp("adv1", serviceSelectors=[sel(app="nginx"), sel(app="nginx")])],
        refused(("BGPAdvertisement", "adv1", "Duplicate value")),
        id="duplicate service selectors",
    ),
]


@pytest.mark.parametrize(("objects", "want"), SERVICE_SELECTORS)
def test_service_selectors(objects: list[Obj], want: Mapping[str, Any] | Refused) -> None:
    check(objects, want)


@pytest.mark.parametrize(
    ("selectors", "labels", "expected"),
    [
        (NGINX, {"app": "nginx"}, True),
        (NGINX, {"app": "apache"}, False),
        ([sel(app="nginx"), sel(app="apache")], {"app": "apache"}, True),  # OR logic
        ([sel(app="web")], {"app": "web", "tier": "x"}, True),
    ],
)
def test_service_selectors_select(selectors: list[Obj], labels: dict[str, str], expected: bool) -> None:
    v = parse(
        pool("pool1", "1.2.3.0/24"),
        bgp("adv1", serviceSelectors=selectors),
        l2("l2adv1", serviceSelectors=selectors),
    )
    assert v.bgp[0].matches_service(labels) is expected
    assert v.l2[0].matches_service(labels) is expected


# --- TestL2AdvertisementFromCRPreferred -------------------------------------------------------------

EDGE_NODES = [
    node("edge-a", role="edge", zone="primary"),
    node("edge-b", role="edge"),
    node("worker-a", role="worker"),
]


def pref(weight: int, **labels: str) -> Obj:
    return {"weight": weight, "preference": sel(**labels)}


@pytest.mark.parametrize(
    ("spec", "want_nodes", "want_preferred"),
    [
        pytest.param(
            {"preferredNodeSelectors": [pref(100, role="edge")]},
            ["edge-a", "edge-b", "worker-a"],
            {"edge-a": 100, "edge-b": 100},
            id="preferred selector scores matching nodes",
        ),
        pytest.param(
            {"serviceSelectors": [sel(app="web")], "preferredNodeSelectors": [pref(100, role="edge")]},
            ["edge-a", "edge-b", "worker-a"],
            {"edge-a": 100, "edge-b": 100},
            id="service selectors do not restrict preferred scoring",
        ),
        pytest.param(
            {}, ["edge-a", "edge-b", "worker-a"], {}, id="no preferred selectors leaves PreferredNodes nil"
        ),
        pytest.param(
            {"nodeSelectors": [sel(role="worker")], "preferredNodeSelectors": [pref(50, role="edge")]},
            ["worker-a"],
            {},
            id="preferred selectors disjoint from node selectors yield no scores",
        ),
        pytest.param(
            {"preferredNodeSelectors": [pref(40, role="edge"), pref(30, zone="primary")]},
            ["edge-a", "edge-b", "worker-a"],
            {"edge-a": 70, "edge-b": 40},
            id="multiple preferred selectors sum on matching nodes",
        ),
    ],
)
def test_l2_advertisement_preferred(spec: Obj, want_nodes: list[str], want_preferred: dict[str, int]) -> None:
    v = parse(pool("pool1", "10.20.0.0/24"), l2("ad", **spec), *EDGE_NODES)
    assert v.refused == {}
    a = v.l2[0]
    assert [n for n in sorted(v.nodes) if a.selects_node(v.nodes[n])] == want_nodes
    assert {n: a.preference(f) for n, f in v.nodes.items() if a.preference(f)} == want_preferred


# --- TestSetL2AdvertisementsToPoolsPreferred --------------------------------------------------------


@pytest.mark.parametrize(
    ("objects", "total"),
    [
        pytest.param(
            [
                pool("pool-a", "10.20.0.0/24", labels={"shared": "true"}),
                l2(
                    "prefer-edge",
                    ipAddressPools=["pool-a"],
                    ipAddressPoolSelectors=[sel(shared="true")],
                    preferredNodeSelectors=[pref(50, role="edge")],
                ),
            ],
            50,
            id="pool selected by name and selector attaches once",
        ),
        pytest.param(
            [
                pool("pool-a", "10.20.0.0/24"),
                l2("ad1-edge-70", ipAddressPools=["pool-a"], preferredNodeSelectors=[pref(70, role="edge")]),
                l2("ad2-edge-30", ipAddressPools=["pool-a"], preferredNodeSelectors=[pref(30, role="edge")]),
            ],
            100,
            id="two CRs targeting the same pool attach independently",
        ),
        pytest.param(
            [
                pool("pool-a", "10.20.0.0/24"),
                l2(
                    "sum-edge-zone",
                    ipAddressPools=["pool-a"],
                    preferredNodeSelectors=[pref(40, role="edge"), pref(30, zone="primary")],
                ),
            ],
            70,
            id="one CR with two selectors sums on the same node",
        ),
    ],
)
def test_l2_advertisements_to_pools_preferred(objects: list[Obj], total: int) -> None:
    """The election's score of edge-a for an IP of pool-a: the advertisements of the pool, summed."""
    v = parse(*objects, node("edge-a", role="edge", zone="primary"))
    assert v.refused == {}
    ads = [a for a in v.l2 if a.matches_pool(v.pools["pool-a"])]
    assert preference_scores(["edge-a"], v.nodes, ads) == {"edge-a": total}


# --- TestContainsAdvertisement ----------------------------------------------------------------------
# MetalLB drops an L2Advertisement equal to one the pool already has (containsAdvertisement), an
# optimisation: the announcement is the same either way. Ours has nothing to drop; what is observable
# is ported: an advertisement MetalLB would drop changes neither the interfaces nor the nodes, and ads
# carrying preferences are never dropped, so their weights add up.


@pytest.mark.parametrize(
    ("existing", "candidate"),
    [
        pytest.param(
            [(["nodeA", "nodeB"], ["eth0", "eth1"]), (["nodeB"], [])],
            (["nodeB", "nodeA"], ["eth1", "eth0"]),
            id="Contain",
        ),
        pytest.param([(["a"], [])], (["a"], []), id="Identical ads without preferences still dedupe"),
    ],
)
def test_contained_advertisement_changes_nothing(
    existing: list[tuple[list[str], list[str]]], candidate: tuple[list[str], list[str]]
) -> None:
    from lbspeaker.links import LinkInfo

    links = [LinkInfo("eth0", 2), LinkInfo("eth1", 3), LinkInfo("eth2", 4)]

    def facts(i: int, nodes: list[str], ifaces: list[str]) -> L2AdvertisementFacts:
        return L2AdvertisementFacts.from_object(
            l2(
                f"ad{i}",
                interfaces=ifaces,
                nodeSelectors=[{"matchExpressions": [{"key": HOSTS, "operator": "In", "values": nodes}]}],
            )
        )

    before = [facts(i, n, f) for i, (n, f) in enumerate(existing)]
    after = [*before, facts(len(before), *candidate)]
    hosts = {n: {HOSTS: n} for n in ("a", "nodeA", "nodeB", "nodeC")}
    for labels in hosts.values():
        on = [a for a in before if a.selects_node(labels)]
        on_after = [a for a in after if a.selects_node(labels)]
        assert bool(on) == bool(on_after)
        if on:
            assert _interfaces_for(on, links, None) == _interfaces_for(on_after, links, None)


@pytest.mark.parametrize(
    ("existing", "candidate", "score"),
    [
        pytest.param(50, 50, 100, id="Ads carrying preferences never dedupe so speaker can sum weights"),
        pytest.param(50, None, 50, id="Existing ad has preferences but candidate does not should not dedupe"),
        pytest.param(None, 50, 50, id="Candidate has preferences but existing ad does not should not dedupe"),
    ],
)
def test_advertisements_with_preferences_add_up(
    existing: int | None, candidate: int | None, score: int
) -> None:
    nodes = {"edge-a": NodeFacts("edge-a", labels={HOSTS: "edge-a"})}
    ads = [
        L2AdvertisementFacts.from_object(
            l2(
                f"ad{i}",
                nodeSelectors=[sel(**{HOSTS: "edge-a"})],
                preferredNodeSelectors=[pref(w, **{HOSTS: "edge-a"})] if w else [],
            )
        )
        for i, w in enumerate((existing, candidate))
    ]
    assert preference_scores(["edge-a"], nodes, ads) == {"edge-a": score}

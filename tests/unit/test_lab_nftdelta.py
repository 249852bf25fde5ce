"""kube-proxy stand-in: incremental nftables transactions (`nftrender.delta_text`).

Table tests pin what one change sends; a property test replays random sequences of
changes on a model of the table (every delete must hit something that exists, no chain
may go while referenced) and, where `nft` and root are available, on a real table in a
throwaway network namespace, comparing with a full render each step.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.agents.nftrender import (
    MAP_TYPES,
    TABLE,
    Endpoint,
    Fragment,
    FragmentKey,
    NodeTable,
    PortIndex,
    Ruleset,
    ServicePort,
    base,
    build,
    delta_text,
    fragment,
    full_text,
    service_ports,
)

W1, W2 = "kind-worker", "kind-worker2"
NODE_IP, NODE_IP6 = "172.18.0.3", "fc00:f853:ccd:e793::3"
CIDR6 = "fd00:10:244::/48"
CLUSTER = "10.244.0.0/16"


def sp(
    name: str,
    *eps: Endpoint,
    lb: tuple[str, ...] = ("172.18.255.200",),
    cip: tuple[str, ...] = ("10.96.0.10",),
    local: bool = False,
    node_port: int | None = 30080,
) -> ServicePort:
    return ServicePort("default", name, "http", "TCP", 80, node_port, cip, lb, local, tuple(eps))


def ruleset(*ports: ServicePort, node: str = W1) -> Ruleset:
    return build(sorted(ports, key=lambda p: p.key), node, NODE_IP, node_ip6=NODE_IP6, cluster_cidr6=CIDR6)


def lines(text: str | None) -> list[str]:
    assert text is not None
    return text.splitlines()


E1 = Endpoint("10.244.1.2", 8080, W1)
E2 = Endpoint("10.244.2.2", 8080, W2)


def test_nothing_changed_sends_nothing_and_base_change_needs_full() -> None:
    a = ruleset(sp("web", E1))
    assert delta_text(a, ruleset(sp("web", E1))) == ""
    moved = build([sp("web", E1)], W1, "172.18.0.9", node_ip6=NODE_IP6, cluster_cidr6=CIDR6)
    assert delta_text(a, moved) is None


def test_add_a_service_adds_its_chains_and_elements_only() -> None:
    old = ruleset(sp("web", E1))
    new = ruleset(sp("web", E1), sp("api", E2, lb=("172.18.255.201",), cip=("10.96.0.11",), node_port=30081))
    out = lines(delta_text(old, new))
    assert not any(ln.startswith(("flush", "delete")) for ln in out)
    added = {ln.split()[-1] for ln in out if ln.startswith("add chain")}
    assert added == set(new.chains) - set(old.chains) and added
    elems = [ln for ln in out if ln.startswith("add element")]
    # service-ips4 (clusterIP + LB), service-nodeports4, and the v6 nodePort (no v6 endpoint) rejects
    assert len(elems) == 3
    assert "10.96.0.11 . tcp . 80 " in elems[0] and "172.18.255.201 . tcp . 80 " in elems[0]
    assert "web" not in " ".join(out)
    assert " service-nodeports4 { tcp . 30081 " in elems[1]
    assert " no-endpoint-nodeports6 { tcp . 30081 " in elems[2] and elems[2].endswith(": goto reject-chain }")


def test_remove_a_service_deletes_elements_before_its_chains() -> None:
    old = ruleset(sp("web", E1), sp("api", E2, lb=(), cip=("10.96.0.11",), node_port=None))
    new = ruleset(sp("web", E1))
    out = lines(delta_text(old, new))
    first_chain_op = min(i for i, ln in enumerate(out) if "chain" in ln)
    assert out[0].startswith("delete element inet lbspeaker_kubeproxy service-ips4 { 10.96.0.11 . tcp . 80 }")
    gone = set(old.chains) - set(new.chains)
    assert {ln.split()[-1] for ln in out if ln.startswith("delete chain")} == gone
    assert {ln.split()[-1] for ln in out[first_chain_op:] if ln.startswith("flush chain")} == gone
    assert not any(ln.startswith("add") for ln in out)


def test_endpoint_moving_rewrites_the_service_chain_and_swaps_endpoint_chains() -> None:
    old = ruleset(sp("web", E1))
    new = ruleset(sp("web", E2))
    out = lines(delta_text(old, new))
    svc = next(n for n in new.chains if n.startswith("svc_") and n.endswith("_4"))
    assert f"flush chain inet {TABLE} {svc}" in out
    assert any(ln.startswith(f"add rule inet {TABLE} {svc} numgen random mod 1 vmap") for ln in out)
    (ep_new,) = [n for n in set(new.chains) - set(old.chains)]
    (ep_old,) = [n for n in set(old.chains) - set(new.chains)]
    assert out.index(f"add chain inet {TABLE} {ep_new}") < out.index(f"flush chain inet {TABLE} {svc}")
    assert out[-1] == f"delete chain inet {TABLE} {ep_old}"
    assert not any("element" in ln for ln in out)  # the frontends still go to the same chains


def test_etp_flip_to_local_without_local_endpoint_retargets_and_drops() -> None:
    old = ruleset(sp("web", E2))
    new = ruleset(sp("web", E2, local=True))
    out = lines(delta_text(old, new))
    deleted = [ln for ln in out if ln.startswith("delete element")]
    assert len(deleted) == 2  # the LB IP and the nodePort pointed at ext_
    add_ips = next(ln for ln in out if ln.startswith(f"add element inet {TABLE} service-ips4"))
    assert "172.18.255.200 . tcp . 80 " in add_ips and ": goto local_" in add_ips
    assert "10.96.0.10" not in add_ips  # the clusterIP's target did not change
    drop = next(ln for ln in out if ln.startswith(f"add element inet {TABLE} no-endpoint-services4"))
    assert '172.18.255.200 . tcp . 80 comment "default/web:http/TCP" : drop' in drop
    assert any(ln.startswith("delete chain") and "ext_" in ln for ln in out)
    # and back: the drop goes, ext_ comes back
    back = lines(delta_text(new, old))
    assert any(ln.startswith(f"delete element inet {TABLE} no-endpoint-services4") for ln in back)
    assert any(ln.startswith("add chain") and "ext_" in ln for ln in back)


def test_last_endpoint_gone_turns_dispatch_into_reject_v6() -> None:
    e6 = Endpoint("fd00:10:244:1::2", 8080, W1)
    old = ruleset(sp("web", e6, lb=("fc00:f853:ccd:e793::200",), cip=("fd00:10:96::10",)))
    new = ruleset(sp("web", lb=("fc00:f853:ccd:e793::200",), cip=("fd00:10:96::10",)))
    out = lines(delta_text(old, new))
    rej = next(ln for ln in out if ln.startswith(f"add element inet {TABLE} no-endpoint-services6"))
    assert "fd00:10:96::10 . tcp . 80 " in rej and "fc00:f853:ccd:e793::200 . tcp . 80 " in rej
    assert rej.count(": goto reject-chain") == 2
    assert any(ln.startswith(f"delete element inet {TABLE} service-ips6") for ln in out)
    assert any(ln.startswith(f"delete element inet {TABLE} service-nodeports6") for ln in out)
    assert {ln.split()[-1] for ln in out if ln.startswith("delete chain")} == set(old.chains)


def test_fragments_are_shared_by_nodes_except_for_etp_local() -> None:
    cache: dict[FragmentKey, Fragment] = {}
    ports = [sp("a", E1, local=True), sp("b", E1)]
    for node in (W1, W2):
        for p in ports:
            fragment(p, node, False, "10.244.0.0/16", None, cache)
    assert len(cache) == 3  # "a" per node, "b" shared
    shared = cache[(ports[1], None, False, "10.244.0.0/16", None)]
    assert fragment(ports[1], W2, False, "10.244.0.0/16", None, cache) is shared


# -- property: incremental == full -------------------------------------------------------------------

TABLE_RE = re.compile(r"^(add|flush|delete) (chain|rule|element) inet \S+ (\S+)(?: (.*))?$")


class Model:
    """The table as nft would hold it after `full_text` and `delta_text` transactions."""

    def __init__(self, rs: Ruleset) -> None:
        self.chains = {n: list(r) for n, r in rs.chains.items()}
        self.elements = {k: v for k, v in rs.elements.items()}

    def refs(self) -> set[str]:
        out = {v.split()[1] for v, _ in self.elements.values() if v.startswith("goto ")}
        for rules in self.chains.values():
            for r in rules:
                out.update(re.findall(r"goto (\w+)", r))
        return out

    def apply(self, text: str) -> None:
        for ln in text.splitlines():
            m = TABLE_RE.match(ln)
            assert m, ln
            op, kind, name, rest = m.groups()
            if kind == "chain" and op == "add":
                self.chains.setdefault(name, [])
            elif kind == "chain" and op == "flush":
                assert name in self.chains
                self.chains[name] = []
            elif kind == "chain":
                assert name in self.chains and not self.chains[name] and name not in self.refs(), ln
                del self.chains[name]
            elif kind == "rule":
                assert name in self.chains
                self.chains[name].append(rest)
            else:
                assert name in MAP_TYPES and rest.startswith("{ ") and rest.endswith(" }")
                for item in rest[2:-2].split(", "):
                    if op == "delete":
                        assert (name, item) in self.elements, ln
                        del self.elements[(name, item)]
                    else:
                        em = re.fullmatch(r'(.*) comment "(.*)" : (.*)', item)
                        assert em and (name, em[1]) not in self.elements, ln
                        assert em[3].split()[-1] in self.chains or em[3] == "drop" or "reject" in em[3]
                        self.elements[(name, em[1])] = (em[3], em[2])
        assert self.refs() <= set(self.chains) | {"reject-chain"}


POOL_EPS = [
    Endpoint("10.244.1.2", 8080, W1),
    Endpoint("10.244.2.2", 8080, W2),
    Endpoint("10.244.1.3", 8080, W1, ready=False, serving=True, terminating=True),
    Endpoint("10.244.2.3", 8080, W2, ready=False, serving=False),
    Endpoint("fd00:10:244:1::2", 8080, W1),
    Endpoint("fd00:10:244:2::2", 8080, W2),
]
service_port = st.builds(
    lambda name, eps, lb, cip, local, np: sp(
        name, *sorted(eps, key=lambda e: e.ip), lb=lb, cip=cip, local=local, node_port=np
    ),
    st.sampled_from(["a", "b", "c", "d"]),
    st.sets(st.sampled_from(POOL_EPS), max_size=4),
    st.sampled_from([(), ("172.18.255.200",), ("172.18.255.201", "fc00:f853:ccd:e793::200")]),
    st.sampled_from([("10.96.0.10",), ("10.96.0.11", "fd00:10:96::11"), ("fd00:10:96::12",)]),
    st.booleans(),
    st.sampled_from([None, 30080, 30081]),
)


def state(ports: list[ServicePort]) -> list[ServicePort]:
    by_key = {p.key: p for p in ports}  # one ServicePort per key (the API has one per port)
    return sorted(by_key.values(), key=lambda p: p.key)


states = st.lists(st.lists(service_port, max_size=4).map(state), min_size=2, max_size=6)


def rs_for(ports: list[ServicePort], node: str) -> Ruleset:
    return build(ports, node, NODE_IP, node_ip6=NODE_IP6, cluster_cidr6=CIDR6)


@settings(max_examples=300, deadline=None)
@given(states, st.sampled_from([W1, W2]))
def test_incremental_sequence_matches_full_render_model(seq: list[list[ServicePort]], node: str) -> None:
    prev = rs_for(seq[0], node)
    model = Model(prev)
    for ports in seq[1:]:
        new = rs_for(ports, node)
        text = delta_text(prev, new)
        assert text is not None
        model.apply(text)
        assert model.chains == {n: list(r) for n, r in new.chains.items()}
        assert model.elements == new.elements
        assert (text == "") == (prev.chains == new.chains and prev.elements == new.elements)
        prev = new


@settings(max_examples=300, deadline=None)
@given(states, st.sampled_from([W1, W2]))
def test_node_table_updated_port_by_port_equals_the_whole_render(
    seq: list[list[ServicePort]], node: str
) -> None:
    """What the stand-in runs: only the changed ports' fragments go in, yet the table equals
    `build` of all ports and the delta equals the one between the two whole renders."""
    table = NodeTable(base(NODE_IP, NODE_IP6))
    prev = rs_for([], node)
    have: dict[str, ServicePort] = {}
    cache: dict[FragmentKey, Fragment] = {}
    for ports in seq:
        now = {p.key: p for p in ports}
        changed = {k: now.get(k) for k in {*have, *now} if have.get(k) != now.get(k)}
        frags = {k: fragment(p, node, True, CLUSTER, CIDR6, cache) if p else None for k, p in changed.items()}
        text = table.update(frags)
        new = rs_for(ports, node)
        assert (table.chains, table.elements) == (new.chains, new.elements)
        assert text == delta_text(prev, new)
        assert table.ruleset() == new
        prev, have = new, now


def _svc(name: str, lb: str | None, etp: str, ports: tuple[int, ...]) -> dict:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.10",
            "externalTrafficPolicy": etp,
            "ports": [{"name": f"p{p}", "port": p, "protocol": "TCP", "nodePort": 30000 + p} for p in ports],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": lb}] if lb else []}},
    }


def _slice(svc: str, n: int, node: str, ready: bool) -> dict:
    return {
        "metadata": {
            "name": f"{svc}-{n}", "namespace": "default", "labels": {"kubernetes.io/service-name": svc}
        },
        "ports": [
            {"name": "p80", "port": 8080, "protocol": "TCP"}, {"name": "p81", "port": 8081, "protocol": "TCP"}
        ],
        "endpoints": [{"addresses": [f"10.244.{n}.2"], "nodeName": node, "conditions": {"ready": ready}}],
    }


api_object = st.one_of(
    st.builds(
        lambda n, lb, etp, ports: ("svc", n, _svc(n, lb, etp, ports)),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([None, "172.18.255.200", "172.18.255.201"]),
        st.sampled_from(["Cluster", "Local"]),
        st.sampled_from([(80,), (80, 81), (81,)]),
    ),
    st.builds(
        lambda svc, n, node, ready: ("slice", f"{svc}-{n}", _slice(svc, n, node, ready)),
        st.sampled_from(["a", "b", "c", "gone"]),
        st.integers(1, 2),
        st.sampled_from([W1, W2]),
        st.booleans(),
    ),
)
api_step = st.one_of(api_object, st.tuples(st.sampled_from(["del-svc", "del-slice"]), st.sampled_from(
    ["a", "b", "c", "a-1", "b-2", "c-1", "gone-1"]), st.none()))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(api_step, max_size=4), min_size=1, max_size=8))
def test_port_index_re_reading_changed_services_only_equals_service_ports(steps: list[list[tuple]]) -> None:
    """Informer semantics: an event replaces an object's dict; untouched objects keep theirs."""
    services: dict[str, dict] = {}
    slices: dict[str, dict] = {}
    index = PortIndex()
    before: dict[str, ServicePort] = {}
    for batch in steps:
        for kind, name, obj in batch:
            if kind == "svc":
                services[name] = obj
            elif kind == "slice":
                slices[name] = obj
            else:
                (services if kind == "del-svc" else slices).pop(name, None)
        changed = index.update(list(services.values()), list(slices.values()))
        want = service_ports(list(services.values()), list(slices.values()))
        assert index.ports() == want
        now = {p.key: p for p in want}
        assert changed == {k: now.get(k) for k in {*before, *now} if before.get(k) != now.get(k)}
        before = now
    again = index.update(list(services.values()), list(slices.values()))
    assert again == {}, "nothing changed, nothing re-read"


# -- the same against the kernel ---------------------------------------------------------------------

LAB_LOCK = "/run/lbspeaker-lab.lock"
real_nft = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None, reason="needs root + nft"
)


@contextlib.contextmanager
def throwaway_netns() -> Iterator[str]:
    """A fresh network namespace, taken under the lab lock (skips if the lab stays busy 120 s)."""
    with open(LAB_LOCK, "a") as lock:
        deadline = time.monotonic() + 120
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip("lab lock busy")
                time.sleep(0.5)
        name = f"kpdelta-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        try:
            yield name
        finally:
            subprocess.run(["ip", "netns", "del", name], check=False)


def nft(ns: str, text: str | None = None, *argv: str) -> str:
    cmd = ["ip", "netns", "exec", ns, "nft", *(argv or ("-f", "-"))]
    return subprocess.run(cmd, input=text, capture_output=True, text=True, check=True).stdout


def kernel_table(ns: str) -> list[str]:
    """`nft -j list table`, order-free where the kernel's order is not ours (handles, elements)."""
    objs, rules = [], []
    for obj in json.loads(nft(ns, None, "-j", "list", "table", "inet", TABLE))["nftables"]:
        for body in obj.values():
            if isinstance(body, dict):
                body.pop("handle", None)
                if "elem" in body:
                    body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in body["elem"])
        if "rule" in obj:
            rules.append((obj["rule"]["chain"], json.dumps(obj, sort_keys=True)))
        else:
            objs.append(json.dumps(obj, sort_keys=True))
    # rules keep their order within each chain (a stable sort by chain)
    return sorted(objs) + [r for _, r in sorted(rules, key=lambda cr: cr[0])]


@real_nft
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(states, min_size=1, max_size=1).map(lambda x: x[0]))
def test_incremental_sequence_matches_full_render_in_the_kernel(seq: list[list[ServicePort]]) -> None:
    with throwaway_netns() as ns:
        prev = rs_for(seq[0], W1)
        nft(ns, full_text(prev, W1))
        for ports in seq[1:]:
            new = rs_for(ports, W1)
            text = delta_text(prev, new)
            assert text is not None
            if text:
                nft(ns, text)
            got = kernel_table(ns)
            nft(ns, full_text(new, W1))
            assert got == kernel_table(ns)
            prev = new

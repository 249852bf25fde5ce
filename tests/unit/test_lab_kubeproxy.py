"""The kube-proxy stand-in's adapter: what it sends each node's kernel as Services change.

Fake informers hold the objects (an event replaces a dict, as the real informer does);
`nsops` is replaced by a recorder whose per-node "kernel" is the nftables model of
test_lab_nftdelta. After every reconcile each node's kernel must equal the whole render of
all Services -- including after a node vanished and came back, and after a failed nft.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from lab.agents import kubeproxy as kp
from lab.agents.nftrender import Ruleset, build, service_ports
from tests.unit.test_lab_nftdelta import Model, _slice, _svc

W1, W2 = "kind-worker", "kind-worker2"


class FakeInformer:
    def __init__(self, objs: list[dict[str, Any]] | None = None) -> None:
        self.objs = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs or []}

    def add_listener(self, fn: Any) -> None: ...

    def items(self) -> list[dict[str, Any]]:
        return list(self.objs.values())

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objs.get((namespace, name))

    def put(self, obj: dict[str, Any]) -> None:
        self.objs[(obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj


FIXED_CHAINS = {
    "nat-prerouting", "nat-output", "nat-postrouting", "mark-for-masquerade", "filter-input",
    "filter-forward", "filter-output", "reject-chain", "no-endpoints", "services",
}


def parse_full(text: str) -> Model:
    """The service chains and map elements of a whole-table load (`full_text`)."""
    model = Model(Ruleset("", {}, {}))
    chain = map_name = None
    for ln in text.splitlines():
        if m := re.fullmatch(r"\tchain (\S+) \{", ln):
            chain = m[1]
            if chain not in FIXED_CHAINS:
                model.chains[chain] = []
        elif m := re.fullmatch(r"\tmap (\S+) \{", ln):
            map_name = m[1]
        elif ln == "\t}":
            chain = map_name = None
        elif chain and chain not in FIXED_CHAINS and ln.startswith("\t\t"):
            model.chains[chain].append(ln[2:])
        elif map_name and ln.startswith("\t\t\t"):
            em = re.fullmatch(r'(.*) comment "(.*)" : (.*),', ln[3:])
            assert em, ln
            model.elements[(map_name, em[1])] = (em[3], em[2])
    return model


def node(name: str, index: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"podCIDR": f"10.244.{index}.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": f"172.18.0.{index + 2}"}]},
    }


class Kernels:
    """Every node's table as nft would hold it; `fail` makes the next incremental nft fail."""

    def __init__(self) -> None:
        self.tables: dict[str, Model] = {}
        self.present: set[str] = {W1, W2}
        self.sent: list[tuple[str, str]] = []  # (node, "full" | "delta")
        self.fail_next_delta = False

    def run_in(self, netns: str, argv: list[str], check: bool = True, input: str | None = None) -> Any:
        if argv[:2] == ["nft", "list"]:
            return type("R", (), {"returncode": 0 if netns in self.tables else 1, "stdout": ""})()
        assert argv == ["nft", "-f", "-"] and input is not None
        if input.startswith("# kube-proxy stand-in"):
            self.tables[netns] = parse_full(input)
            self.sent.append((netns, "full"))
        else:
            if self.fail_next_delta or netns not in self.tables:
                self.fail_next_delta = False
                raise kp.nsops.NetnsError("nft: injected failure")
            self.tables[netns].apply(input)
            self.sent.append((netns, "delta"))
        return type("R", (), {"returncode": 0, "stdout": ""})()


Rig = tuple[kp.KubeProxy, FakeInformer, FakeInformer, FakeInformer, "Kernels"]


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Rig:
    kernels = Kernels()
    monkeypatch.setattr(kp.nsops, "run_in", kernels.run_in)
    monkeypatch.setattr(kp.nsops, "netns_exists", lambda name: name in kernels.present)
    monkeypatch.setattr(kp.nsops, "link_exists", lambda netns, ifname: False)
    services = FakeInformer(
        [_svc("a", "172.18.255.200", "Cluster", (80,)), _svc("b", None, "Local", (80, 81))]
    )
    slices = FakeInformer([_slice("a", 1, W1, True), _slice("b", 2, W2, True)])
    nodes = FakeInformer([node(W1, 1), node(W2, 2)])
    proxy = kp.KubeProxy(services, slices, nodes, FakeInformer())  # type: ignore[arg-type]
    return proxy, services, slices, nodes, kernels


def assert_kernels_match(
    proxy: kp.KubeProxy, services: FakeInformer, slices: FakeInformer, kernels: Kernels
) -> None:
    ports = service_ports(services.items(), slices.items())
    for name, index in ((W1, 1), (W2, 2)):
        if name not in kernels.present:
            continue
        want = build(ports, name, f"172.18.0.{index + 2}", node_ip6=None, cluster_cidr6=proxy.cluster_cidr6)
        got = kernels.tables[name]
        assert got.chains == {n: list(r) for n, r in want.chains.items()}, name
        assert got.elements == want.elements, name


def sent_by_a_reconcile(proxy: kp.KubeProxy, kernels: Kernels, verify: bool) -> list[tuple[str, str]]:
    """What one reconcile sent to the nodes' kernels."""
    kernels.sent.clear()
    proxy.reconcile(verify=verify)
    return list(kernels.sent)


def test_one_changed_service_is_one_delta_per_node_and_a_returning_node_is_loaded_whole(rig: Rig) -> None:
    proxy, services, slices, _, kernels = rig
    proxy.reconcile()
    assert kernels.sent == [(W1, "full"), (W2, "full")]
    assert_kernels_match(proxy, services, slices, kernels)

    kernels.sent.clear()
    moved = copy.deepcopy(services.get("default", "b"))
    moved["status"]["loadBalancer"]["ingress"] = [{"ip": "172.18.255.201"}]
    services.put(moved)
    proxy.reconcile(verify=False)
    assert kernels.sent == [(W1, "delta"), (W2, "delta")]
    assert_kernels_match(proxy, services, slices, kernels)

    assert sent_by_a_reconcile(proxy, kernels, verify=False) == [], "nothing changed, nothing sent"

    # W2's namespace goes away; a Service changes meanwhile; W2 comes back with an empty kernel
    kernels.present.discard(W2)
    del kernels.tables[W2]
    slices.put(_slice("a", 1, W2, False))
    proxy.reconcile(verify=False)
    kernels.present.add(W2)
    assert sent_by_a_reconcile(proxy, kernels, verify=False) == [(W2, "full")]
    assert_kernels_match(proxy, services, slices, kernels)


def test_a_failed_delta_falls_back_to_the_whole_table_and_a_flushed_table_is_reloaded(rig: Rig) -> None:
    proxy, services, slices, _, kernels = rig
    proxy.reconcile()
    kernels.sent.clear()
    kernels.fail_next_delta = True
    services.put(_svc("c", "172.18.255.202", "Cluster", (80,)))
    proxy.reconcile(verify=False)
    assert kernels.sent == [(W1, "full"), (W2, "delta")]
    assert_kernels_match(proxy, services, slices, kernels)

    del kernels.tables[W1]  # someone flushed it; the periodic resync looks
    assert sent_by_a_reconcile(proxy, kernels, verify=True) == [(W1, "full")]
    assert_kernels_match(proxy, services, slices, kernels)


def test_a_service_it_cannot_read_is_skipped_and_the_rest_still_programmed(rig: Rig) -> None:
    proxy, services, slices, _, kernels = rig
    bad = _svc("bad", "172.18.255.203", "Cluster", (80,))
    del bad["spec"]["ports"][0]["port"]
    services.put(bad)
    proxy.reconcile()
    del services.objs[("default", "bad")]
    assert_kernels_match(proxy, services, slices, kernels)

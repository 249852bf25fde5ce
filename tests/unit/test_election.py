"""Election: MetalLB's order and vector, candidate filtering tables, order-independence."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbspeaker.api.constants import EXCLUDE_FROM_LB_LABEL
from lbspeaker.election import (
    L2AdvertisementFacts,
    NodeFacts,
    candidate_order,
    elect_l2,
    l2_announcer,
    l2_candidates,
)


def test_metallb_vector() -> None:
    # From the issue / MetalLB: node-a, node-b, node-c for 10.0.0.1 -> node-b, node-a, node-c.
    assert candidate_order(["node-a", "node-b", "node-c"], "10.0.0.1") == ["node-b", "node-a", "node-c"]
    assert elect_l2("10.0.0.1", ["node-c", "node-a", "node-b"]) == "node-b"


def test_order_is_raw_digest_order() -> None:
    nodes = [f"n{i}" for i in range(50)]
    ip = "172.18.255.200"
    expected = sorted(nodes, key=lambda n: hashlib.sha256((n + "#" + ip).encode()).digest())
    assert candidate_order(nodes, ip) == expected
    # hex order == raw byte order
    assert expected == sorted(nodes, key=lambda n: hashlib.sha256((n + "#" + ip).encode()).hexdigest())


def test_empty_and_duplicates() -> None:
    assert elect_l2("10.0.0.1", []) is None
    assert candidate_order(["a", "a", "b"], "10.0.0.1") == candidate_order(["b", "a"], "10.0.0.1")


def test_ipv6_text_matters() -> None:
    # Canonical text is the caller's job; different spellings hash differently.
    n = ["node-a", "node-b", "node-c", "node-d"]
    assert candidate_order(n, "fc00:f853:ccd:e793::1") is not None


ADV_ALL = L2AdvertisementFacts(name="all")
ADV_WORKERS = L2AdvertisementFacts(name="workers", node_selectors=({"matchLabels": {"role": "worker"}},))


def _nodes() -> dict[str, NodeFacts]:
    return {
        "cp": NodeFacts("cp", labels={"role": "cp"}),
        "w1": NodeFacts("w1", labels={"role": "worker"}),
        "w2": NodeFacts("w2", labels={"role": "worker"}),
        "notready": NodeFacts("notready", ready=False, labels={"role": "worker"}),
        "netdown": NodeFacts("netdown", network_unavailable=True, labels={"role": "worker"}),
        "excluded": NodeFacts("excluded", labels={"role": "worker", EXCLUDE_FROM_LB_LABEL: ""}),
    }


ALL = ["cp", "w1", "w2", "notready", "netdown", "excluded", "unknown"]


@pytest.mark.parametrize(
    ("name", "speakers", "advs", "eps", "local", "ignore", "expected"),
    [
        ("all eligible (NotReady too, as MetalLB)", ALL, [ADV_ALL], ["w1"], False, False,
         ["cp", "notready", "w1", "w2"]),
        ("ignore exclude label", ALL, [ADV_ALL], ["w1"], False, True,
         ["cp", "excluded", "notready", "w1", "w2"]),
        ("node selector", ALL, [ADV_WORKERS], ["w1"], False, False, ["notready", "w1", "w2"]),
        ("union of advs", ALL, [ADV_WORKERS, ADV_ALL], ["w1"], False, False, ["cp", "notready", "w1", "w2"]),
        ("no adv -> nobody", ALL, [], ["w1"], False, False, []),
        ("no endpoints -> nobody", ALL, [ADV_ALL], [], False, False, []),
        ("nodeless endpoint serves", ALL, [ADV_ALL], [None], False, False, ["cp", "notready", "w1", "w2"]),
        ("dead speaker", ["cp", "w2"], [ADV_ALL], ["w1"], False, False, ["cp", "w2"]),
        ("local: nodes with ep", ALL, [ADV_ALL], ["w2", "w2", "cp"], True, False, ["cp", "w2"]),
        ("local: ep on excluded node", ALL, [ADV_ALL], ["netdown", "excluded"], True, False, []),
        ("local: ep on NotReady node", ALL, [ADV_ALL], ["notready"], True, False, ["notready"]),
        ("local: endpoint on node w/o speaker", ["cp", "w1"], [ADV_ALL], ["w2"], True, False, []),
        ("local + selector", ALL, [ADV_WORKERS], ["cp", "w1"], True, False, ["w1"]),
        ("local: nodeless endpoint only", ALL, [ADV_ALL], [None], True, False, []),
    ],
)
def test_candidates_table(
    name: str,
    speakers: list[str],
    advs: list[L2AdvertisementFacts],
    eps: list[str | None],
    local: bool,
    ignore: bool,
    expected: list[str],
) -> None:
    assert l2_candidates(speakers, _nodes(), advs, eps, local, ignore) == expected, name


def test_match_expressions_selector() -> None:
    adv = L2AdvertisementFacts(
        name="x",
        node_selectors=({"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["cp"]}]},),
    )
    assert l2_candidates(ALL, _nodes(), [adv], ["w1"], False) == ["notready", "w1", "w2"]


def test_invalid_selector_matches_nothing() -> None:
    bad = L2AdvertisementFacts(
        name="bad", node_selectors=({"matchExpressions": [{"key": "role", "operator": "Bogus"}]},)
    )
    assert l2_candidates(ALL, _nodes(), [bad], ["w1"], False) == []
    assert l2_candidates(ALL, _nodes(), [bad, ADV_WORKERS], ["w1"], False) == ["notready", "w1", "w2"]


def test_l2_announcer() -> None:
    nodes = {n: NodeFacts(n) for n in ("node-a", "node-b", "node-c")}
    assert l2_announcer("10.0.0.1", nodes, nodes, [ADV_ALL], ["node-a"], False) == "node-b"
    assert l2_announcer("10.0.0.1", nodes, nodes, [ADV_ALL], ["node-a"], True) == "node-a"
    assert l2_announcer("10.0.0.1", nodes, nodes, [ADV_ALL], [], False) is None


# --- properties -------------------------------------------------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
ips = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@given(st.lists(names, min_size=0, max_size=12), ips, st.randoms())
def test_order_independent_of_input_order(nodes: list[str], ip: str, rnd: random.Random) -> None:
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    assert candidate_order(nodes, ip) == candidate_order(shuffled, ip)
    assert elect_l2(ip, nodes) == elect_l2(ip, shuffled)
    winner = elect_l2(ip, nodes)
    if nodes:
        assert winner in nodes
        assert winner == candidate_order(nodes, ip)[0]
    else:
        assert winner is None


node_facts = st.builds(
    NodeFacts,
    name=names,
    ready=st.booleans(),
    network_unavailable=st.booleans(),
    labels=st.dictionaries(
        st.sampled_from(["role", EXCLUDE_FROM_LB_LABEL, "zone"]),
        st.sampled_from(["worker", "cp", ""]),
        max_size=3,
    ),
)


@given(
    st.lists(node_facts, max_size=10, unique_by=lambda n: n.name),
    st.lists(names, max_size=10),
    st.lists(st.one_of(st.none(), names), max_size=6),
    st.booleans(),
    st.booleans(),
    ips,
    st.randoms(),
)
def test_every_node_agrees_and_winner_is_candidate(
    facts: list[NodeFacts],
    speakers: list[str],
    eps: list[str | None],
    local: bool,
    ignore: bool,
    ip: str,
    rnd: random.Random,
) -> None:
    nodes = {f.name: f for f in facts}
    advs = [ADV_WORKERS, ADV_ALL] if rnd.random() < 0.5 else [ADV_WORKERS]
    reference = l2_candidates(speakers, nodes, advs, eps, local, ignore)
    winner = elect_l2(ip, reference)
    # Each "node" sees the same facts in a different order: same answer everywhere.
    for _ in range(3):
        sp, ep, ad = list(speakers), list(eps), list(advs)
        rnd.shuffle(sp)
        rnd.shuffle(ep)
        rnd.shuffle(ad)
        shuffled_nodes = dict(rnd.sample(list(nodes.items()), len(nodes)))
        cands = l2_candidates(sp, shuffled_nodes, ad, ep, local, ignore)
        assert cands == reference
        assert elect_l2(ip, cands) == winner
    if winner is not None:
        assert winner in reference
        assert winner in speakers
        assert not nodes[winner].network_unavailable  # Ready is not read (MetalLB)
        if local:
            assert winner in eps
    else:
        assert reference == []

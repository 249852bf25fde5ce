"""Desired routes per peer and ExaBGP API commands (pure)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbspeaker.api.models import BGPAdvertisement
from lbspeaker.bgp.config import PeerSpec
from lbspeaker.bgp.routes import (
    Announcement,
    RouteAttrs,
    announce_command,
    change_command,
    desired_routes,
    diff_routes,
    prefix_family,
    resolve_communities,
    route_prefix,
    withdraw_command,
)
from lbspeaker.facts import AdvertisementSpec, advertisement_from_model

EBGP = PeerSpec("ebgp", "172.18.0.1", 64513, 64512)
IBGP = PeerSpec("ibgp", "172.18.0.2", 64513, 64513)
V6 = PeerSpec("v6", "fd00::1", 64513, 64512, router_id="1.1.1.1")


@pytest.mark.parametrize(
    ("ip", "v4_length", "v6_length"),
    [("198.51.100.10", 32, 128), ("198.51.100.10", 24, 64), ("fd00:5::1", 32, 128),
     ("fd00:5::1", 32, 48), ("::ffff:198.51.100.10", 32, 128), ("::", 32, 0)],
)
def test_prefix_family_of_every_prefix_route_prefix_writes(ip: str, v4_length: int, v6_length: int) -> None:
    adv = AdvertisementSpec("a", aggregation_length=v4_length, aggregation_length_v6=v6_length)
    prefix = route_prefix(ip, adv)
    assert prefix_family(prefix) == ipaddress.ip_network(prefix).version


def ann(ips: tuple[str, ...], *advs: AdvertisementSpec, service: str = "ns/svc") -> Announcement:
    return Announcement(service, ips, advs)


def test_default_host_routes_to_every_peer_of_the_family() -> None:
    out = desired_routes([ann(("198.51.100.10", "fd00:5::1"), AdvertisementSpec("a"))], [EBGP, IBGP, V6])
    assert out.routes == {
        "ebgp": {"198.51.100.10/32": RouteAttrs()},
        "ibgp": {"198.51.100.10/32": RouteAttrs()},
        "v6": {"fd00:5::1/128": RouteAttrs()},
    }
    assert out.service_peers == {"ns/svc": ["ebgp", "ibgp", "v6"]}
    assert out.problems == []


def test_aggregation_communities_aliases_local_pref_and_peer_filter() -> None:
    adv = AdvertisementSpec(
        "a",
        aggregation_length=24,
        local_pref=200,
        communities=("65535:65282", "large:64512:1:2", "myalias", "nosuch"),
        peers=("ibgp",),
    )
    out = desired_routes([ann(("198.51.100.10", "198.51.100.77"), adv)], [EBGP, IBGP], {"myalias": "64512:7"})
    assert out.routes == {
        "ibgp": {"198.51.100.0/24": RouteAttrs(200, ("64512:7", "65535:65282"), ("64512:1:2",))},
    }
    assert any("nosuch" in p.message and p.reason == "UnknownCommunity" for p in out.problems)


def test_local_pref_not_sent_to_ebgp_and_conflicts_resolved_deterministically() -> None:
    a = AdvertisementSpec("a", local_pref=100, communities=("1:1",))
    b = AdvertisementSpec("b", local_pref=300, communities=("2:2",))
    out = desired_routes([ann(("198.51.100.10",), b, a)], [EBGP, IBGP])
    assert out.routes["ebgp"]["198.51.100.10/32"] == RouteAttrs(None, ("1:1", "2:2"))
    assert out.routes["ibgp"]["198.51.100.10/32"] == RouteAttrs(100, ("1:1", "2:2"))
    assert any("conflicting localPref" in p.message for p in out.problems)
    assert any("not sent to eBGP" in p.message for p in out.problems)
    again = desired_routes([ann(("198.51.100.10",), a, b)], [EBGP, IBGP])
    assert again.routes == out.routes


def test_unknown_peer_name_reported() -> None:
    out = desired_routes([ann(("198.51.100.10",), AdvertisementSpec("a", peers=("gone",)))], [EBGP])
    assert out.routes == {} and out.service_peers == {}
    assert any("'gone'" in p.message for p in out.problems)


def test_resolve_normalises() -> None:
    std, large, problems = resolve_communities(["065:01", "large:1:02:3", "bad:1"], {})
    assert std == {"65:1"} and large == {"1:2:3"} and len(problems) == 1


def test_commands() -> None:
    attrs = RouteAttrs(150, ("65000:1", "65000:2"), ("1:2:3",))
    assert announce_command(IBGP, "198.51.100.10/32", attrs) == (
        "neighbor 172.18.0.2 local-as 64513 announce route 198.51.100.10/32 next-hop self "
        "local-preference 150 community [ 65000:1 65000:2 ] large-community [ 1:2:3 ]"
    )
    assert announce_command(EBGP, "198.51.100.10/32", RouteAttrs()) == (
        "neighbor 172.18.0.1 local-as 64513 announce route 198.51.100.10/32 next-hop self"
    )
    assert withdraw_command(EBGP, "198.51.100.10/32") == (
        "neighbor 172.18.0.1 local-as 64513 withdraw route 198.51.100.10/32 next-hop self"
    )


def test_diff_withdraws_first_and_reannounces_changed() -> None:
    old = {
        "p": {"10.0.0.1/32": RouteAttrs(), "10.0.0.2/32": RouteAttrs()},
        "q": {"10.0.0.9/32": RouteAttrs()},
    }
    new = {"p": {"10.0.0.2/32": RouteAttrs(communities=("1:1",)), "10.0.0.3/32": RouteAttrs()}}
    changes = diff_routes(old, new)
    assert [(c.peer, c.prefix, c.is_withdraw) for c in changes] == [
        ("p", "10.0.0.1/32", True),
        ("q", "10.0.0.9/32", True),
        ("p", "10.0.0.2/32", False),
        ("p", "10.0.0.3/32", False),
    ]
    assert change_command(EBGP, changes[0]).endswith("withdraw route 10.0.0.1/32 next-hop self")


def test_from_model() -> None:
    obj = BGPAdvertisement.model_validate(
        {
            "metadata": {"name": "adv"},
            "spec": {"aggregationLength": 28, "localPref": 5, "communities": ["a"], "peers": ["ebgp"]},
        }
    )
    spec = advertisement_from_model("adv", obj.spec)
    assert spec == AdvertisementSpec("adv", 28, 128, 5, ("a",), ("ebgp",))


tables = st.dictionaries(
    st.sampled_from(["p", "q"]),
    st.dictionaries(
        st.sampled_from([f"10.0.0.{i}/32" for i in range(6)]),
        st.builds(RouteAttrs, st.sampled_from([None, 100]), st.sampled_from([(), ("1:1",)])),
    ),
)


@given(tables, tables)
def test_diff_applied_to_old_gives_new(old: dict, new: dict) -> None:
    state = {p: dict(r) for p, r in old.items()}
    for c in diff_routes(old, new):
        if c.attrs is None:
            state[c.peer].pop(c.prefix)
        else:
            state.setdefault(c.peer, {})[c.prefix] = c.attrs
    assert {p: r for p, r in state.items() if r} == {p: r for p, r in new.items() if r}


DS4 = PeerSpec("ds4", "172.18.0.1", 64513, 64512, dual_stack=True,
               node_addresses=("172.18.0.3", "fc00:f853:ccd:e793::3"))
DS6 = PeerSpec("ds6", "fc00:f853:ccd:e793::1", 64513, 64512, dual_stack=True, router_id="172.18.0.3",
               node_addresses=("172.18.0.3", "fc00:f853:ccd:e793::3"))
DS4_NO_V6 = PeerSpec("ds4x", "172.18.0.1", 64513, 64512, dual_stack=True, node_addresses=("172.18.0.3",))


@pytest.mark.parametrize(
    ("peer", "prefix", "next_hop"),
    [
        (EBGP, "198.51.100.10/32", "self"),  # the session's family: its local address
        (V6, "fd00:5::1/128", "self"),
        (DS4, "198.51.100.10/32", "self"),
        (DS4, "fd00:5::1/128", "fc00:f853:ccd:e793::3"),  # MP-BGP: IPv6 over IPv4 needs an IPv6 next hop
        (DS6, "fd00:5::1/128", "self"),
        (DS6, "198.51.100.10/32", "172.18.0.3"),  # and the other way round
    ],
)
def test_next_hop_per_family(peer: PeerSpec, prefix: str, next_hop: str) -> None:
    announce = announce_command(peer, prefix, RouteAttrs())
    withdraw = withdraw_command(peer, prefix)
    assert announce == f"{peer.selector} announce route {prefix} next-hop {next_hop}"
    assert withdraw == f"{peer.selector} withdraw route {prefix} next-hop {next_hop}"


def test_other_family_without_a_node_address_is_not_announced() -> None:
    out = desired_routes([ann(("198.51.100.10", "fd00:5::1"), AdvertisementSpec("a"))], [DS4, DS4_NO_V6])
    assert out.routes == {
        "ds4": {"198.51.100.10/32": RouteAttrs(), "fd00:5::1/128": RouteAttrs()},
        "ds4x": {"198.51.100.10/32": RouteAttrs()},
    }


def test_a_stopping_speaker_keeps_only_the_routes_to_graceful_restart_peers() -> None:
    from lbspeaker.bgp.routes import kept_across_restart

    gr = PeerSpec("gr", "172.18.0.1", 64513, 64512, graceful_restart=True)
    gr_empty = PeerSpec("gr-empty", "172.18.0.5", 64513, 64512, graceful_restart=True)
    table = {"gr": {"198.51.100.10/32": RouteAttrs()}, "ebgp": {"198.51.100.10/32": RouteAttrs()},
             "gr-empty": {}, "unknown": {"198.51.100.11/32": RouteAttrs()}}
    assert kept_across_restart(table, [gr, gr_empty, EBGP]) == {"gr": {"198.51.100.10/32": RouteAttrs()}}
    assert kept_across_restart(table, [EBGP]) == {}

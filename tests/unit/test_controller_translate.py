"""Tables for the controller's pool judgement (pool dicts -> the pools it runs on) and pool status."""

from __future__ import annotations

from typing import Any

import pytest

from lbspeaker import facts as F
from lbspeaker.controller import translate as T
from lbspeaker.facts import Problem


def pool(name: str, *addresses: str, created: str = "2026-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "lbspeaker-system", "creationTimestamp": created},
            "spec": {"addresses": list(addresses), **spec}}


def test_pools_overlap_newcomer_refused_running_pool_kept() -> None:
    a = pool("a", "10.0.0.0/24", created="2026-01-01T00:00:00Z")
    b = pool("b", "10.0.0.128/25", created="2025-01-01T00:00:00Z")  # older but new to us
    first = T.validate_pools([a], {}, {})
    assert set(first.active) == {"a"}
    second = T.validate_pools([a, b], {}, first.active)
    assert set(second.active) == {"a"}
    assert second.problems["b"].reason == "Overlap"
    assert "pool a" in second.problems["b"].message


def test_changed_pool_that_now_overlaps_keeps_last_valid() -> None:
    a = pool("a", "10.0.0.0/25")
    b = pool("b", "10.0.0.128/25")
    first = T.validate_pools([a, b], {}, {})
    assert not first.problems
    a2 = pool("a", "10.0.0.0/24")
    second = T.validate_pools([a2, b], {}, first.active)
    assert second.active["a"] == first.active["a"]
    assert second.active["b"] == first.active["b"]
    assert second.stale("a") and not second.stale("b")


def test_pool_covering_node_ip_refused() -> None:
    nodes = [{"metadata": {"name": "n1"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "172.18.0.2"}, {"type": "Hostname", "address": "n1"}]}}]
    ips = F.node_internal_ips(nodes)
    assert ips == {"172.18.0.2": "n1"}
    result = T.validate_pools([pool("p", "172.18.0.0/24")], ips, {})
    assert "p" not in result.active
    assert result.problems["p"].reason == "CoversNodeIP"
    assert "n1" in result.problems["p"].message


def test_ipv6_range_start_after_end_refused() -> None:
    result = T.validate_pools([pool("p", "fd00::10-fd00::1")], {}, {})
    assert result.problems["p"].reason == "InvalidSpec"
    assert not result.active


@pytest.mark.parametrize(("spec", "fragment"), [
    # MetalLB's config.For: "invalid CIDR" for a bare address; "duplicate definition in namespaces field"
    ({"addresses": ["10.1.0.1"]}, "write it as 10.1.0.1/32"),
    ({"addresses": ["fd00::1"]}, "write it as fd00::1/128"),
    ({"addresses": ["10.0.0.0/24"], "serviceAllocation": {"namespaces": ["a", "b", "a"]}},
     "spec.serviceAllocation.namespaces lists a more than once"),
    ({"addresses": ["10.0.0.0/24"], "serviceAllocation": {"serviceSelectors": [
        {"matchLabels": {"app": "x"}}, {"matchLabels": {"app": "x"}}]}},
     "spec.serviceAllocation.serviceSelectors lists"),
    ({"addresses": ["10.0.0.0/24"], "serviceAllocation": {"namespaceSelectors": [
        {"matchLabels": {"t": "x"}}, {"matchLabels": {"t": "x"}}]}},
     "spec.serviceAllocation.namespaceSelectors lists"),
])
def test_metallb_refusals_are_invalid_spec(spec: dict[str, Any], fragment: str) -> None:
    result = T.validate_pools([{"metadata": {"name": "p"}, "spec": spec}], {}, {})
    assert result.problems["p"].reason == "InvalidSpec" and not result.active
    assert fragment in result.problems["p"].message, result.problems["p"].message


def test_bare_address_stored_before_the_rule_is_still_read_by_the_speakers() -> None:
    """The speakers' lenient reading keeps announcing a pool written before the rule (as its /32)."""
    p = F.read_pool({"metadata": {"name": "p"}, "spec": {"addresses": ["10.1.0.1"]}})
    assert p.contains("10.1.0.1") and not p.contains("10.1.0.2")


def test_status_stable_and_transition_time_moves_only_on_flip() -> None:
    counts = {"assignedIPv4": 1, "availableIPv4": 3}
    s1 = T.pool_status(counts, None, False, [], 1, None, "t1")
    s2 = T.pool_status(counts, None, False, [], 1, s1, "t2")
    assert s1 == s2
    by_type = {c["type"]: c for c in s1["conditions"]}
    assert by_type["Ready"]["status"] == "True" and by_type["Overlap"]["status"] == "False"
    orphans = [("default/a", ("10.0.0.9",))]
    s3 = T.pool_status(counts, Problem("IPAddressPool", "p", "Overlap", "x"), True, orphans, 2, s2, "t3")
    by_type = {c["type"]: c for c in s3["conditions"]}
    assert by_type["Ready"]["status"] == "False" and by_type["Ready"]["lastTransitionTime"] == "t3"
    assert by_type["Overlap"]["status"] == "True"
    assert "last valid configuration" in by_type["Ready"]["message"]
    assert by_type["ServicesOutsidePool"]["status"] == "True"
    assert "default/a" in by_type["ServicesOutsidePool"]["message"]
    assert s3["orphanedServices"] == [{"namespace": "default", "name": "a", "ips": ["10.0.0.9"]}]
    assert s3["orphanedServiceCount"] == 1

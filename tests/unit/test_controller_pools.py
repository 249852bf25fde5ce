"""The pools part's counts (pure enough to test without an API server)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from lbspeaker.api.addresses import parse_address_range
from lbspeaker.controller.allocator import Allocator, Pool, ServiceRequest
from lbspeaker.controller.context import Context
from lbspeaker.controller.pools import INT64_MAX, PoolsAndAdvertisements


def part(*addresses: str) -> PoolsAndAdvertisements:
    alloc = Allocator([Pool(name="p", ranges=tuple(parse_address_range(a) for a in addresses))])
    alloc.allocate(ServiceRequest(key="a/x", families=(6,)))
    return PoolsAndAdvertisements(cast(Context, cast(Any, SimpleNamespace(alloc=alloc))))


@pytest.mark.parametrize(("cidr", "total", "available"), [
    ("fd00::/120", 256, 255),
    ("fd00::/65", 2**63, 2**63 - 1),
    ("fd00::/64", INT64_MAX, INT64_MAX),      # 2^64 does not fit a Kubernetes integer
    ("::/0", INT64_MAX, INT64_MAX),
])
def test_ipv6_counts_saturate_at_int64_like_metallb(cidr: str, total: int, available: int) -> None:
    counts = part(cidr).pool_counts("p")
    assert (counts["totalIPv6"], counts["availableIPv6"], counts["assignedIPv6"]) == (
        min(total, INT64_MAX), available, 1)

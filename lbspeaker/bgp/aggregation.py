"""Aggregation lengths that stay inside their pool (pure; shared by the controller and the speaker).

A BGPAdvertisement's `aggregationLength` turns a Service IP into the prefix announced
for it: 10.0.0.5 with length 26 is 10.0.0.0/26. A length shorter than the pool's own
prefix makes routers send the node traffic for addresses that are not the pool's (a /28
pool announced as /26 attracts 48 foreign addresses; length 0 is a default route).

* :func:`aggregation_problems` is MetalLB's rule (``internal/config``): every CIDR the
  pool's addresses consist of (a range ``a-b`` is split into CIDRs, as MetalLB does) must
  be at least as long as the aggregation length. The controller reports a violation as
  the advertisement's ``Ready=False``.
* :func:`prefix_within` is the speaker's last line of defence, whatever the controller
  said: a prefix is announced only if every address in it belongs to the pool. A host
  route (/32, /128) is always the Service's own address and is allowed even when the pool
  no longer covers it (the controller keeps such IPs; see the allocator's set_pools).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from lbspeaker.api.addresses import AddressRange

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def pool_cidrs(ranges: Iterable[AddressRange], family: int) -> list[Network]:
    """The CIDRs a pool's addresses of `family` consist of (ranges split into CIDRs)."""
    out: list[Network] = []
    for r in ranges:
        if r.family != family:
            continue
        make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
        out.extend(ipaddress.summarize_address_range(make(r.first), make(r.last)))
    return out


def aggregation_problems(pool: str, ranges: Iterable[AddressRange], length_v4: int,
                         length_v6: int) -> list[str]:
    """What is wrong with these aggregation lengths for this pool (empty: nothing), with the fix."""
    problems: list[str] = []
    ranges = tuple(ranges)
    for family, length, field, host in ((4, length_v4, "aggregationLength", 32),
                                        (6, length_v6, "aggregationLengthV6", 128)):
        cidrs = pool_cidrs(ranges, family)
        if not cidrs:
            continue
        longest = max(c.prefixlen for c in cidrs)
        if length < longest:
            example = next(c for c in cidrs if c.prefixlen == longest)
            problems.append(
                f"{field} {length} is shorter than prefix {example} of pool {pool!r}: the route would "
                f"attract traffic for addresses outside the pool; set {field} to at least {longest} "
                f"(or {host}, one route per IP). Until then this advertisement announces nothing "
                f"for pool {pool!r}")
    return problems


def prefix_within(prefix: Network, ranges: Iterable[AddressRange]) -> bool:
    """Whether every address of `prefix` belongs to the pool (or `prefix` is a host route)."""
    if prefix.prefixlen == prefix.max_prefixlen:
        return True
    first, last = int(prefix.network_address), int(prefix.broadcast_address)
    spans = sorted((r.first, r.last) for r in ranges if r.family == prefix.version)
    cursor = first   # the union of the pool's ranges must cover [first, last] without a gap
    for a, b in spans:
        if a > cursor:
            return False
        cursor = max(cursor, b + 1)
        if cursor > last:
            return True
    return False

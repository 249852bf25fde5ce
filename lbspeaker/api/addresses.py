"""Parsing of IPAddressPool `addresses` entries: a CIDR (`10.0.0.0/24`, `10.1.0.1/32`) or an
inclusive range `start-end` of one family (MetalLB's syntax: MetalLB's `config.ParseCIDR` refuses
a bare address such as `10.1.0.1`, and so does the CRD; `allow_bare=True` is only for the readers
that must keep announcing what an object written before that rule holds).

Pure: the CRD's CEL rules catch syntax at apply time; this is the one Python
implementation that the controller, the speaker and lbctl share.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, order=True)
class AddressRange:
    """An inclusive range of addresses of one family, as integers for cheap arithmetic."""

    family: int  # 4 or 6
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.family and self.first <= int(ip) <= self.last

    def overlaps(self, other: AddressRange) -> bool:
        return self.family == other.family and self.first <= other.last and other.first <= self.last

    def start_ip(self) -> IPAddress:
        return ipaddress.ip_address(self.first) if self.family == 4 else ipaddress.IPv6Address(self.first)

    def end_ip(self) -> IPAddress:
        return ipaddress.ip_address(self.last) if self.family == 4 else ipaddress.IPv6Address(self.last)

    def __str__(self) -> str:
        return f"{self.start_ip()}-{self.end_ip()}"


class AddressSyntaxError(ValueError):
    """An `addresses` entry that is neither a CIDR, an address nor a `start-end` range."""


def bare_address_message(entry: str) -> str:
    """What to tell a user who wrote a single address without a prefix length."""
    prefix = 128 if ":" in entry else 32
    return (f"{entry!r} is a single address without a prefix length: write it as {entry.strip()}/{prefix} "
            "(an address is a CIDR or a start-end range, as in MetalLB)")


def parse_address_range(text: str, allow_bare: bool = False) -> AddressRange:
    """Parse one `addresses` entry; raise AddressSyntaxError with a message a user can act on."""
    entry = text.strip()
    if not entry:
        raise AddressSyntaxError("empty address entry: use a CIDR like 172.18.255.0/24 or a range a-b")
    if "-" in entry:
        start_text, _, end_text = entry.partition("-")
        try:
            start = ipaddress.ip_address(start_text.strip())
            end = ipaddress.ip_address(end_text.strip())
        except ValueError as exc:
            raise AddressSyntaxError(f"{entry!r}: {exc}; a range is written start-end, e.g. "
                                     "172.18.255.200-172.18.255.250") from None
        if start.version != end.version:
            raise AddressSyntaxError(f"{entry!r}: start and end are of different IP families")
        if int(start) > int(end):
            raise AddressSyntaxError(f"{entry!r}: range start {start} is after its end {end}")
        return AddressRange(start.version, int(start), int(end))
    if "/" not in entry and not allow_bare:
        try:
            ipaddress.ip_address(entry)
        except ValueError:
            pass
        else:
            raise AddressSyntaxError(bare_address_message(entry))
    try:
        net = ipaddress.ip_network(entry, strict=False)
    except ValueError as exc:
        raise AddressSyntaxError(f"{entry!r}: {exc}; use a CIDR like 172.18.255.0/24 "
                                 "or a range like 172.18.255.200-172.18.255.250") from None
    return AddressRange(net.version, int(net.network_address), int(net.broadcast_address))

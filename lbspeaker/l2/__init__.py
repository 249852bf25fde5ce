"""Layer-2 announcement: ARP and NDP responders on AF_PACKET sockets.

`frames` (pure frame build/parse), `bpf` (kernel socket filters), `arp`/`ndp` (one
responder per interface and family), `responder.Announcer` (the owned-IP set per
interface, gratuitous announcements, one selector thread). `python -m lbspeaker.l2`
runs the announcer alone for debugging and end-to-end tests.
"""

from lbspeaker.l2.responder import GARP_SCHEDULE, Announcer

__all__ = ["GARP_SCHEDULE", "Announcer"]

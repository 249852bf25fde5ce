"""Classic BPF socket filters for the ARP and NDP packet sockets, assembled by hand.

Why a kernel filter: an AF_PACKET socket bound to ETH_P_ARP (or ETH_P_IPV6) sees
*every* such frame on the link, including our own transmissions and, on a busy LAN,
thousands of who-has for other hosts each second. Dropping those in the kernel keeps
the Python receive loop for the few frames we might answer. The ARP filter can also
carry the owned IPv4 addresses, so a request for somebody else's address never
wakes us at all; it is re-attached whenever the owned set changes (SO_ATTACH_FILTER
replaces the previous program atomically).

Programs are lists of ``(code, jt, jf, k)`` (``struct sock_filter``) so they can be
unit-tested without a socket, then packed into a ``struct sock_fprog``.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence
from typing import Final

SO_ATTACH_FILTER: Final = 26
SO_DETACH_FILTER: Final = 27

# Instruction classes / fields (linux/filter.h, linux/bpf_common.h)
BPF_LD: Final = 0x00
BPF_JMP: Final = 0x05
BPF_RET: Final = 0x06
BPF_W: Final = 0x00
BPF_H: Final = 0x08
BPF_B: Final = 0x10
BPF_ABS: Final = 0x20
BPF_JEQ: Final = 0x10
BPF_K: Final = 0x00

LDW_ABS: Final = BPF_LD | BPF_W | BPF_ABS
LDH_ABS: Final = BPF_LD | BPF_H | BPF_ABS
LDB_ABS: Final = BPF_LD | BPF_B | BPF_ABS
JEQ_K: Final = BPF_JMP | BPF_JEQ | BPF_K
RET_K: Final = BPF_RET | BPF_K

SKF_AD_OFF: Final = -0x1000
SKF_AD_PKTTYPE: Final = 4
PACKET_OUTGOING: Final = 4
SNAPLEN: Final = 0xFFFF

# Largest number of IPv4 addresses compiled into the ARP filter. A jump offset is an
# 8-bit field, so the chain of compares must stay under 256 instructions; beyond this
# the filter accepts every ARP request and Python does the lookup.
MAX_FILTER_IPS: Final = 200

Insn = tuple[int, int, int, int]


def _u32(k: int) -> int:
    return k & 0xFFFFFFFF


def arp_request_filter(owned: Sequence[bytes] | None = None) -> list[Insn]:
    """Accept incoming ARP requests (op 1), optionally only for `owned` target IPs.

    `owned` are 4-byte IPv4 addresses; None, or more than MAX_FILTER_IPS, accepts any
    target. An empty sequence accepts nothing (nothing to answer).
    """
    if owned is not None and not owned:
        return [(RET_K, 0, 0, 0)]
    ips = None if owned is None or len(set(owned)) > MAX_FILTER_IPS else sorted(set(owned))
    n_checks = 0 if ips is None else 1 + len(ips)  # ld tpa + one jeq per IP
    total = 6 + n_checks + 2
    accept, drop = total - 2, total - 1

    def off(target: int, at: int) -> int:
        return target - at - 1

    prog: list[Insn] = [
        (LDH_ABS, 0, 0, 12),  # 0 ethertype
        (JEQ_K, 0, off(drop, 1), 0x0806),  # 1
        (LDH_ABS, 0, 0, 20),  # 2 ARP operation
        (JEQ_K, 0, off(drop, 3), 1),  # 3 request
        (LDW_ABS, 0, 0, _u32(SKF_AD_OFF + SKF_AD_PKTTYPE)),  # 4 pkttype
        (JEQ_K, off(drop, 5), 0, PACKET_OUTGOING),  # 5 never our own frames
    ]
    if ips is not None:
        prog.append((LDW_ABS, 0, 0, 38))  # target protocol address
        for i, ip in enumerate(ips):
            at = len(prog)
            miss = off(drop, at) if i == len(ips) - 1 else 0
            prog.append((JEQ_K, off(accept, at), miss, int.from_bytes(ip, "big")))
    prog.append((RET_K, 0, 0, SNAPLEN))  # accept
    prog.append((RET_K, 0, 0, 0))  # drop
    assert len(prog) == total
    return prog


def neighbor_solicitation_filter() -> list[Insn]:
    """Accept incoming IPv6 packets carrying ICMPv6 type 135 directly after the header.

    NS never carries extension headers in practice (and RFC 4861 nodes must be able to
    do without), so checking next-header == 58 at the fixed offset is enough.
    """
    return [
        (LDH_ABS, 0, 0, 12),  # 0 ethertype
        (JEQ_K, 0, 7, 0x86DD),  # 1 -> 9 drop
        (LDB_ABS, 0, 0, 20),  # 2 next header
        (JEQ_K, 0, 5, 58),  # 3 -> 9
        (LDB_ABS, 0, 0, 54),  # 4 ICMPv6 type
        (JEQ_K, 0, 3, 135),  # 5 -> 9
        (LDW_ABS, 0, 0, _u32(SKF_AD_OFF + SKF_AD_PKTTYPE)),  # 6
        (JEQ_K, 1, 0, PACKET_OUTGOING),  # 7 -> 9
        (RET_K, 0, 0, SNAPLEN),  # 8 accept
        (RET_K, 0, 0, 0),  # 9 drop
    ]


def run_filter(prog: Sequence[Insn], frame: bytes, pkttype: int = 0) -> int:
    """Tiny interpreter for the instructions used here, so programs are unit-testable.

    Returns the accept length (0 = drop), like the kernel. Out-of-bounds loads drop.
    """
    a = 0
    pc = 0
    while pc < len(prog):
        code, jt, jf, k = prog[pc]
        if code in (LDW_ABS, LDH_ABS, LDB_ABS):
            if k == _u32(SKF_AD_OFF + SKF_AD_PKTTYPE):
                a = pkttype
            else:
                size = {LDW_ABS: 4, LDH_ABS: 2, LDB_ABS: 1}[code]
                if k + size > len(frame):
                    return 0
                a = int.from_bytes(frame[k : k + size], "big")
        elif code == JEQ_K:
            pc += jt if a == k else jf
        elif code == RET_K:
            return k
        else:
            raise ValueError(f"unsupported BPF opcode {code:#x}")
        pc += 1
    raise ValueError("BPF program fell off the end")


def pack_program(prog: Sequence[Insn]) -> bytes:
    """Pack instructions as an array of ``struct sock_filter`` (u16, u8, u8, u32)."""
    for code, jt, jf, _k in prog:
        if not (0 <= jt < 256 and 0 <= jf < 256 and 0 <= code < 65536):
            raise ValueError("BPF jump offset out of range")
    return b"".join(struct.pack("HBBI", c, jt, jf, k) for c, jt, jf, k in prog)


def attach_filter(sock: socket.socket, prog: Sequence[Insn]) -> None:
    """Attach (or atomically replace) the socket's classic BPF filter."""
    raw = pack_program(prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (native layout)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

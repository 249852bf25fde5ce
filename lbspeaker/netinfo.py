"""Node network I/O for the speaker: netlink link listing and events, ARP sysctls.

The pure part (the `LinkInfo` records and which interfaces to announce on) is
`lbspeaker.links`; this module is the thin shell around it: the pyroute2 adapter
(`list_links`, `LinkWatcher`), the connected networks read from /proc/net
(`node_networks`) and the procfs sysctl helpers. Everything acts on the
network namespace of the calling process, which for the speaker is the node's.

Link changes come from netlink (RTMGRP_LINK multicast), not polling: a link going
down/up or an interface appearing is seen within milliseconds, so the announcer can
re-open its sockets and re-send gratuitous ARP right away.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

from lbspeaker.links import LinkInfo, parse_proc_routes

log = logging.getLogger(__name__)


# --- pyroute2 adapter --------------------------------------------------------------


def link_from_message(msg: Any) -> LinkInfo:
    """A pyroute2 ifinfmsg (RTM_NEWLINK/RTM_DELLINK) -> LinkInfo."""
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None
    return LinkInfo(
        name=str(msg.get_attr("IFLA_IFNAME") or ""),
        index=int(msg["index"]),
        flags=int(msg["flags"]),
        kind=kind,
        master=msg.get_attr("IFLA_MASTER") or None,
        mac=msg.get_attr("IFLA_ADDRESS"),
        link_type=int(msg["ifi_type"]),
        oper_state=msg.get_attr("IFLA_OPERSTATE"),
    )


def list_links() -> list[LinkInfo]:
    """All links of the current network namespace (one netlink dump)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [link_from_message(m) for m in ipr.get_links()]


LinkCallback = Callable[[str, LinkInfo], None]


RTM_NEWLINK: Final = 16
RTM_DELLINK: Final = 17
RTMGRP_LINK: Final = 1
NLMSG_HDR: Final = struct.Struct("=IHHII")


def parse_link_events(data: bytes) -> list[tuple[str, LinkInfo]]:
    """Split a netlink datagram into (event, LinkInfo) for RTM_NEWLINK/RTM_DELLINK.

    Decoding of each message is pyroute2's (ifinfmsg); other message types and
    undecodable messages are skipped.
    """
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    out: list[tuple[str, LinkInfo]] = []
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size or off + length > len(data):
            break
        if mtype in (RTM_NEWLINK, RTM_DELLINK):
            try:
                msg = ifinfmsg(data[off : off + length])
                msg.decode()
                out.append(("NEWLINK" if mtype == RTM_NEWLINK else "DELLINK", link_from_message(msg)))
            except Exception:
                log.exception("undecodable link message")
        off += (length + 3) & ~3
    return out


class LinkWatcher:
    """Calls `callback(event, link)` for every RTM_NEWLINK / RTM_DELLINK in this netns.

    `event` is "NEWLINK" or "DELLINK" (NEWLINK also covers flag changes such as up
    and down). The callback runs on the watcher's thread and must not block for long;
    exceptions in it are logged, not fatal. `stop()` returns within `poll_interval`.

    A plain NETLINK_ROUTE socket subscribed to RTMGRP_LINK, decoded with pyroute2's
    message classes: pyroute2 0.9's IPRoute reads its socket into an internal queue,
    so select() on its fileno misses buffered events and its get() cannot time out.
    If the kernel reports ENOBUFS (we fell behind and events were lost), the callback
    gets ("RESYNC", LinkInfo("")) so the owner can re-list links.
    """

    def __init__(self, callback: LinkCallback, poll_interval: float = 0.2) -> None:
        self._callback = callback
        self._poll = poll_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> None:
        """Subscribe (synchronously, so no event after start() is missed) and run."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_LINK))
        sock.settimeout(self._poll)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="link-watcher", daemon=True)
        self._thread.start()

    def _emit(self, event: str, link: LinkInfo) -> None:
        try:
            self._callback(event, link)
        except Exception:
            log.exception("link event callback failed")

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                data = sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._emit("RESYNC", LinkInfo(""))
                    continue
                if self._stop.is_set():
                    return
                log.warning("link watcher socket failed: %s", exc)
                return
            for event, link in parse_link_events(data):
                self._emit(event, link)

    def stop(self) -> None:
        """Stop the thread and close the netlink socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()


# --- sysctls (procfs of the current netns) -----------------------------------------

PROC_SYS: Final = "/proc/sys"
STRICT_ARP: Final = {"arp_ignore": 1, "arp_announce": 2}


def _sysctl_path(name: str, root: str = PROC_SYS) -> str:
    if ".." in name.split(".") or "/" in name:
        raise ValueError(f"bad sysctl name {name!r}")
    return os.path.join(root, *name.split("."))


def sysctl_get(name: str, root: str = PROC_SYS) -> str:
    """Read a sysctl such as ``net.ipv4.conf.eth0.arp_ignore`` (stripped text)."""
    with open(_sysctl_path(name, root)) as fh:
        return fh.read().strip()


def sysctl_set(name: str, value: int | str, root: str = PROC_SYS) -> None:
    """Write a sysctl (needs CAP_NET_ADMIN in the netns for net.*)."""
    with open(_sysctl_path(name, root), "w") as fh:
        fh.write(f"{value}\n")


def arp_sysctl_name(ifname: str, key: str) -> str:
    """``net.ipv4.conf.<if>.<key>``; interface names may contain dots (VLANs), which
    sysctl's dotted notation writes as slashes, so we go by path components instead."""
    if key not in STRICT_ARP:
        raise ValueError(f"unsupported ARP sysctl {key!r}")
    if "/" in ifname or ifname in ("", ".", ".."):
        raise ValueError(f"bad interface name {ifname!r}")
    return f"net.ipv4.conf.{ifname}.{key}"


def _arp_path(ifname: str, key: str, root: str) -> str:
    arp_sysctl_name(ifname, key)  # validation
    return os.path.join(root, "net", "ipv4", "conf", ifname, key)


def get_arp_settings(ifname: str, root: str = PROC_SYS) -> dict[str, int]:
    """Current arp_ignore / arp_announce of `ifname`."""
    out = {}
    for key in STRICT_ARP:
        with open(_arp_path(ifname, key, root)) as fh:
            out[key] = int(fh.read().strip())
    return out


def enforce_strict_arp(ifnames: Iterable[str], root: str = PROC_SYS) -> dict[str, dict[str, int]]:
    """Set arp_ignore=1 / arp_announce=2 where lower, as kube-proxy's strictARP does.

    The kernel uses the max of ``conf.all`` and ``conf.<if>`` for both, so raising the
    per-interface value is enough and never lowers anything the operator set.
    Returns what was changed: ``{ifname: {key: new_value}}`` (empty = nothing to do).
    """
    changed: dict[str, dict[str, int]] = {}
    for ifname in ifnames:
        current = get_arp_settings(ifname, root)
        for key, value in STRICT_ARP.items():
            if current[key] < value:
                with open(_arp_path(ifname, key, root), "w") as fh:
                    fh.write(f"{value}\n")
                changed.setdefault(ifname, {})[key] = value
    return changed


# --- connected networks (/proc/net) ----------------------------------------------------------------


def node_networks(root: str = "/proc/net") -> list[str]:
    """This network namespace's connected networks (where a TTL-1 eBGP peer can be).

    Read from /proc/net (per network namespace) rather than netlink: no extra socket,
    and nothing to import concurrently with the link watcher's pyroute2.
    """
    with open(os.path.join(root, "route")) as f:
        v4 = f.read()
    try:
        with open(os.path.join(root, "ipv6_route")) as f:
            v6 = f.read()
    except OSError:
        v6 = ""
    return parse_proc_routes(v4, v6)

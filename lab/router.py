"""The lab's BGP router (FRR or BIRD from Debian) in the `router` namespace.

The router is AS 64512 and peers eBGP with every node (the nodes' speakers use AS
64513 by default; the router accepts any external AS so tests can give nodes their
own ASNs). With `bgp_mode="ibgp"` (`lbspeaker-lab up --bgp-mode ibgp`) it joins the
nodes' AS 64513 instead and peers iBGP, because LOCAL_PREF only travels over iBGP
(RFC 4271) and BGPAdvertisement.localPref must be visible on the router.

Each node IP is a configured neighbour, and a listen range over the
node subnet lets new speakers connect without a config change. Paths from
different nodes are installed as one ECMP route (FRR `maximum-paths 8` with
`as-path multipath-relax`; BIRD `merge paths`), which is what the BGP tests and
the announce-to-FIB benchmark look at.

With `--ipv6` the router has IPv6 neighbours (every node's IPv6 address, a listen range over
the IPv6 node subnet) and takes IPv6 routes both over them and over the IPv4 sessions
(MP-BGP: the IPv6 unicast family activated on the IPv4 neighbours too, whose IPv6 next hop is
the node's address on the same bridge), with ECMP in the IPv6 FIB as in IPv4.

Both routers are graceful-restart helpers (RFC 4724 receiving side: FRR
`graceful-restart-helper`, BIRD `graceful restart aware`): when a speaker that negotiated
graceful restart goes away without a NOTIFICATION, its routes stay (stale) for the restart time
it advertised, until it is back and sends End-of-RIB.

With `bfd=True` (`lbspeaker-lab up --bfd`) the router also runs BFD (FRR's bfdd, BIRD's bfd
protocol; RFC 5881 single hop, 300 ms x 3 as in the issue's benchmark) to every node, and ties
each BGP session to it: a BFD Down resets that node's BGP session and withdraws its next hops.

Rendering is pure (`render_frr`, `render_bird`, `parse_*`); `start_router` and
`bgp_neighbors` are the thin shell. Daemons run in the foreground (no `-d`) so the
PID the lab records is the daemon itself and `down` ends it by PID.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.topology import (
    BGP_MODES,
    NODE_SUBNET_V4,
    NODE_SUBNET_V6,
    ROUTER_IP_V4,
    ROUTER_IP_V6,
    LabPlan,
    router_asn,
)

FRR_DIR = "/usr/lib/frr"
ROUTER_KINDS = ("frr", "bird", "none")
MAX_PATHS = 8
BFD_PROFILE = "lbspeaker-lab"
BFD_INTERVAL_MS = 300
BFD_MULTIPLIER = 3


@dataclass(frozen=True)
class RouterPaths:
    """Files of one router instance under `<state>/router`."""

    root: Path

    @property
    def frr_conf(self) -> Path:
        return self.root / "frr.conf"

    @property
    def bfdd_conf(self) -> Path:
        """bfdd's own file: bgpd does not know the `bfd` node, and its parser leaves config mode at
        the block's `exit`, so a shared file loses every line after it (`router bgp` included)."""
        return self.root / "bfdd.conf"

    @property
    def zserv(self) -> Path:
        return self.root / "zserv.api"

    @property
    def bird_conf(self) -> Path:
        return self.root / "bird.conf"

    @property
    def bird_ctl(self) -> Path:
        return self.root / "bird.ctl"

    def pidfile(self, daemon: str) -> Path:
        return self.root / f"{daemon}.pid"


RUNTIME_ROOT = "/run/lbspeaker-lab-router"


def runtime_dir(state_dir: Path) -> Path:
    """Where the router's config and sockets live: outside the state dir, because FRR drops to
    the `frr` user, which cannot traverse a 0700 parent such as pytest's tmp dir."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return Path(RUNTIME_ROOT) / digest


# -- FRR ------------------------------------------------------------------------------------------


def render_frr_bfdd(lab: LabPlan) -> str:
    """bfdd.conf: one profile, a static single-hop peer per node address.

    The static peers make the sessions exist before BGP is up (so BFD can be seen alone); bgpd's
    own registration for the same address attaches to them.
    """
    lines = [
        "bfd",
        f" profile {BFD_PROFILE}",
        f"  transmit-interval {BFD_INTERVAL_MS}",
        f"  receive-interval {BFD_INTERVAL_MS}",
        f"  detect-multiplier {BFD_MULTIPLIER}",
        " exit",
    ]
    for n in lab.nodes:
        for addr in (n.ipv4, n.ipv6):
            if addr:
                lines += [f" peer {addr}", f"  profile {BFD_PROFILE}", " exit"]
    return "\n".join(["frr defaults traditional", "hostname router", "log stdout informational", "!",
                      *lines, "exit", ""])


def render_frr(
    lab: LabPlan, log_file: str | None = None, password: str | None = None, bgp_mode: str = "ebgp",
    bfd: bool = False,
) -> str:
    """frr.conf for zebra + bgpd: AS 64512, every node a neighbour, listen range, ECMP.

    `password` turns on TCP MD5 (RFC 2385) for every node session, as BGPPeer.password expects.
    `bgp_mode="ibgp"`: AS 64513 and `remote-as internal`; iBGP paths are only multipathed with
    `maximum-paths ibgp`, so that is set too (the FIB still gets one next hop per node).
    `bfd`: each BGP neighbour follows bfdd's session to it (bfdd's own file: `render_frr_bfdd`).
    """
    asn = router_asn(bgp_mode)
    remote = "internal" if bgp_mode == "ibgp" else "external"
    multipath = [f"  maximum-paths {MAX_PATHS}"] + (
        [f"  maximum-paths ibgp {MAX_PATHS}"] if bgp_mode == "ibgp" else []
    )
    lines = [
        "frr defaults traditional",
        "hostname router",
        f"log file {log_file} informational" if log_file else "log stdout informational",
        "!",
        f"router bgp {asn}",
        f" bgp router-id {ROUTER_IP_V4}",
        " no bgp ebgp-requires-policy",
        " no bgp default ipv4-unicast",
        " bgp bestpath as-path multipath-relax",
        " bgp log-neighbor-changes",
        " neighbor NODES peer-group",
        f" neighbor NODES remote-as {remote}",
        " neighbor NODES timers 3 9",
        " neighbor NODES timers connect 2",
        " neighbor NODES graceful-restart-helper",
    ]
    if password:
        lines.append(f" neighbor NODES password {password}")
    if bfd:
        lines += [" neighbor NODES bfd", f" neighbor NODES bfd profile {BFD_PROFILE}"]
    if lab.ipv6:
        lines += [
            " neighbor NODES6 peer-group",
            f" neighbor NODES6 remote-as {remote}",
            " neighbor NODES6 timers 3 9",
            " neighbor NODES6 timers connect 2",
            " neighbor NODES6 graceful-restart-helper",
        ]
        if password:
            lines.append(f" neighbor NODES6 password {password}")
        if bfd:
            lines += [" neighbor NODES6 bfd", f" neighbor NODES6 bfd profile {BFD_PROFILE}"]
    for n in lab.nodes:
        lines.append(f" neighbor {n.ipv4} peer-group NODES")
        lines.append(f" neighbor {n.ipv4} description {n.name}")
        if n.ipv6:
            lines.append(f" neighbor {n.ipv6} peer-group NODES6")
            lines.append(f" neighbor {n.ipv6} description {n.name}")
    lines.append(f" bgp listen range {NODE_SUBNET_V4} peer-group NODES")
    if lab.ipv6:
        lines.append(f" bgp listen range {NODE_SUBNET_V6} peer-group NODES6")
    lines += [
        " !",
        " address-family ipv4 unicast",
        *multipath,
        "  neighbor NODES activate",
        "  neighbor NODES soft-reconfiguration inbound",
        " exit-address-family",
    ]
    if lab.ipv6:
        lines += [
            " !",
            " address-family ipv6 unicast",
            *multipath,
            "  neighbor NODES6 activate",
            "  neighbor NODES6 soft-reconfiguration inbound",
            "  neighbor NODES activate",  # MP-BGP: IPv6 routes over the IPv4 sessions
            "  neighbor NODES soft-reconfiguration inbound",
            " exit-address-family",
        ]
    lines += ["exit", "!", "line vty", "!", ""]
    return "\n".join(lines)


def frr_argv(daemon: str, paths: RouterPaths) -> list[str]:
    """Foreground FRR daemon in its own path space: private config, pid file, sockets, no TCP vty."""
    return [
        os.path.join(FRR_DIR, daemon),
        "-f",
        str(paths.bfdd_conf if daemon == "bfdd" else paths.frr_conf),
        "-i",
        str(paths.pidfile(daemon)),
        "-z",
        str(paths.zserv),
        "--vty_socket",
        str(paths.root),
        "-P",
        "0",
    ]


def parse_frr_neighbors(text: str) -> dict[str, str]:
    """`show bgp neighbors json` -> {neighbor address: state} (includes neighbours in no AFI)."""
    out: dict[str, str] = {}
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError:
        return out
    for addr, peer in data.items():
        if isinstance(peer, dict) and "bgpState" in peer:
            out[addr] = str(peer["bgpState"])
    return out


# -- BIRD -----------------------------------------------------------------------------------------


def bird_protocol_name(node: str, family: int) -> str:
    """BIRD protocol names must be identifiers: kind-worker2 -> n_kind_worker2 (v6: n6_...)."""
    return ("n_" if family == 4 else "n6_") + re.sub(r"[^A-Za-z0-9_]", "_", node)


def render_bird(
    lab: LabPlan, log_file: str | None = None, password: str | None = None, bgp_mode: str = "ebgp",
    bfd: bool = False,
) -> str:
    """bird.conf (BIRD 2): same policy as FRR; the kernel protocol installs merged ECMP paths.

    `bgp_mode="ibgp"`: AS 64513 and `internal` neighbours. BIRD treats iBGP as multihop with
    recursive next hops by default; the nodes share the router's subnet, so `direct` +
    `gateway direct` make each path's next hop the node itself and the kernel gets one ECMP
    route via the nodes, as with eBGP. (`next hop self` would only matter on export: none.)
    `bfd`: a bfd protocol with a static neighbour per node address, and `bfd on` in BGP.
    """
    if bgp_mode not in BGP_MODES:
        raise ValueError(f"bgp mode {bgp_mode!r}")
    asn = router_asn(bgp_mode)
    ibgp = bgp_mode == "ibgp"
    kind = "internal" if ibgp else "external"
    session = " direct;" if ibgp else ""
    gateway = " gateway direct;" if ibgp else ""
    auth = f' password "{password}";' if password else ""
    auth += " bfd on;" if bfd else ""
    log = f'log "{log_file}" all;' if log_file else "log stderr all;"
    lines = [
        log,
        f"router id {ROUTER_IP_V4};",
        "protocol device { scan time 10; }",
        "protocol direct { ipv4; ipv6; }",
        "protocol kernel kernel4 {",
        "  ipv4 { import none; export where source = RTS_BGP; };",
        f"  merge paths on limit {MAX_PATHS};",
        "}",
        "protocol kernel kernel6 {",
        "  ipv6 { import none; export where source = RTS_BGP; };",
        f"  merge paths on limit {MAX_PATHS};",
        "}",
        "template bgp nodes {",
        f"  local {ROUTER_IP_V4} as {asn};{session}",
        f"  hold time 9; keepalive time 3; connect retry time 2;{auth}",
        "  graceful restart aware;",
        f"  ipv4 {{ import all; export none;{gateway} }};",
        # MP-BGP: IPv6 routes over the IPv4 sessions too (their next hop is the node's IPv6 address)
        *([f"  ipv6 {{ import all; export none;{gateway} }};"] if lab.ipv6 else []),
        "}",
    ]
    if bfd:
        lines += [
            "protocol bfd labbfd {",
            f'  interface "*" {{ min rx interval {BFD_INTERVAL_MS} ms; min tx interval {BFD_INTERVAL_MS} ms;'
            f" idle tx interval 1000 ms; multiplier {BFD_MULTIPLIER}; }};",
            *(f"  neighbor {a};" for n in lab.nodes for a in (n.ipv4, n.ipv6) if a),
            "}",
        ]
    if lab.ipv6:
        lines += [
            "template bgp nodes6 {",
            f"  local {ROUTER_IP_V6} as {asn};{session}",
            f"  hold time 9; keepalive time 3; connect retry time 2;{auth}",
            "  graceful restart aware;",
            f"  ipv6 {{ import all; export none;{gateway} }};",
            "}",
        ]
    for n in lab.nodes:
        lines.append(
            f"protocol bgp {bird_protocol_name(n.name, 4)} from nodes "
            f'{{ description "{n.name}"; neighbor {n.ipv4} {kind}; }}'
        )
        if n.ipv6:
            lines.append(
                f"protocol bgp {bird_protocol_name(n.name, 6)} from nodes6 "
                f'{{ description "{n.name}"; neighbor {n.ipv6} {kind}; }}'
            )
    # Dynamic peers: speakers on addresses that are not configured nodes (BIRD >= 2.0.6).
    lines.append(
        f"protocol bgp dyn4 from nodes {{ neighbor range {NODE_SUBNET_V4} {kind};"
        ' dynamic name "dyn4_"; }'
    )
    if lab.ipv6:
        lines.append(
            f"protocol bgp dyn6 from nodes6 {{ neighbor range {NODE_SUBNET_V6} {kind};"
            ' dynamic name "dyn6_"; }'
        )
    return "\n".join(lines) + "\n"


_BIRD_PROTO = re.compile(r"^(\S+)\s+BGP\s+\S+\s+(\S+)\s+\S+(?:\s+\S+)?\s*(\S*)")


def parse_bird_protocols(show_protocols_all: str) -> dict[str, str]:
    """`birdc show protocols all` -> {neighbor address: BGP state} for configured BGP peers."""
    out: dict[str, str] = {}
    current_state: str | None = None
    for line in show_protocols_all.splitlines():
        m = re.match(r"^(\S+)\s+BGP\s+", line)
        if m:
            current_state = None
            continue
        st = re.match(r"^\s+BGP state:\s+(\S+)", line)
        if st:
            current_state = st.group(1)
            continue
        addr = re.match(r"^\s+Neighbor address:\s+(\S+)", line)
        if addr and current_state is not None:
            if addr.group(1) in (NODE_SUBNET_V4, NODE_SUBNET_V6):
                continue  # the dynamic template itself is not a neighbour
            out[addr.group(1)] = current_state
    return out


# -- process shell --------------------------------------------------------------------------------


def available(kind: str) -> bool:
    """Whether the Debian package for this router kind is installed."""
    if kind == "frr":
        return os.access(os.path.join(FRR_DIR, "bgpd"), os.X_OK) and shutil.which("vtysh") is not None
    if kind == "bird":
        return shutil.which("bird") is not None and shutil.which("birdc") is not None
    return kind == "none"


def prepare_dir(paths: RouterPaths, owner: str | None) -> None:
    """Create the router dir, owned by the daemon user (FRR drops to `frr` and writes sockets)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    if owner:
        try:
            pw = pwd.getpwnam(owner)
        except KeyError:
            return
        os.chown(paths.root, pw.pw_uid, pw.pw_gid)
        for p in paths.root.iterdir():
            os.chown(p, pw.pw_uid, pw.pw_gid)


def router_processes(kind: str, paths: RouterPaths, bfd: bool = False) -> list[tuple[str, list[str]]]:
    """(record name, argv) of the daemons to start for a router kind, in start order."""
    if kind == "frr":
        daemons = [("router-zebra", frr_argv("zebra", paths))]
        if bfd:  # before bgpd, so bgpd's BFD registrations find it; control socket kept private
            bfdd = [*frr_argv("bfdd", paths), "--bfdctl", str(paths.root / "bfdd.sock")]
            daemons.append(("router-bfdd", bfdd))
        return [*daemons, ("router-bgpd", frr_argv("bgpd", paths))]
    if kind == "bird":
        argv = [
            shutil.which("bird") or "bird",
            "-c",
            str(paths.bird_conf),
            "-s",
            str(paths.bird_ctl),
            "-P",
            str(paths.pidfile("bird")),
            "-f",
        ]
        return [("router-bird", argv)]
    return []


def render(
    kind: str, lab: LabPlan, password: str | None = None, bgp_mode: str = "ebgp", bfd: bool = False
) -> str:
    """The config text of a router kind ("" for none)."""
    if kind == "frr":
        return render_frr(lab, password=password, bgp_mode=bgp_mode, bfd=bfd)
    if kind == "bird":
        return render_bird(lab, password=password, bgp_mode=bgp_mode, bfd=bfd)
    return ""


def write_config(
    kind: str, lab: LabPlan, paths: RouterPaths, password: str | None = None, bgp_mode: str = "ebgp",
    bfd: bool = False,
) -> None:
    """Render and write the router config; FRR's dir is handed to the frr user."""
    paths.root.mkdir(parents=True, exist_ok=True)
    if kind == "frr":
        paths.frr_conf.write_text(render_frr(lab, password=password, bgp_mode=bgp_mode, bfd=bfd))
        os.chmod(paths.frr_conf, 0o640)
        if bfd:
            paths.bfdd_conf.write_text(render_frr_bfdd(lab))
            os.chmod(paths.bfdd_conf, 0o640)
        prepare_dir(paths, "frr")
    elif kind == "bird":
        paths.bird_conf.write_text(render_bird(lab, password=password, bgp_mode=bgp_mode, bfd=bfd))
        os.chmod(paths.bird_conf, 0o600)


def wait_ready(kind: str, paths: RouterPaths, timeout: float = 10.0) -> bool:
    """Wait until the router answers its control socket (so `status` and tests can query it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kind == "frr" and (paths.root / "bgpd.vty").exists():
            return True
        if kind == "bird" and paths.bird_ctl.exists():
            return True
        time.sleep(0.05)
    return False


def wait_zebra(paths: RouterPaths, timeout: float = 10.0) -> bool:
    """bgpd must find zebra's socket at start, or it runs without installing routes for a while."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if paths.zserv.exists():
            return True
        time.sleep(0.05)
    return False


def vtysh(paths: RouterPaths, command: str, timeout: float = 10.0) -> str:
    """Run one vtysh command against this lab's FRR (via its private vty sockets)."""
    proc = subprocess.run(
        ["vtysh", "--vty_socket", str(paths.root), "-c", command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"vtysh -c {command!r}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def birdc(paths: RouterPaths, command: str, timeout: float = 10.0) -> str:
    """Run one birdc command against this lab's BIRD control socket."""
    proc = subprocess.run(
        ["birdc", "-s", str(paths.bird_ctl), *command.split()],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"birdc {command!r}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def bgp_neighbors(kind: str, paths: RouterPaths) -> dict[str, str]:
    """{neighbor address: BGP state} as the running router sees it (configured + dynamic)."""
    if kind == "frr":
        return parse_frr_neighbors(vtysh(paths, "show bgp neighbors json"))
    if kind == "bird":
        return parse_bird_protocols(birdc(paths, "show protocols all"))
    return {}


def parse_frr_session_marks(text: str) -> dict[str, tuple[str, str]]:
    """`show bgp neighbors json` -> {address: (state, "established/dropped")}: the counts
    change whenever that session went down or came up again, however briefly."""
    out: dict[str, tuple[str, str]] = {}
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError:
        return out
    for addr, peer in data.items():
        if isinstance(peer, dict) and "bgpState" in peer:
            counts = f"{peer.get('connectionsEstablished')}/{peer.get('connectionsDropped')}"
            out[addr] = (str(peer["bgpState"]), counts)
    return out


_BIRD_PROTOCOL_LINE = re.compile(r"^(\S+)\s+BGP\s+\S+\s+(\S+)\s+(.+?)\s+(\S+)\s*$")


def parse_bird_session_marks(text: str) -> dict[str, tuple[str, str]]:
    """`birdc show protocols` -> {protocol: (info, since)}: `since` changes whenever the
    protocol changed state (a session that dropped and came back)."""
    out: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        m = _BIRD_PROTOCOL_LINE.match(line)
        if m:
            out[m.group(1)] = (m.group(4), m.group(3))
    return out


def session_marks(kind: str, paths: RouterPaths, nodes: dict[str, str]) -> dict[str, tuple[str, str]]:
    """{node IPv4 address: (BGP state, a mark that changes whenever that session restarted)}
    for `nodes` ({node name: IPv4 address}), as the running router sees them."""
    if kind == "frr":
        marks = parse_frr_session_marks(vtysh(paths, "show bgp neighbors json"))
        return {ip: marks[ip] for ip in nodes.values() if ip in marks}
    protocols = parse_bird_session_marks(birdc(paths, "show protocols"))
    by_name = {bird_protocol_name(node, 4): ip for node, ip in nodes.items()}
    return {ip: protocols[name] for name, ip in by_name.items() if name in protocols}


def parse_frr_bfd_peers(text: str) -> dict[str, str]:
    """`show bfd peers json` -> {peer address: status} (up, down, init, shutdown)."""
    out: dict[str, str] = {}
    for peer in json.loads(text or "[]"):
        if isinstance(peer, dict) and "peer" in peer:
            out[str(peer["peer"])] = str(peer.get("status", "unknown"))
    return out


_BIRD_BFD = re.compile(r"^[ \t]*([0-9a-fA-F.:]+)[ \t]+\S+[ \t]+(\S+)[ \t]", re.M)


def parse_bird_bfd_sessions(text: str) -> dict[str, str]:
    """`birdc show bfd sessions` -> {peer address: state}, lower-cased like FRR's (up, down, init)."""
    out: dict[str, str] = {}
    for m in _BIRD_BFD.finditer(text):
        if ":" in m.group(1) or "." in m.group(1):
            out[m.group(1)] = m.group(2).lower()
    return out


def bfd_peers(kind: str, paths: RouterPaths) -> dict[str, str]:
    """{node address: BFD state} as the running router sees it."""
    if kind == "frr":
        return parse_frr_bfd_peers(vtysh(paths, "show bfd peers json"))
    if kind == "bird":
        return parse_bird_bfd_sessions(birdc(paths, "show bfd sessions"))
    return {}

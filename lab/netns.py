"""Network-namespace primitives for the lab (thin shell over `ip` and `sysctl`).

The lab stands in for kind's docker network with Linux network namespaces. Every
helper here only ever touches namespaces by name: nothing is attached to the
host's interfaces, and nothing is killed here (callers end their processes by PID).
We shell out to `ip` rather than keeping pyroute2 NetNS helper processes around:
each call is a few milliseconds, and `ip netns exec` execs the target, so a
Popen's pid is the real process that `down` must end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

NETNS_DIR = "/run/netns"


class NetnsError(RuntimeError):
    """A namespace command failed; carries the command's stderr for the report."""


def _ip() -> str:
    """Path of `ip` (iproute2); resolved each call so tests can skip cleanly without it."""
    path = shutil.which("ip") or "/usr/sbin/ip"
    return path


def _run(
    argv: list[str], check: bool = True, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command capturing text output; raise NetnsError with stderr when `check` and it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise NetnsError(
            f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def ns_prefix(netns: str | None) -> list[str]:
    """argv prefix that runs a command inside `netns` (empty for the host namespace)."""
    return [] if netns is None else [_ip(), "netns", "exec", netns]


def list_netns() -> list[str]:
    """Names of all named network namespaces (as `ip netns list` sees them)."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if not n.startswith("."))
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    """Whether the named namespace exists (its bind mount is present)."""
    return os.path.exists(os.path.join(NETNS_DIR, name))


def create_netns(name: str) -> None:
    """Create the namespace if missing and bring its loopback up (idempotent)."""
    if not netns_exists(name):
        proc = _run([_ip(), "netns", "add", name], check=False)
        if proc.returncode != 0 and not netns_exists(name):
            raise NetnsError(f"ip netns add {name}: {proc.stderr.strip()}")
    _run([_ip(), "-n", name, "link", "set", "lo", "up"])


def delete_netns(name: str) -> None:
    """Delete the namespace if present (idempotent); processes inside are the caller's to end."""
    if netns_exists(name):
        proc = _run([_ip(), "netns", "del", name], check=False)
        if proc.returncode != 0 and netns_exists(name):
            raise NetnsError(f"ip netns del {name}: {proc.stderr.strip()}")


def run_in(
    netns: str | None,
    argv: list[str],
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv inside `netns` (host namespace if None) and capture its text output."""
    return _run(ns_prefix(netns) + list(argv), check=check, timeout=timeout, input=input)


def popen_in(netns: str | None, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
    """Start argv inside `netns`; `ip netns exec` execs, so the Popen's pid is the real process."""
    return subprocess.Popen(ns_prefix(netns) + list(argv), **kw)


def stop_popen(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM a started process and reap it; SIGKILL if it is not gone within `timeout` s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def link_exists(netns: str | None, ifname: str) -> bool:
    """Whether an interface exists in the namespace."""
    argv = [_ip()] + ([] if netns is None else ["-n", netns]) + ["link", "show", "dev", ifname]
    return _run(argv, check=False).returncode == 0


def add_veth(
    ns_a: str,
    if_a: str,
    ns_b: str,
    if_b: str,
    mtu: int | None = None,
    mac_a: str | None = None,
    mac_b: str | None = None,
) -> None:
    """Create a veth pair with `if_a` in ns_a and `if_b` in ns_b, both up (idempotent).

    MACs can be pinned so tests can predict them (static neighbour entries, arping answers).
    """
    if link_exists(ns_a, if_a) and link_exists(ns_b, if_b):
        return
    # A half-made pair (one end only) cannot be completed; remove it and start over.
    if link_exists(ns_a, if_a):
        _run([_ip(), "-n", ns_a, "link", "del", if_a], check=False)
    if link_exists(ns_b, if_b):
        _run([_ip(), "-n", ns_b, "link", "del", if_b], check=False)
    argv = [_ip(), "-n", ns_a, "link", "add", if_a]
    if mtu is not None:
        argv += ["mtu", str(mtu)]
    if mac_a is not None:
        argv += ["address", mac_a]
    argv += ["type", "veth", "peer", "name", if_b, "netns", ns_b]
    if mtu is not None:
        argv += ["mtu", str(mtu)]
    if mac_b is not None:
        argv += ["address", mac_b]
    _run(argv)
    _run([_ip(), "-n", ns_a, "link", "set", if_a, "up"])
    _run([_ip(), "-n", ns_b, "link", "set", if_b, "up"])


def set_sysctls(netns: str, values: dict[str, str]) -> None:
    """Set several sysctls inside the namespace with one process (faster than one each)."""
    if not values:
        return
    run_in(netns, ["sysctl", "-q", "-w"] + [f"{k}={v}" for k, v in values.items()])


def ip_batch(netns: str | None, commands: list[str], check: bool = True) -> None:
    """Run many `ip` commands in one process (`ip -batch -`), e.g. addresses and routes."""
    if not commands:
        return
    argv = [_ip()] + ([] if netns is None else ["-n", netns]) + ["-batch", "-"]
    _run(argv, check=check, input="\n".join(commands) + "\n")

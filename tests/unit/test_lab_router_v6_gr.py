"""`lbspeaker-lab up --ipv6`: router configs carry IPv6 over IPv4 sessions (MP-BGP) and over IPv6
sessions, and both routers are graceful-restart helpers; each daemon's own parser accepts them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lab import router as rtr
from lab import topology as topo


def _section(conf: str, start: str, end: str) -> str:
    i = conf.index(start)
    return conf[i : conf.index(end, i)]


@pytest.mark.parametrize("ipv6", [False, True])
def test_frr_families_and_graceful_restart_helper(ipv6: bool) -> None:
    lab = topo.plan(2, ipv6, "iptables", False)
    conf = rtr.render_frr(lab)
    assert " neighbor NODES graceful-restart-helper" in conf
    assert (" neighbor NODES6 graceful-restart-helper" in conf) is ipv6
    if ipv6:
        af6 = _section(conf, " address-family ipv6 unicast", " exit-address-family")
        assert "  neighbor NODES6 activate" in af6
        assert "  neighbor NODES activate" in af6  # MP-BGP: IPv6 routes over IPv4 sessions
        assert "  maximum-paths 8" in af6
    else:
        assert "address-family ipv6" not in conf


@pytest.mark.parametrize("ipv6", [False, True])
def test_bird_families_and_graceful_restart_aware(ipv6: bool) -> None:
    lab = topo.plan(2, ipv6, "iptables", False)
    conf = rtr.render_bird(lab)
    v4 = _section(conf, "template bgp nodes {", "\n}")
    assert "graceful restart aware;" in v4 and "ipv4 {" in v4
    assert ("ipv6 {" in v4) is ipv6  # MP-BGP channel on the IPv4 sessions
    if ipv6:
        v6 = _section(conf, "template bgp nodes6 {", "\n}")
        assert "graceful restart aware;" in v6 and "ipv6 {" in v6 and "ipv4 {" not in v6


@pytest.mark.parametrize("kind", ["frr", "bird"])
@pytest.mark.parametrize("ipv6", [False, True])
@pytest.mark.parametrize("bgp_mode", ["ebgp", "ibgp"])
def test_the_router_parses_its_config(tmp_path: Path, kind: str, ipv6: bool, bgp_mode: str) -> None:
    lab = topo.plan(2, ipv6, "iptables", False)
    conf = tmp_path / f"{kind}.conf"
    conf.write_text(rtr.render(kind, lab, bgp_mode=bgp_mode, bfd=True))
    if kind == "frr":
        if shutil.which("vtysh") is None:
            pytest.skip("needs FRR's vtysh")
        argv = ["vtysh", "-C", "-f", str(conf)]
    else:
        if shutil.which("bird") is None:
            pytest.skip("needs bird")
        argv = ["bird", "-p", "-c", str(conf)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr

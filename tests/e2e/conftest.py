"""The `lab` fixture: one namespace lab per test session, always torn down.

e2e tests need root, `ip` (iproute2) and network namespaces; otherwise they are
skipped. The lab uses fixed namespace names (kind-net, kind-worker, ...), so only one
can exist per machine: if lab namespaces exist before the session starts (someone's
running lab), the e2e tests are skipped rather than destroying it; set
`LBSPEAKER_LAB_E2E_TAKEOVER=1` to tear it down and proceed.

Tests use the `lab` fixture (a `Lab` handle): it is brought up on first use with the
default options (3 workers, FRR, kube-proxy iptables mode). A test that needs other
options calls `lab.up(router="bird")` / `lab.up(kube_proxy_mode="ipvs", strict_arp=True)` /
`lab.up(bgp_mode="ibgp")`
(idempotent re-up of the running lab), and a test that takes it down calls
`lab.down()`; the next test that asks for `lab` gets it back up. At session end the
lab is always taken down, even after failures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab import netns as nsops
from lab import topology as topo

DEFAULT_OPTIONS: dict[str, Any] = {
    "workers": 3,
    "router": "frr",
    "kube_proxy_mode": "iptables",
    "strict_arp": False,
    "ipv6": False,
    "bgp_mode": "ebgp",
}


def lab_cli(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `lbspeaker-lab ARGS` (from this tree) and capture its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"lbspeaker-lab {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def lab_namespaces() -> list[str]:
    """Lab namespaces that exist right now."""
    return [n for n in nsops.list_netns() if topo.is_lab_netns(n)]


def _e2e_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "e2e tests need root (network namespaces)"
    if shutil.which("ip") is None:
        return "e2e tests need iproute2 (`ip`)"
    return None


@dataclass
class Lab:
    """A handle on the session's lab: options, state dir, kubeconfigs, and helpers."""

    state_dir: Path
    options: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_OPTIONS))
    is_up: bool = False
    last_up_seconds: float = 0.0
    last_up_output: str = ""

    @property
    def plan(self) -> topo.LabPlan:
        """The topology of the current options (pure; what `up` built)."""
        o = self.options
        return topo.plan(o["workers"], o["ipv6"], o["kube_proxy_mode"], o["strict_arp"])

    @property
    def kubeconfig(self) -> Path:
        """Host-side kubeconfig (127.0.0.1)."""
        return self.state_dir / "kubeconfig"

    @property
    def nodes_kubeconfig(self) -> Path:
        """kubeconfig for processes inside node namespaces (http://172.18.0.2:6443)."""
        return self.state_dir / "kubeconfig-nodes"

    def state(self) -> dict[str, Any]:
        """The state file as written by `up`."""
        return dict(json.loads((self.state_dir / "state.json").read_text()))

    def up(self, **options: Any) -> str:
        """(Re-)run `up` with the given options merged over the current ones; returns stdout."""
        self.options.update(options)
        o = self.options
        argv = ["up", "--state-dir", str(self.state_dir), "--workers", str(o["workers"])]
        argv += ["--router", o["router"], "--kube-proxy-mode", o["kube_proxy_mode"]]
        argv += ["--strict-arp", "true" if o["strict_arp"] else "false"]
        argv += ["--ipv6"] if o["ipv6"] else []
        argv += ["--bgp-mode", o.get("bgp_mode", "ebgp")]
        if o.get("bgp_password"):
            argv += ["--bgp-password", o["bgp_password"]]
        argv += ["--bfd"] if o.get("bfd") else []
        if o.get("image"):
            argv += ["--image", o["image"]]
        for flag in ("no_controller", "no_speakers", "no_agents"):
            if o.get(flag):
                argv.append("--" + flag.replace("_", "-"))
        t0 = time.monotonic()
        self.is_up = True  # even a failed up may have created things: down at the end
        proc = lab_cli(*argv)
        self.last_up_seconds = time.monotonic() - t0
        self.last_up_output = proc.stdout
        return proc.stdout

    def ensure_up(self) -> None:
        """Bring the lab up if a previous test took it down."""
        if not self.is_up:
            self.options = dict(DEFAULT_OPTIONS)
            self.up()

    def down(self) -> str:
        """Take the lab down (idempotent); returns stdout."""
        proc = lab_cli("down", "--state-dir", str(self.state_dir))
        self.is_up = False
        return proc.stdout

    def exec(
        self, name: str, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a lab namespace (client, router, ext-client, a node, a pod)."""
        return nsops.run_in(name, list(argv), check=check, timeout=timeout)

    def status(self) -> dict[str, Any]:
        """`lbspeaker-lab status --json`."""
        return dict(json.loads(lab_cli("status", "--json", "--state-dir", str(self.state_dir)).stdout))


@pytest.fixture(scope="session")
def lab_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The session's lab handle; tears everything down at the end, whatever happened."""
    reason = _e2e_unavailable()
    if reason:
        pytest.skip(reason)
    existing = lab_namespaces()
    if existing and os.environ.get("LBSPEAKER_LAB_E2E_TAKEOVER") != "1":
        pytest.skip(
            f"lab namespaces already exist ({', '.join(existing)}): run `lbspeaker-lab down` "
            "or set LBSPEAKER_LAB_E2E_TAKEOVER=1"
        )
    handle = Lab(state_dir=tmp_path_factory.mktemp("lab-state"))
    if existing:
        lab_cli("down", "--state-dir", str(handle.state_dir))
    try:
        yield handle
    finally:
        lab_cli("down", "--state-dir", str(handle.state_dir), check=False)


@pytest.fixture
def lab(lab_session: Lab) -> Lab:
    """The running lab (brought up on demand with the default options)."""
    lab_session.ensure_up()
    return lab_session

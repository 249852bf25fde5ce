"""`lbspeaker-lab up` waits until the components answer their readinessProbe, as `kubectl rollout
status` would: a Service created right after `up` then meets a running controller and speakers,
so "Service created -> curl answered" measures lbspeaker, not its start-up.

The probe is the manifests' (`httpGet /readyz` on the `monitoring` port). Where it listens comes
from the component's own `--metrics-addr` argument (the working tree's processes and the image's
containers, whose args are the manifests'), or the program's default; it is fetched with curl
inside the component's network namespace. The pure half (`probe_target`) is table-tested.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lab import netns as nsops
from lab.state import ProcessRecord

# The programs' --metrics-addr defaults (lbspeaker.controller.main, lbspeaker.speaker.main).
DEFAULT_ADDR = {"controller": "0.0.0.0:7472", "speaker": "0.0.0.0:7473"}
READY_PATH = "/readyz"


@dataclass(frozen=True)
class ProbeTarget:
    """Where a component's readiness is asked: a namespace (None: the host's) and a URL."""

    name: str
    netns: str | None
    url: str


def component_of(record_name: str) -> str | None:
    """"controller" or "speaker" for the lab's records of them ("speaker-kind-worker"), else None."""
    if record_name == "controller":
        return "controller"
    return "speaker" if record_name.startswith("speaker-") else None


def metrics_addr(argv: list[str], default: str) -> str:
    """The last `--metrics-addr X` / `--metrics-addr=X` of argv (the one the program uses)."""
    found = default
    for i, arg in enumerate(argv):
        if arg == "--metrics-addr" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--metrics-addr="):
            found = arg.split("=", 1)[1]
    return found


def probe_target(rec: ProcessRecord) -> ProbeTarget | None:
    """The readiness URL of a lab record, or None for what has no probe (agents, off metrics)."""
    component = component_of(rec.name)
    if component is None:
        return None
    addr = metrics_addr(rec.argv, DEFAULT_ADDR[component])
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # listening on every address: loopback of its own namespace
    return ProbeTarget(rec.name, rec.netns, f"http://{host}:{port}{READY_PATH}")


def ready(target: ProbeTarget) -> tuple[bool, str]:
    """One probe: (HTTP 200, the body or why not)."""
    argv = ["curl", "-s", "--max-time", "1", "-w", "\n%{http_code}", target.url]
    try:
        proc = nsops.run_in(target.netns, argv, check=False, timeout=5)
    except Exception as exc:  # a namespace that went away, curl missing: not ready, say why
        return False, f"{type(exc).__name__}: {exc}"
    body, _, code = proc.stdout.rpartition("\n")
    if proc.returncode != 0:
        return False, f"no answer from {target.url} (curl exit {proc.returncode})"
    return code == "200", body.strip() or f"HTTP {code}"


def wait_ready(records: list[ProcessRecord], timeout: float) -> tuple[float, dict[str, str]]:
    """Probe every component until all are ready or `timeout` passes; returns the seconds taken
    and, for each component still not ready, its last answer."""
    t0 = time.monotonic()
    pending = {t.name: t for t in (probe_target(r) for r in records) if t is not None}
    last: dict[str, str] = {}
    while pending:
        for name, target in list(pending.items()):
            ok, why = ready(target)
            if ok:
                del pending[name]
                last.pop(name, None)
            else:
                last[name] = why
        if not pending or time.monotonic() - t0 > timeout:
            break
        time.sleep(0.1)
    return time.monotonic() - t0, {n: last.get(n, "") for n in pending}

"""Layer-2 failover benchmark on the lab: how long the LoadBalancer IP is unreachable from `client`.

A probe inside the `client` namespace opens a new TCP connection to `LB_IP:80` and
sends `GET /host` every 10 ms (connect/read timeout 100 ms, so a dead MAC costs at
most 0.1 s per attempt), printing one line per attempt with the system-wide
monotonic clock. Per trial, the announcing node's speaker is

* ``graceful``: sent SIGTERM (it stops answering, says LEAVING, releases its Lease);
* ``hard``: cut off (its bridge port set down) and SIGKILLed at the same instant (its
  pods stay in the EndpointSlices, as in Kubernetes until the node is declared
  NotReady, so about one request in four still times out after the IP has moved;
  those short gaps do not count as the outage unless they are the longest);

and the outage is the longest gap between two successful requests around the event
(from the last success before it to the first success after it). The probe also reads
the client's neighbour table each round (`/proc/net/arp`), giving a second figure: how
long until the client's entry for the IP holds the new owner's MAC (gratuitous ARP).
In the graceful case the old node itself stays up and keeps forwarding what still
reaches it, so the outage is about one request interval; the neighbour switch time is
the handover proper. Between trials the
lab is restored (`lbspeaker-lab up` restarts the speaker, the bridge port goes back
up) and the IP is back on its elected node. 20 trials each by default; p50/p95/max
are printed and written to ``bench/results/l2_failover.json``.

    python bench/l2_failover.py [--trials 20] [--only graceful|hard] [--out FILE]

Needs root; brings up its own lab (and takes it down) unless lab namespaces exist,
in which case it refuses rather than disturb someone's lab.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lab import netns as nsops  # noqa: E402
from lab import topology as topo  # noqa: E402
from tests.e2e.conftest import Lab, lab_cli, lab_namespaces  # noqa: E402
from tests.e2e.test_speaker_l2 import (  # noqa: E402
    answering_node,
    expected_owner,
    set_bridge_port,
    setup_service,
    signal_speaker,
    wait_for,
    workers,
)

DEFAULT_OUT = ROOT / "bench" / "results" / "l2_failover.json"

PROBE = r"""
import socket, sys, time
ip, interval, timeout = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
req = f"GET /host HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode()
nxt = time.monotonic()
while True:
    t = time.monotonic()
    ok, node = 0, "-"
    try:
        with socket.create_connection((ip, 80), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        text = data.decode(errors="replace")
        if "NODE: " in text:
            ok, node = 1, text.split("NODE: ", 1)[1].split(",", 1)[0]
    except OSError:
        pass
    mac = "-"
    try:
        with open("/proc/net/arp") as fh:
            for row in fh.read().splitlines()[1:]:
                cols = row.split()
                if cols and cols[0] == ip and cols[3] != "00:00:00:00:00:00":
                    mac = cols[3]
    except OSError:
        pass
    print(f"{t:.6f} {ok} {node} {mac}", flush=True)
    nxt += interval
    delay = nxt - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    else:
        nxt = time.monotonic()
"""


class Probe:
    """The client-side request loop (one process in the `client` namespace, ended by PID)."""

    def __init__(self, ip: str, interval: float = 0.01, timeout: float = 0.1) -> None:
        argv = [sys.executable, "-c", PROBE, ip, str(interval), str(timeout)]
        self.proc = nsops.popen_in(topo.CLIENT, argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True)
        self.samples: list[tuple[float, bool, str]] = []
        self.macs: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 4:
                with self._lock:
                    self.samples.append((float(parts[0]), parts[1] == "1", parts[2]))
                    self.macs.append((float(parts[0]), parts[3]))

    def window(self, start: float, end: float) -> list[tuple[float, bool, str]]:
        with self._lock:
            return [s for s in self.samples if start <= s[0] <= end]

    def healthy(self, seconds: float = 0.5) -> bool:
        now = time.monotonic()
        w = self.window(now - seconds, now)
        return len(w) > 5 and all(ok for _, ok, _ in w)

    def mac_switch(self, since: float, mac: str) -> float | None:
        """Seconds from `since` until the client's neighbour entry held `mac`."""
        with self._lock:
            for t, m in self.macs:
                if t > since and m == mac:
                    return t - since
        return None

    def recovered(self, since: float, n: int = 3) -> bool:
        """At least `n` successes after `since`."""
        return sum(ok for _, ok, _ in self.window(since + 0.001, time.monotonic())) >= n

    def stop(self) -> None:
        nsops.stop_popen(self.proc)


def outage(samples: list[tuple[float, bool, str]], t_event: float) -> float:
    """Longest gap between consecutive successes from the last one before the event on."""
    oks = [t for t, ok, _ in samples if ok]
    before = [t for t in oks if t <= t_event]
    after = [t for t in oks if t > t_event]
    if not after:
        return float("inf")
    seq = ([before[-1]] if before else [t_event]) + after
    return max(b - a for a, b in itertools.pairwise(seq))


def answers_from(lab: Lab, ip: str, node: str) -> bool:
    return answering_node(lab, ip) == node


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_trials(lab: Lab, ip: str, kind: str, trials: int, probe: Probe) -> list[dict[str, Any]]:
    results = []
    for i in range(trials):
        owner = expected_owner(lab, ip)
        second = expected_owner(lab, ip, {owner})
        wait_for("owner answers", functools.partial(answers_from, lab, ip, owner), timeout=60)
        wait_for("probe healthy", probe.healthy, timeout=30)
        t_event = time.monotonic()
        if kind == "hard":
            set_bridge_port(lab, owner, False)
            signal_speaker(lab, owner, signal.SIGKILL)
        else:
            signal_speaker(lab, owner, signal.SIGTERM)
        try:
            wait_for("traffic back", functools.partial(probe.recovered, t_event), timeout=20, interval=0.05)
            time.sleep(0.5)
            samples = probe.window(t_event - 1.0, time.monotonic())
            gap = outage(samples, t_event)
            served = [n for t, ok, n in samples if ok and t > t_event + gap]
            switch = None
            with contextlib.suppress(AssertionError):
                switch = wait_for("client neighbour entry moved", functools.partial(
                    probe.mac_switch, t_event, lab.plan.node(second).mac), timeout=5, interval=0.05)
            results.append({"trial": i, "owner": owner, "next": second, "outage_s": round(gap, 4),
                            "neighbour_switch_s": None if switch is None else round(switch, 4),
                            "served_after": sorted(set(served))})
            sw = "never" if switch is None else f"{switch:.3f} s"
            print(f"  {kind} #{i + 1}: {owner} -> {second}: outage {gap:.3f} s, client neighbour entry "
                  f"moved after {sw}", flush=True)
        finally:
            if kind == "hard":
                set_bridge_port(lab, owner, True)
            lab.up()
    return results


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    vals = [r["outage_s"] for r in results]
    out = {"trials": len(vals), "p50_s": round(pct(vals, 0.5), 4), "p95_s": round(pct(vals, 0.95), 4),
           "max_s": round(max(vals), 4), "min_s": round(min(vals), 4)}
    sw = [r["neighbour_switch_s"] for r in results if r.get("neighbour_switch_s") is not None]
    if sw:
        out["neighbour_switch_p50_s"] = round(pct(sw, 0.5), 4)
        out["neighbour_switch_p95_s"] = round(pct(sw, 0.95), 4)
    out["neighbour_never_switched"] = len(vals) - len(sw)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--only", choices=["graceful", "hard"])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if lab_namespaces():
        print(f"lab namespaces exist ({', '.join(lab_namespaces())}): not disturbing them", file=sys.stderr)
        return 2
    lab = Lab(state_dir=Path(tempfile.mkdtemp(prefix="lbt-i-bench-")))
    probe: Probe | None = None
    out: dict[str, Any] = {
        "benchmark": "l2_failover", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(), "python": platform.python_version(),
        "method": "client probe: new TCP connection + GET every 10 ms, 100 ms timeouts; outage = longest gap "
                  "between successes around the event",
        "targets": {"graceful_p50_s": 0.5, "hard_p50_s": 2.0},
    }
    try:
        lab.up()
        _api, ip = setup_service(lab)
        out["lb_ip"] = ip
        out["workers"] = [w.name for w in workers(lab)]
        probe = Probe(ip)
        kinds = [args.only] if args.only else ["graceful", "hard"]
        for kind in kinds:
            print(f"{kind}: {args.trials} trials", flush=True)
            results = run_trials(lab, ip, kind, args.trials, probe)
            out[kind] = {"summary": summarize(results), "trials": results}
            s = out[kind]["summary"]
            print(f"{kind}: outage p50 {s['p50_s']:.3f} s, p95 {s['p95_s']:.3f} s, max {s['max_s']:.3f} s "
                  f"(target p50 <= {out['targets'][kind + '_p50_s']} s); client neighbour entry moved: "
                  f"p50 {s.get('neighbour_switch_p50_s')} s, p95 {s.get('neighbour_switch_p95_s')} s",
                  flush=True)
    finally:
        if probe is not None:
            probe.stop()
        with contextlib.suppress(Exception):
            for w in workers(lab):
                set_bridge_port(lab, w.name, True)
        lab_cli("down", "--state-dir", str(lab.state_dir), check=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

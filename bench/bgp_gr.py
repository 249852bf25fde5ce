"""bench/bgp.py section `graceful`: requests lost across a speaker restart, with and without
graceful restart (issue 11).

The lab's BGPPeer is made without, then with, `enableGracefulRestart` (it cannot change in
place: deleted and created again). Each trial, a request loop from `ext-client` (a new
connection per request, ~100/s, 1 s timeout) runs against the warm-up Service (ETP Cluster,
a pod on every worker) while one worker's speaker is SIGTERMed, exits and is started again
(`lbspeaker-lab up`, as the DaemonSet would), until every next hop is back and that session is
Established. Figures per mode: requests ok / failed, how many times the Service's next-hop set
changed in the router's FIB, and how long the restarted node's next hop was missing.

    python bench/bgp.py --only graceful --router frr,bird   # as a section (3 restarts per mode)
    python bench/bgp_gr.py --router frr,bird                 # on its own
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bgp import Context  # noqa: E402
from tests.e2e.test_bgp_graceful import RequestLoop, all_established, set_graceful_restart  # noqa: E402
from tests.e2e.test_speaker_bgp import alive, speaker_pid, wait_for  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "bgp_gr.json"
TRIALS = 3


class HopHistory:
    """Every next-hop set of one IP the FIB watch reports, with its time."""

    def __init__(self, ctx: Context, ip: str) -> None:
        self.fib, self.ip = ctx.fib, ip
        self.sets: list[tuple[float, frozenset[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.fib.cond:
            while not self._stop.is_set():
                hops = frozenset(self.fib.state.get(self.ip, []))
                if not self.sets or self.sets[-1][1] != hops:
                    self.sets.append((float(getattr(self.fib, "last_t", time.monotonic())), hops))
                self.fib.cond.wait(0.2)

    def stop(self) -> list[tuple[float, frozenset[str]]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.sets


def missing_seconds(sets: list[tuple[float, frozenset[str]]], hop: str, end: float) -> float:
    """How long `hop` was absent from the sets over [first sample, end]."""
    total = 0.0
    for (t, hops), nxt in zip(sets, [*sets[1:], (end, frozenset())], strict=True):
        if hop not in hops:
            total += nxt[0] - t
    return total


def restart_trial(ctx: Context, node: str) -> dict[str, Any]:
    """One speaker restart under a request loop (see the module docstring)."""
    ctx.wait_warm(120)
    names = sorted(ctx.workers)
    wait_for("sessions Established", lambda: all_established(ctx.rest, names), timeout=120)
    history = HopHistory(ctx, ctx.warm_ip)
    loop = RequestLoop(ctx.warm_ip)
    try:
        time.sleep(1.0)
        pid = speaker_pid(ctx.lab, node)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        wait_for("the SIGTERMed speaker has exited", lambda: not alive(pid), timeout=15)
        ctx.lab.up()
        wait_for("its session Established again", lambda: all_established(ctx.rest, names), timeout=120)
        ctx.wait_warm(120)
        time.sleep(1.0)
        end = time.monotonic()
    finally:
        result = loop.stop()
        sets = history.stop()
    changes = max(0, len(sets) - 1)
    gone = missing_seconds(sets, ctx.workers[node], end)
    return {"ok": result["ok"], "failed": result["failed"], "fib_changes": changes,
            "hop_missing_s": round(gone, 3), "restart_s": round(end - t0, 3)}


def run(ctx: Context) -> dict[str, Any]:
    """The `graceful` section: `TRIALS` restarts without, then with, graceful restart."""
    trials = TRIALS
    names = sorted(ctx.workers)
    out: dict[str, Any] = {}
    try:
        for mode, on in (("without_gr", False), ("with_gr", True)):
            ctx.log(f"speaker restart under a request loop, graceful restart {'on' if on else 'off'}:")
            set_graceful_restart(ctx.rest, on)
            runs = []
            for i in range(trials):
                node = names[i % len(names)]
                r = restart_trial(ctx, node)
                runs.append(r)
                ctx.log(f"  {mode} #{i + 1} ({node}): {r['ok']} requests ok, {r['failed']} failed; "
                        f"FIB next-hop set changed {r['fib_changes']} times, {node}'s hop missing "
                        f"{r['hop_missing_s']:.2f} s of a {r['restart_s']:.1f} s restart")
            out[mode] = {"trials": trials, "requests_ok": sum(r["ok"] for r in runs),
                         "requests_failed": sum(r["failed"] for r in runs),
                         "fib_changes": sum(r["fib_changes"] for r in runs),
                         "hop_missing_s_max": max(r["hop_missing_s"] for r in runs),
                         "runs": runs}
    finally:
        set_graceful_restart(ctx.rest, False)  # the base configuration the other sections expect
    return out


if __name__ == "__main__":
    from bench import bgp

    sys.exit(bgp.main_section("graceful", DEFAULT_OUT))

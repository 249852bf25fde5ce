"""bench/bgp.py section `hardfail`: hard node failure -> the router drops that node's next hop,
with the speaker's BFD (300 ms x 3) and without BFD (the BGP hold time alone, 9 s in the lab).

A node "dies" without closing anything: its bridge port is cut and its speaker and ExaBGPs are
frozen with SIGSTOP (tests/e2e/test_bfd.py `HardFailure`), so no FIN, no NOTIFICATION, no BFD
AdminDown leaves it. The figure is "cut -> the router's kernel FIB no longer has that node's
next hop" for the warm-up Service (ETP Cluster, announced by every worker), from the FIB watch
of bench/bgp.py. After each trial the node is thawed, its port restored (BIRD's protocol
restarted, see `readmit`) and every next hop awaited again.

* ``without_bfd``: the default lab, the BGPPeer without bfdProfile: the router's hold timer ends it.
* ``with_bfd``: the lab up with `--bfd` (the router runs BFD 300 ms x 3 to every node, its BGP
  sessions follow it), a BFDProfile of 300 ms x 3 and the lab's BGPPeer naming it, so each
  speaker runs BFD itself; every worker's session Up on the router (and in the BGPPeer's status)
  before the trials.

`--hardfail-trials` (5) per mode, the nodes taken in turn.

    python bench/bgp.py --only hardfail --router frr,bird   # as a section
    python bench/bgp_hardfail.py --router frr,bird          # the same, on its own
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bgp import Context, summary  # noqa: E402
from lab import router as rtr  # noqa: E402
from tests.e2e.test_bfd import PROFILE, HardFailure, readmit, set_peer_bfd, speaker_bfd_up  # noqa: E402
from tests.e2e.test_speaker_bgp import HOLD, wait_for  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "bgp_hardfail.json"
SETTLE_S = 1.0  # after a recovery, for the router's BFD to be back at its fast interval


def trials(ctx: Context, count: int, bfd: bool, label: str) -> dict[str, Any]:
    """`count` hard failures, the workers in turn: seconds from the cut to the next hop gone."""
    names = sorted(ctx.workers)
    out, runs = [], []
    for i in range(count):
        node = names[i % len(names)]
        ctx.wait_warm(120)
        if bfd:
            wait_for("BFD Up on every worker", lambda: speaker_bfd_up(ctx.lab, ctx.rest, ctx.workers),
                     timeout=60)
        time.sleep(SETTLE_S)
        with HardFailure(ctx.lab, node) as failure:
            assert failure.cut_at is not None
            t1 = ctx.fib.wait(lambda s: ctx.workers[node] not in s.get(ctx.warm_ip, []), 6 * HOLD)  # noqa: B023
            dropped = t1 - failure.cut_at
        readmit(ctx.lab, node)
        out.append(dropped)
        runs.append({"node": node, "dropped_s": round(dropped, 4)})
        ctx.log(f"  {label} #{i + 1}: {node}'s next hop dropped {dropped:.3f} s after the cut")
    ctx.wait_warm(120)
    return {**summary(out), "runs": runs}


def run(ctx: Context) -> dict[str, Any]:
    """The `hardfail` section (see the module docstring)."""
    count = int(getattr(ctx.args, "hardfail_trials", 5))
    out: dict[str, Any] = {"trials": count, "hold_time_s": HOLD,
                           "bfd": f"{rtr.BFD_INTERVAL_MS} ms x {rtr.BFD_MULTIPLIER}"}
    ctx.log(f"hard node failure -> next hop dropped, without BFD (hold time {HOLD} s):")
    out["without_bfd"] = trials(ctx, count, False, "without BFD")
    ctx.lab_up(bfd=True)
    set_peer_bfd(ctx.rest, PROFILE)
    try:
        ctx.log(f"hard node failure -> next hop dropped, with the speaker's BFD ({out['bfd']}):")
        out["with_bfd"] = trials(ctx, count, True, "with BFD")
    finally:
        set_peer_bfd(ctx.rest, None)  # the base configuration the other sections expect
    w, wo = out["with_bfd"], out["without_bfd"]
    ctx.log(f"  hardfail: with BFD p50 {w['p50_s']:.3f} s, max {w['max_s']:.3f} s; "
            f"without BFD p50 {wo['p50_s']:.3f} s, max {wo['max_s']:.3f} s ({count} trials each)")
    return out


if __name__ == "__main__":
    from bench import bgp

    sys.exit(bgp.main_section("hardfail", DEFAULT_OUT))

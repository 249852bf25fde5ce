"""ARP reply throughput and latency: lbspeaker's responder vs the kernel, same run.

    sudo .venv/bin/python bench/arp_throughput.py [--rates 10000,20000] [--seconds 3] [--burst 60000]

Two namespaces ``lbt-h-b<tag>-spk`` (the "node") and ``lbt-h-b<tag>-cli`` (the client),
joined by one veth pair (``eth0`` in each), 172.18.0.0/16. On the node the kernel owns
172.18.0.2 (it answers ARP for it itself) and ``python -m lbspeaker.l2`` owns the VIP
172.18.255.200. From the client a raw-socket sender floods who-has requests, first at
a paced rate, then an unpaced burst, against each target in turn; a separate receiver
process counts the is-at replies. Every flood is bounded in count and time; the
namespaces and processes are removed on exit, even on failure.

Latency: every 100th request is a *probe* whose sender IP cycles through 200
addresses (172.18.1.x), so its reply (target IP = probe's sender IP) can be matched
to it; regular requests use the client's own address. Times are CLOCK_MONOTONIC,
shared by both processes. Both sender and receiver are Python too, so the kernel's
ceiling measured here is partly the client's: it is the reference, not the kernel's
absolute limit.

Results are printed and written to ``bench/results/arp_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab import netns as nsops  # noqa: E402
from lbspeaker.l2.bpf import JEQ_K, LDH_ABS, LDW_ABS, PACKET_OUTGOING, RET_K, SKF_AD_OFF, attach_filter  # noqa: E402
from lbspeaker.l2.mmsg import MmsgIO  # noqa: E402

KERNEL_IP = "172.18.0.2"
CLIENT_IP = "172.18.0.9"
VIP = "172.18.255.200"
PROBE_EVERY = 100
PROBE_IPS = [f"172.18.1.{i}" for i in range(1, 201)]
RESULTS = REPO / "bench" / "results" / "arp_throughput.json"
MMSG_BATCH = 64  # requests per batch: the sender checks its deadline after each
BIN = 0.01  # seconds: the receiver counts replies per bin, so a caller can pick its window


def ip4(s: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, s)


def who_has(src_mac: bytes, spa: bytes, tpa: bytes) -> bytes:
    return (
        b"\xff" * 6
        + src_mac
        + b"\x08\x06"
        + b"\x00\x01\x08\x00\x06\x04\x00\x01"
        + src_mac
        + spa
        + b"\x00" * 6
        + tpa
    )


# --- roles run inside the client namespace ------------------------------------------


def send_plan(sent: int, count: int, elapsed: float, rate: float, batch: int) -> int:
    """How many requests to send now: what the pace says is due, but at most one batch.

    The bound is the point: a sender slower than `rate` that sent everything due before
    looking at its clock again chased a target growing faster than it sent, and ran
    28.6 s past a 10 s deadline. One batch at a time, it checks the deadline every batch.
    """
    due = count if rate <= 0 else min(count, int(elapsed * rate) + 1)
    return max(0, min(due - sent, batch))


def send_loop(
    count: int,
    rate: float,
    max_seconds: float,
    batch: int,
    send_frames: Callable[[int, int], int],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, int, float, float]:
    """Send requests `sent..sent+n-1` through `send_frames` (which returns how many went out)
    until `count` are sent or `max_seconds` pass; return (sent, errors, t0, t_end)."""
    t0 = clock()
    deadline = t0 + max_seconds
    sent = errors = 0
    while sent < count:
        now = clock()
        if now >= deadline:
            break
        n = send_plan(sent, count, now - t0, rate, batch)
        if n == 0:
            sleep(0.0002)
            continue
        errors += n - send_frames(sent, n)
        sent += n
    return sent, errors, t0, clock()


def role_sender(target: str, rate: float, count: int, max_seconds: float, mmsg: bool = False) -> None:
    """Send `count` who-has for `target`, paced at `rate`/s (0 = as fast as possible), for at
    most `max_seconds`; with `mmsg`, in sendmmsg batches of 64 (one system call a batch)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind(("eth0", 0))
    mac = bytes(s.getsockname()[4])
    tpa = ip4(target)
    regular = who_has(mac, ip4(CLIENT_IP), tpa)
    probes = [who_has(mac, ip4(p), tpa) for p in PROBE_IPS]
    probe_log: list[tuple[int, float]] = []
    mono = time.monotonic
    send = s.send

    def frames(start: int, n: int) -> list[bytes]:
        out = [regular] * n
        first = -start % PROBE_EVERY
        if first < n:
            t = mono()
            for i in range(first, n, PROBE_EVERY):
                k = ((start + i) // PROBE_EVERY) % len(PROBE_IPS)
                out[i] = probes[k]
                probe_log.append((k, t))
        return out

    def one_by_one(start: int, n: int) -> int:
        ok = 0
        for i in range(start, start + n):
            if i % PROBE_EVERY == 0:
                k = (i // PROBE_EVERY) % len(PROBE_IPS)
                probe_log.append((k, mono()))
                frame = probes[k]
            else:
                frame = regular
            try:
                send(frame)
                ok += 1
            except OSError:
                pass
        return ok

    send_frames = one_by_one
    if mmsg:
        mm = MmsgIO(s, batch=MMSG_BATCH, frame_size=64)

        def batched(start: int, n: int) -> int:
            try:
                return mm.send(frames(start, n))
            except OSError:
                return 0

        send_frames = batched
    sent, errors, t0, t_end = send_loop(count, rate, max_seconds, MMSG_BATCH, send_frames)
    print(json.dumps({"sent": sent, "errors": errors, "t0": t0, "t_end": t_end, "probes": probe_log}))


def role_receiver(target: str, seconds: float, mmsg: bool = False) -> None:
    """Count ARP replies from `target` for `seconds`, logging probe replies' times and the
    count per BIN of CLOCK_MONOTONIC (shared with the sender); with `mmsg`, recvmmsg batches."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    prog = [
        (LDH_ABS, 0, 0, 12),
        (JEQ_K, 0, 5, 0x0806),
        (LDH_ABS, 0, 0, 20),
        (JEQ_K, 0, 3, 2),
        (LDW_ABS, 0, 0, (SKF_AD_OFF + 4) & 0xFFFFFFFF),
        (JEQ_K, 1, 0, PACKET_OUTGOING),
        (RET_K, 0, 0, 64),
        (RET_K, 0, 0, 0),
    ]
    attach_filter(s, prog)
    s.setsockopt(socket.SOL_SOCKET, 33, 8 * 1024 * 1024)  # SO_RCVBUFFORCE
    s.bind(("eth0", 0x0806))
    spa_target = ip4(target)
    client = ip4(CLIENT_IP)
    probe_index = {ip4(p): i for i, p in enumerate(PROBE_IPS)}
    replies = 0
    first = last = 0.0
    probe_replies: list[tuple[int, float]] = []
    bins: dict[int, int] = {}
    mono = time.monotonic
    if mmsg:
        s.setblocking(False)
        mm = MmsgIO(s, batch=MMSG_BATCH, frame_size=64)

        def receive() -> list[bytes]:
            got = mm.recv()
            if not got:
                select.select([s], [], [], 0.1)
            return got
    else:
        s.settimeout(0.1)

        def receive() -> list[bytes]:
            try:
                return [s.recv(64)]
            except TimeoutError:
                return []

    start = mono()
    stop_at = start + seconds
    print(json.dumps({"ready": True}), flush=True)
    while True:
        got = receive()
        now = mono()
        for frame in got:
            if frame[28:32] != spa_target:
                continue
            replies += 1
            if not first:
                first = now
            last = now
            b = int(now / BIN)
            bins[b] = bins.get(b, 0) + 1
            tpa = frame[38:42]
            if tpa != client:
                k = probe_index.get(tpa)
                if k is not None:
                    probe_replies.append((k, now))
        if now > stop_at:
            break
    print(json.dumps({"replies": replies, "first": first, "last": last, "probes": probe_replies,
                      "bin": BIN, "bins": sorted(bins.items()), "listened": [start, now]}))


def replies_between(bins: list[list[int]] | list[tuple[int, int]], bin_s: float, t0: float, t1: float) -> int:
    """Replies the receiver counted in whole bins starting within [t0, t1) (monotonic seconds)."""
    return sum(n for b, n in bins if t0 <= b * bin_s < t1)


# --- orchestration ------------------------------------------------------------------


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30).stdout


class Bench:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:5]
        self.spk = f"lbt-h-b{tag}-spk"
        self.cli = f"lbt-h-b{tag}-cli"
        self.created: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []

    def setup(self) -> None:
        for ns in (self.spk, self.cli):
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
        nsops.add_veth(self.spk, "eth0", self.cli, "eth0")
        for ns, ip in ((self.spk, KERNEL_IP), (self.cli, CLIENT_IP)):
            nsops.ip_batch(ns, ["link set lo up", f"addr add {ip}/16 dev eth0"])

    def popen(self, ns: str, *cmd: str, stdin: bool = False) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(p)
        return p

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        for ns in self.created:
            sh("ip", "netns", "del", ns, check=False)


def run_flood(b: Bench, target: str, rate: float, count: int, max_seconds: float) -> dict[str, Any]:
    me = str(Path(__file__).resolve())
    recv = b.popen(
        b.cli,
        sys.executable,
        me,
        "--role",
        "receiver",
        "--target",
        target,
        "--seconds",
        str(max_seconds + 1.5),
    )
    assert recv.stdout is not None
    json.loads(recv.stdout.readline())  # ready
    snd = b.popen(
        b.cli,
        sys.executable,
        me,
        "--role",
        "sender",
        "--target",
        target,
        "--rate",
        str(rate),
        "--count",
        str(count),
        "--max-seconds",
        str(max_seconds),
    )
    out, err = snd.communicate(timeout=max_seconds + 30)
    if snd.returncode != 0:
        raise RuntimeError(f"sender failed: {err}")
    s = json.loads(out)
    rout, rerr = recv.communicate(timeout=max_seconds + 30)
    if recv.returncode != 0:
        raise RuntimeError(f"receiver failed: {rerr}")
    r = json.loads(rout)
    # latency: match each probe send with the first reply for the same probe address after it
    replies_by_k: dict[int, list[float]] = {}
    for k, t in r["probes"]:
        replies_by_k.setdefault(k, []).append(t)
    lat = []
    for k, t in s["probes"]:
        later = [x for x in replies_by_k.get(k, []) if x >= t]
        if later:
            lat.append(later[0] - t)
            replies_by_k[k].remove(later[0])
    lat.sort()
    span = max(r["last"], s["t_end"]) - s["t0"] if r["replies"] else s["t_end"] - s["t0"]
    send_span = s["t_end"] - s["t0"]

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6, 1) if lat else None

    return {
        "target": target,
        "mode": "paced" if rate > 0 else "burst",
        "rate_requested": rate,
        "sent": s["sent"],
        "send_errors": s["errors"],
        "send_rate": round(s["sent"] / send_span, 1) if send_span > 0 else None,
        "replies": r["replies"],
        "dropped": s["sent"] - r["replies"],
        "drop_pct": round(100.0 * (s["sent"] - r["replies"]) / s["sent"], 3) if s["sent"] else None,
        "replies_per_s": round(r["replies"] / span, 1) if span > 0 else None,
        "probes": len(s["probes"]),
        "probes_answered": len(lat),
        "latency_us_p50": pct(0.50),
        "latency_us_p99": pct(0.99),
        "latency_us_mean": round(statistics.fmean(lat) * 1e6, 1) if lat else None,
    }


def format_result(r: dict[str, Any]) -> str:
    """One line per flood for the console."""
    return (
        f"{r['answered_by']:>9} {r['mode']:>5}: sent {r['sent']:>6} at {r['send_rate']:>9}/s, "
        f"replies {r['replies']:>6} ({r['replies_per_s']}/s), dropped {r['dropped']} "
        f"({r['drop_pct']}%), latency p50 {r['latency_us_p50']} us, p99 {r['latency_us_p99']} us"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--role", choices=["sender", "receiver"])
    ap.add_argument("--target", default=VIP)
    ap.add_argument("--rate", type=float, default=10000, help="sender role: requests per second")
    ap.add_argument("--rates", default="10000,20000", help="paced rates to run (the first one is the target)")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--max-seconds", type=float, default=5.0)
    ap.add_argument("--burst", type=int, default=60000, help="requests in the unpaced burst")
    ap.add_argument("--mmsg", action="store_true", help="sender/receiver roles: sendmmsg/recvmmsg batches")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.role == "sender":
        role_sender(args.target, args.rate, args.count, args.max_seconds, args.mmsg)
        return 0
    if args.role == "receiver":
        role_receiver(args.target, args.seconds, args.mmsg)
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2

    b = Bench()
    results: list[dict[str, Any]] = []
    try:
        b.setup()
        resp = b.popen(b.spk, sys.executable, "-m", "lbspeaker.l2", "-i", "eth0", "--ip", VIP, stdin=True)
        assert resp.stdout is not None and resp.stdin is not None
        ready = json.loads(resp.stdout.readline())
        assert ready["errors"] == {}, ready
        time.sleep(2.5)  # let the gratuitous ARP schedule finish
        rates = [float(x) for x in str(args.rates).split(",") if x.strip()] or [args.rate]
        plan = []
        for rate in rates:
            plan += [(t, rate, int(rate * args.seconds), args.seconds + 2) for t in (KERNEL_IP, VIP)]
        plan += [(t, 0.0, args.burst, 4.0) for t in (KERNEL_IP, VIP)]
        for target, rate, count, max_s in plan:
            res = run_flood(b, target, rate, count, max_s)
            res["answered_by"] = "kernel" if target == KERNEL_IP else "lbspeaker"
            results.append(res)
            print(format_result(res), flush=True)
            time.sleep(0.5)
        resp.stdin.write("stats\n")
        resp.stdin.flush()
        stats = json.loads(resp.stdout.readline())["stats"]
    finally:
        b.teardown()

    def pick(who: str, mode: str, rate: float | None = None) -> dict[str, Any]:
        return next(
            r
            for r in results
            if r["answered_by"] == who and r["mode"] == mode and (rate is None or r["rate_requested"] == rate)
        )

    first_rate = results[0]["rate_requested"]
    kernel_burst, ours_burst = pick("kernel", "burst"), pick("lbspeaker", "burst")
    ours_paced = pick("lbspeaker", "paced", first_rate)
    summary = {
        "paced_rate": first_rate,
        "speaker_lossless_paced_rates": [
            r["rate_requested"]
            for r in results
            if r["answered_by"] == "lbspeaker" and r["mode"] == "paced" and r["dropped"] == 0
        ],
        "speaker_answers_every_paced_request": ours_paced["dropped"] == 0,
        "speaker_vs_kernel_burst_ratio": (
            round(ours_burst["replies_per_s"] / kernel_burst["replies_per_s"], 3)
            if kernel_burst["replies_per_s"]
            else None
        ),
    }
    print(json.dumps(summary))
    doc = {
        "bench": "arp_throughput",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "results": results,
        "summary": summary,
        "responder_stats": stats,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Membership under attack and under load, on the lab, as a user would check it (issue 13 #2).

    sudo .venv/bin/python bench/membership_lab.py [--flood-seconds 10] [--forged 2000]

One lab (under the lab lock: `flock /run/lbspeaker-lab.lock ...`), one LoadBalancer Service,
and three phases while a watcher samples, every 50 ms, which nodes announce the IP
(ServiceL2Status objects) and every speaker's log counts membership changes
("live speakers: ..."):

1. forged heartbeats from the `client` namespace at every node's UDP 7474, with the source
   address spoofed as the owner's node IP (raw IP socket): the old unauthenticated LEAVING
   with incarnation 2^64-1 naming the owner, signed-looking datagrams with an unknown key and
   with a wrong key, fresh node names, garbage; `--forged` of each kind, bounded;
2. a key rotation: add a newer key to Secret lbspeaker-memberlist, wait until every
   speaker signs with it, remove the old key;
3. an ARP flood: who-has for the VIP from `client`, as fast as bench/arp_throughput.py's
   sender goes in sendmmsg batches (or paced at `--flood-rate`), stopping at `--flood-seconds`
   (deadline checked every batch) or `--flood-count`; its receiver (recvmmsg) listens across
   the whole flood, and replies and heartbeats are counted over the sender's window.

Each phase must end with the same owner, no membership change and every heartbeat peer
alive. Prints the figures and writes bench/results/membership_lab.json. Brings its own lab
up and down; refuses to run when lab namespaces exist.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import platform
import re
import socket
import struct
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

from bench.arp_throughput import replies_between  # noqa: E402
from lab import netns as nsops  # noqa: E402
from lab import topology as topo  # noqa: E402
from lab.agents.kubeapi import KubeApi  # noqa: E402
from lbspeaker.speaker.heartbeat import Message, MsgType, encode  # noqa: E402
from tests.e2e.conftest import Lab, lab_cli, lab_namespaces  # noqa: E402
from tests.e2e.test_speaker_l2 import (  # noqa: E402
    answering_node,
    expected_owner,
    setup_service,
    speaker_http,
    wait_for,
)

SYS = "lbspeaker-system"
SECRET = f"/api/v1/namespaces/{SYS}/secrets/lbspeaker-memberlist"
RESULTS = ROOT / "bench" / "results" / "membership_lab.json"
PORT = 7474


# --- the forger: runs inside `client` -----------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp_len = 8 + len(payload)
    ip_hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    ip_hdr = ip_hdr[:10] + struct.pack("!H", _checksum(ip_hdr)) + ip_hdr[12:]
    return ip_hdr + struct.pack("!HHHH", sport, dport, udp_len, 0) + payload


def forged_payloads(owner: str, count: int) -> dict[str, list[bytes]]:
    now = time.time_ns()
    name = owner.encode()
    v1_leaving = struct.pack("!4sBBQQH", b"LBHB", 1, 2, 2**64 - 1, 2**64 - 1, len(name)) + name
    out: dict[str, list[bytes]] = {
        "v1_leaving_max_incarnation": [v1_leaving] * count,
        "unknown_key": [encode(Message(MsgType.LEAVING, owner, 2**62, i, now), "key-forged", b"x" * 32)
                        for i in range(count)],
        "fresh_names": [encode(Message(MsgType.ALIVE, f"fake-{i}", now, 1, now), "key-forged", b"x" * 32)
                        for i in range(count)],
        "garbage": [os.urandom(16 + i % 200) for i in range(count)],
    }
    return out


def role_forge(owner: str, owner_ip: str, targets: list[str], count: int, max_seconds: float) -> None:
    """Send every forged payload to every target, spoofed from the owner's address; bounded."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    deadline = time.monotonic() + max_seconds
    sent: dict[str, int] = {}
    for kind, payloads in forged_payloads(owner, count).items():
        for p in payloads:
            if time.monotonic() > deadline:
                break
            for dst in targets:
                s.sendto(udp_packet(owner_ip, dst, PORT, PORT, p), (dst, 0))
                sent[kind] = sent.get(kind, 0) + 1
    print(json.dumps(sent))


# --- watching -------------------------------------------------------------------------------------


class Watcher:
    """Samples the announcing nodes every 50 ms (ServiceL2Status objects of the Service)."""

    def __init__(self, api: KubeApi, service: str) -> None:
        self.api = api
        self.service = service
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def owners(self) -> tuple[str, ...]:
        items = self.api.get(f"/apis/lbspeaker.io/v1beta1/namespaces/{SYS}/servicel2statuses")["items"]
        return tuple(sorted(str(i["status"]["node"]) for i in items
                            if (i.get("status") or {}).get("serviceName") == self.service))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.samples.append((time.monotonic(), self.owners()))
            except Exception:
                self.errors += 1

    def start(self) -> None:
        self._t.start()

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def since(self, t0: float) -> list[tuple[str, ...]]:
        return [o for t, o in self.samples if t >= t0]


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def speaker_view(nodes: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for n in nodes:
        text = speaker_http(n, "/metrics")
        rejected = {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^lbspeaker_speaker_heartbeat_rejected_total\{reason="([a-z_]+)"\} ([0-9.e+-]+)$', text, re.M)}
        out[n] = {
            "keys": metric(text, "lbspeaker_speaker_heartbeat_keys"),
            "peers_alive": metric(text, "lbspeaker_speaker_heartbeat_peers_alive"),
            "received": metric(text, "lbspeaker_speaker_heartbeat_received"),
            "members": metric(text, "lbspeaker_speaker_members"),
            "rejected": {k: v for k, v in rejected.items() if v},
        }
    return out


def membership_changes(lab: Lab) -> dict[str, int]:
    out = {}
    for p in lab.state()["processes"]:
        if p["name"].startswith("speaker-") and p.get("log"):
            with contextlib.suppress(OSError):
                out[p["name"][8:]] = Path(p["log"]).read_text(errors="replace").count("live speakers:")
    return out


def phase_result(name: str, watcher: Watcher, t0: float, owner: str, lab: Lab, nodes: list[str],
                 changes_before: dict[str, int], extra: dict[str, Any]) -> dict[str, Any]:
    seen = watcher.since(t0)
    moved = sum(1 for a, b in itertools.pairwise(seen) if a != b)
    changes = membership_changes(lab)
    view = speaker_view(nodes)
    res = {
        "phase": name,
        "samples": len(seen),
        "owner_sets_seen": sorted({",".join(o) for o in seen}),
        "ownership_changes": moved,
        "failovers": sum(1 for o in seen if o != (owner,)),
        "membership_changes": {n: changes.get(n, 0) - changes_before.get(n, 0) for n in changes},
        "speakers": view,
        **extra,
    }
    print(json.dumps(res, indent=1), flush=True)
    return res


def arp_flood(lab: Lab, watcher: Watcher, owner: str, ip: str, nodes: list[str],
              args: argparse.Namespace) -> dict[str, Any]:
    """Who-has for the VIP from `client` in sendmmsg batches for --flood-seconds (and at most
    --flood-count), replies counted by a receiver listening across the whole flood; replies
    and heartbeats are counted over the sender's own window [t0, t_end]."""
    before, t0 = membership_changes(lab), time.monotonic()
    bench = str(ROOT / "bench" / "arp_throughput.py")
    recv = nsops.popen_in(topo.CLIENT, [sys.executable, bench, "--role", "receiver", "--mmsg", "--target", ip,
                                        "--seconds", str(args.flood_seconds + 3)],
                          stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None
    try:
        recv.stdout.readline()  # ready
        hb_before = speaker_view(nodes)
        hb_t0 = time.monotonic()
        send_out = nsops.run_in(topo.CLIENT, [
            sys.executable, bench, "--role", "sender", "--mmsg", "--target", ip,
            "--rate", str(args.flood_rate), "--count", str(args.flood_count),
            "--max-seconds", str(args.flood_seconds)],
            timeout=args.flood_seconds + 60).stdout
        hb_t1 = time.monotonic()
        hb_after = speaker_view(nodes)
        got = json.loads(recv.communicate(timeout=args.flood_seconds + 30)[0].strip().splitlines()[-1])
    finally:
        if recv.poll() is None:
            recv.kill()  # ours, by PID
            recv.wait()
    s = json.loads(send_out.strip().splitlines()[-1])
    dur = s["t_end"] - s["t0"]
    replies = replies_between(got["bins"], got["bin"], s["t0"], s["t_end"])
    time.sleep(2.0)
    return phase_result("ARP flood", watcher, t0, owner, lab, nodes, before, {
        "requests_sent": s["sent"] - s["errors"], "send_errors": s["errors"], "seconds": round(dur, 2),
        "send_rate": round((s["sent"] - s["errors"]) / dur, 1) if dur else 0,
        "replies": replies, "reply_rate": round(replies / dur, 1) if dur else 0,
        "replies_after_flood": got["replies"] - replies,
        "receiver_listened_s": [round(t - s["t0"], 2) for t in got["listened"]],
        "receiver_window_covers_flood": got["listened"][0] <= s["t0"] and got["listened"][1] >= s["t_end"],
        "heartbeat_window_s": round(hb_t1 - hb_t0, 2),
        "heartbeats_received_during_flood": {
            n: hb_after[n]["received"] - hb_before[n]["received"] for n in nodes},
        "peers_alive_after_flood": {n: hb_after[n]["peers_alive"] for n in nodes},
        "answering_after": answering_node(lab, ip)})


def run(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    api, ip = setup_service(lab)
    owner = expected_owner(lab, ip)
    wait_for("owner answers", lambda: answering_node(lab, ip) == owner, timeout=60)
    nodes = sorted(p["name"][8:] for p in lab.state()["processes"] if p["name"].startswith("speaker-"))
    node_ip = {n.name: n.ipv4 for n in lab.plan.nodes}
    wait_for("every speaker has the key and hears every peer", lambda: all(
        v["keys"] >= 1 and v["peers_alive"] == len(nodes) - 1 for v in speaker_view(nodes).values()),
        timeout=60)
    watcher = Watcher(api, "web")
    watcher.start()
    wait_for("watcher sees the owner", lambda: watcher.samples and watcher.samples[-1][1] == (owner,),
             timeout=30)
    results: list[dict[str, Any]] = []
    try:
        # 1. forged heartbeats
        before, t0 = membership_changes(lab), time.monotonic()
        targets = [node_ip[n] for n in nodes if n != owner]
        out = nsops.run_in(topo.CLIENT, [sys.executable, __file__, "--role", "forge", "--owner", owner,
                                         "--owner-ip", node_ip[owner], "--targets", ",".join(targets),
                                         "--forged", str(args.forged)], timeout=120).stdout
        sent = json.loads(out.strip().splitlines()[-1])
        time.sleep(2.0)  # let the receivers drain (and a heartbeat timeout pass) before judging
        results.append(phase_result("forged heartbeats", watcher, t0, owner, lab, nodes, before,
                                    {"forged_sent": sent, "answering_after": answering_node(lab, ip)}))

        # 2. key rotation
        before, t0 = membership_changes(lab), time.monotonic()
        old = sorted(api.get(SECRET).get("data") or {})
        new = "key-99990101000000"
        api.merge_patch(SECRET, {"data": {new: base64.b64encode(os.urandom(32)).decode()}})
        time.sleep(args.key_delay + 3)  # every speaker signs with the new key after --heartbeat-key-delay
        mid = speaker_view(nodes)
        api.merge_patch(SECRET, {"data": dict.fromkeys(old)})
        wait_for("old key gone everywhere", lambda: all(v["keys"] == 1 for v in speaker_view(nodes).values()),
                 timeout=30)
        time.sleep(2.0)
        results.append(phase_result("key rotation", watcher, t0, owner, lab, nodes, before,
                                    {"keys_before": old, "key_added": new, "view_with_both_keys": mid,
                                     "answering_after": answering_node(lab, ip)}))

        # 3. ARP flood
        results.append(arp_flood(lab, watcher, owner, ip, nodes, args))
    finally:
        watcher.stop()
    return {"owner": owner, "ip": ip, "watch_errors": watcher.errors, "phases": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--role", choices=["forge"])
    ap.add_argument("--owner", default="")
    ap.add_argument("--owner-ip", default="")
    ap.add_argument("--targets", default="")
    ap.add_argument("--forged", type=int, default=2000, help="datagrams of each forged kind, per target")
    ap.add_argument("--flood-seconds", type=float, default=10.0)
    ap.add_argument("--flood-rate", type=float, default=0,
                    help="ARP requests per second asked of the sender; 0 (default): as fast as its "
                         "sendmmsg batches go, at or above the responder's measured limit (~129k/s)")
    ap.add_argument("--flood-count", type=int, default=20_000_000, help="at most this many requests")
    ap.add_argument("--key-delay", type=float, default=10.0, help="the speakers' --heartbeat-key-delay")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.role == "forge":
        role_forge(args.owner, args.owner_ip, args.targets.split(","), args.forged, max_seconds=60)
        return 0
    if lab_namespaces():
        print("lab namespaces exist: refusing to disturb someone's lab", file=sys.stderr)
        return 2
    lab = Lab(state_dir=Path(tempfile.mkdtemp(prefix="lbt-m-bench-")))
    try:
        lab.up()
        res = run(lab, args)
    finally:
        lab_cli("down", "--state-dir", str(lab.state_dir), check=False)
    res.update({"bench": "membership_lab", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "cpus": os.cpu_count(), "machine": platform.machine(), "loadavg_at_end": os.getloadavg(),
                "note": "2 shared cores, other helpers running: rates are noisy"})
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    ok = all(p["failovers"] == 0 and p["ownership_changes"] == 0
             and not any(p["membership_changes"].values()) for p in res["phases"])
    print(f"{'OK' if ok else 'FAILED'}: wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

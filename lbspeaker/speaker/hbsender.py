"""`python -m lbspeaker.speaker.hbsender`: sends a speaker's heartbeats from a process of its own.

Why a process: the speaker's send thread needs the interpreter lock, and on a starved node
a planning thread holds it while the kernel has that thread waiting for a CPU. Heartbeats
then left seconds late and the other speakers declared a live speaker dead and moved its
IPs, and back (bench/scale.py, 4,000 Services on the 2-core lab: every speaker's live view
changed 7-8 times after the receive side was fixed). This process only sleeps and sends,
so the kernel runs it at once when it wakes.

It still says "this speaker runs": the speaker sends it its whole state (`State`, one JSON
line on stdin) every send round. With no line for `stale_after` seconds the speaker is
wedged or starved that long, and sending stops until the next line, so the others find it
silent as they would a dead one. EOF on stdin (the speaker exited or died; it also runs
under `pdeathsig`): exit. `{"leave": n}`: send LEAVING n times, then exit.

The wire format, keys and signing are `heartbeat`'s; sequence numbers continue from the
state's `seq`, which the speaker set above every number it sent itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from lbspeaker.speaker.heartbeat import Message, MsgType, encode, send_to_peers

STALE_AFTER_S = 5.0


@dataclass
class State:
    """What the speaker tells this process (one JSON object per line, `state_line`)."""

    node: str
    incarnation: int
    seq: int
    interval: float
    port: int
    key_id: str | None
    key: bytes
    peers: Mapping[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> State:
        return cls(
            node=str(obj["node"]), incarnation=int(obj["incarnation"]), seq=int(obj["seq"]),
            interval=float(obj["interval"]), port=int(obj["port"]),
            key_id=obj.get("key_id") or None, key=bytes.fromhex(str(obj.get("key") or "")),
            peers={str(n): [str(a) for a in addrs] for n, addrs in (obj.get("peers") or {}).items()},
        )


def state_line(state: State) -> str:
    """The line the speaker writes (the inverse of `State.from_obj`)."""
    return json.dumps({
        "node": state.node, "incarnation": state.incarnation, "seq": state.seq, "interval": state.interval,
        "port": state.port, "key_id": state.key_id, "key": state.key.hex(), "peers": dict(state.peers),
    }) + "\n"


class Sender:
    """The sockets and the sequence counter; `send` signs one message for every peer address."""

    def __init__(self, bind: str = "") -> None:
        self.s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if bind:
            self.s4.bind((bind, 0))  # the source address the others check
        self.s6: socket.socket | None = None
        if not bind:
            with contextlib.suppress(OSError):
                self.s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.seq = 0
        self.errors = 0

    def send(self, state: State, kind: MsgType) -> None:
        if state.key_id is None or not state.key:
            return  # no key: nobody would trust it (Lease-only membership)
        self.seq = max(self.seq, state.seq) + 1
        data = encode(Message(kind, state.node, state.incarnation, self.seq, time.time_ns()),
                      state.key_id, state.key)
        self.errors += send_to_peers(data, state.peers, state.port, self.s4, self.s6)


def run(stdin: TextIO, bind: str = "", stale_after: float = STALE_AFTER_S) -> int:
    sender = Sender(bind)
    state: State | None = None
    heard = time.monotonic()
    due = 0.0
    buf = b""
    fd = stdin.fileno()
    while True:
        now = time.monotonic()
        if state is not None and now >= due:
            if now - heard <= stale_after:
                sender.send(state, MsgType.ALIVE)
            due = now + state.interval
        wait = max(0.0, due - time.monotonic()) if state is not None else 1.0
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return 0  # the speaker is gone
        *lines, buf = (buf + chunk).split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if "leave" in obj:
                    if state is not None:
                        for _ in range(int(obj["leave"])):
                            sender.send(state, MsgType.LEAVING)
                    return 0
                state = State.from_obj(obj)
            except (ValueError, KeyError, TypeError) as exc:
                print(f"hbsender: bad state line ({exc}); keeping the last one", file=sys.stderr)
                continue
            heard = time.monotonic()


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m lbspeaker.speaker.hbsender",
                                description="sends a speaker's heartbeats (started by the speaker)")
    p.add_argument("--stale-after", type=float, default=STALE_AFTER_S,
                   help="stop sending when the speaker has said nothing this long (s)")
    p.add_argument("bind", nargs="?", default="", help="source address (default: the kernel's choice)")
    args = p.parse_args(argv)
    return run(sys.stdin, args.bind, args.stale_after)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

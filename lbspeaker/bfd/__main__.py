"""`python -m lbspeaker.bfd --peer ADDR ...`: BFD sessions without BGP, for the lab and debugging.

Prints one JSON line per state change and exits after `--duration` seconds or on SIGTERM/SIGINT
(sending AdminDown to the peers first). The speaker runs the same `BFDRunner` in-process.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence

from lbspeaker.bfd.io import BFDRunner, SessionKey
from lbspeaker.bfd.packet import State, diag_name
from lbspeaker.bfd.session import SessionConfig, StateChange


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lbspeaker.bfd", description=__doc__.splitlines()[0])
    p.add_argument("--peer", action="append", required=True, help="peer address (repeatable)")
    p.add_argument("--local", default=None, help="local source address (default: the kernel's choice)")
    p.add_argument("--transmit-interval", type=int, default=300, help="ms (default 300)")
    p.add_argument("--receive-interval", type=int, default=300, help="ms (default 300)")
    p.add_argument("--detect-multiplier", type=int, default=3)
    p.add_argument("--passive", action="store_true")
    p.add_argument("--duration", type=float, default=60.0, help="exit after this many seconds (default 60)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    done = threading.Event()
    lock = threading.Lock()

    def on_change(key: SessionKey, change: StateChange) -> None:
        line = {"peer": key.peer, "from": State(change.old).name, "to": State(change.new).name,
                "diag": diag_name(change.diag),
                "at": round(change.at, 6)}
        with lock:
            print(json.dumps(line), flush=True)

    config = SessionConfig(args.transmit_interval * 1000, args.receive_interval * 1000,
                           args.detect_multiplier, args.passive)
    runner = BFDRunner(on_change)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    runner.start()
    for peer in args.peer:
        runner.add(SessionKey(peer, args.local), config)
    done.wait(args.duration)
    return 0 if runner.stop() else 1


if __name__ == "__main__":
    sys.exit(main())

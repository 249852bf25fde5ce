"""Debug entry point: run the L2 announcer alone on some interfaces.

    python -m lbspeaker.l2 --interface eth0 --ip 172.18.255.200 [--ip fc00::c8] [--interface eth1]

Every --ip is announced on every --interface. Reads commands on stdin, one per line,
and answers each with one JSON line on stdout (so tests can drive it):

    own IP        start announcing IP (GARP/unsolicited NA schedule runs)
    release IP    stop answering for IP at once
    set IP,IP...  replace the whole set (empty = nothing)
    stats         print the counters
    quit          stop

SIGTERM/SIGINT stop it too; the final counters are printed as the last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from types import FrameType

from lbspeaker.l2.responder import GARP_SCHEDULE, Announcer
from lbspeaker.netinfo import LinkWatcher


def _emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Parse flags, start the announcer, serve stdin commands until told to stop."""
    p = argparse.ArgumentParser(prog="python -m lbspeaker.l2", description=__doc__.split("\n")[0])
    p.add_argument("--interface", "-i", action="append", required=True)
    p.add_argument("--ip", action="append", default=[])
    p.add_argument(
        "--garp-schedule",
        default=",".join(str(s) for s in GARP_SCHEDULE),
        help="seconds after taking an IP at which gratuitous frames are sent",
    )
    p.add_argument(
        "--no-watch-links",
        action="store_true",
        help="do not follow netlink link events (re-open/re-announce on link changes)",
    )
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)

    schedule = [float(x) for x in args.garp_schedule.split(",") if x.strip()]
    ann = Announcer(garp_schedule=schedule)
    ips: set[str] = set(args.ip)
    done = threading.Event()

    def apply() -> dict[str, str]:
        return ann.set_owned({i: sorted(ips) for i in args.interface})

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ann.start()
    watcher = None
    if not args.no_watch_links:
        watcher = LinkWatcher(lambda ev, link: ann.handle_link_event(ev, link.name, link.index, link.up))
        watcher.start()
    errors = apply()
    _emit({"event": "ready", "owned": ann.owned(), "errors": errors, "interfaces": ann.interfaces()})

    def read_commands() -> None:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            cmd, rest = words[0], words[1:]
            try:
                if cmd == "own":
                    ips.update(rest)
                    errs = apply()
                elif cmd == "release":
                    ips.difference_update(rest)
                    errs = apply()
                elif cmd == "set":
                    ips.clear()
                    ips.update(x for x in ",".join(rest).split(",") if x)
                    errs = apply()
                elif cmd == "stats":
                    _emit({"event": "stats", "stats": ann.stats()})
                    continue
                elif cmd == "quit":
                    break
                else:
                    _emit({"event": "error", "error": f"unknown command {cmd!r}"})
                    continue
            except ValueError as exc:
                _emit({"event": "error", "error": str(exc)})
                continue
            _emit({"event": "ok", "owned": ann.owned(), "errors": errs})
        else:
            return  # EOF: keep running until a signal
        done.set()

    threading.Thread(target=read_commands, name="stdin", daemon=True).start()
    while not done.wait(0.5):
        pass
    if watcher is not None:
        watcher.stop()
    ann.stop()
    _emit({"event": "stopped", "stats": ann.stats()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

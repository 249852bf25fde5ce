"""The API process ExaBGP runs: pipes ExaBGP's stdin/stdout to the speaker's unix socket.

ExaBGP talks to its API programs over their stdin/stdout only, and it starts them
itself (closing every other descriptor), so the speaker cannot simply be that
program. This relay is: `python -m lbspeaker.bgp.relay --socket PATH`. It

* connects to PATH (a unix stream socket the speaker listens on), retrying while it
  is not there yet, and first sends a hello line `{"relay": "hello", "exabgp_pid": N}`
  so the speaker can ignore a relay left over from an older ExaBGP;
* copies ExaBGP's lines (JSON events, `done`/`error` acknowledgements) to the socket
  and the socket's lines (API commands) to ExaBGP;
* keeps ExaBGP's JSON events written while no speaker is connected (ExaBGP brings
  sessions up before this relay has even started) and delivers them, oldest first,
  after the hello; `done`/`error` acknowledgements of an old connection are dropped
  (the speaker re-sends its whole state on every connection anyway);
* reconnects when the speaker's end goes away;
* exits when ExaBGP closes its stdin (ExaBGP stopped or died), so it never outlives it.

It imports nothing beyond the standard library to start fast.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import socket
import sys
import threading
import time

RETRY_SECONDS = 0.1
BACKLOG_LINES = 10000


class Relay:
    """One relay between ExaBGP (stdin/stdout) and the speaker's socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.done = threading.Event()
        self.backlog: collections.deque[bytes] = collections.deque(maxlen=BACKLOG_LINES)

    def _connect_loop(self) -> None:
        """Keep one connection to the speaker open; forward its lines to ExaBGP."""
        while not self.done.is_set():
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.path)
            except OSError:
                sock.close()
                time.sleep(RETRY_SECONDS)
                continue
            hello = json.dumps({"relay": "hello", "exabgp_pid": os.getppid(), "relay_pid": os.getpid()})
            with self.lock:
                try:
                    sock.sendall(hello.encode() + b"\n" + b"".join(self.backlog))
                except OSError:
                    sock.close()
                    continue
                self.backlog.clear()
                self.sock = sock
            self.connected.set()
            try:
                reader = sock.makefile("rb")
                for raw in reader:
                    sys.stdout.buffer.write(raw if raw.endswith(b"\n") else raw + b"\n")
                    sys.stdout.buffer.flush()
            except (OSError, ValueError):
                pass
            finally:
                self.connected.clear()
                with self.lock:
                    self.sock = None
                sock.close()
            if not self.done.is_set():
                time.sleep(RETRY_SECONDS)

    def _send(self, raw: bytes) -> None:
        with self.lock:
            sock = self.sock
            if sock is None:
                if raw.lstrip().startswith(b"{"):
                    self.backlog.append(raw)
                return
            try:
                sock.sendall(raw)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> int:
        """Relay until ExaBGP closes our stdin."""
        threading.Thread(target=self._connect_loop, name="relay-connect", daemon=True).start()
        for raw in sys.stdin.buffer:
            self._send(raw)
        self.done.set()
        with self.lock:
            if self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="unix socket the speaker listens on")
    args = parser.parse_args(argv)
    return Relay(args.socket).run()


if __name__ == "__main__":
    sys.exit(main())

"""`python -m lbspeaker.speaker.pdeathsig PPID -- CMD...`: run CMD, killed when the speaker dies.

ExaBGP runs in its own session (so a terminal's ^C does not reach it) and would
outlive a speaker that is SIGKILLed or OOM-killed, keeping its sessions up and the
node's routes announced with nobody left to withdraw them. This wrapper asks the
kernel (prctl PR_SET_PDEATHSIG) to SIGKILL it when its parent goes away, then execs
CMD (the setting survives exec). The kernel then closes the BGP sockets, so the
router drops the node's next hops at once rather than after the hold time.

PPID is the speaker's PID: if the speaker died before prctl took effect, exit.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def prefix() -> list[str]:
    """The command prefix that ties a child to this process (ExaBGP, the heartbeat sender)."""
    return [sys.executable, "-m", "lbspeaker.speaker.pdeathsig", str(os.getpid()), "--"]


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m lbspeaker.speaker.pdeathsig PPID -- CMD...", file=sys.stderr)
        return 2
    expected = int(argv[0])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        print(f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}", file=sys.stderr)
    if os.getppid() != expected:
        return 1  # the speaker is already gone
    os.execvp(argv[2], argv[2:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

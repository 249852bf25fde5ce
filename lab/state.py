"""The lab's state directory: which namespaces and processes `up` created.

`up` records every namespace *before* creating it and every process right after
starting it, rewriting `state.json` atomically each time, so `down` can clean up
after a crash half-way through `up`. Processes carry their kernel start time, so a
recycled PID is never mistaken for a lab process.

Layout of the state dir (default `/run/lbspeaker-lab` as root, else `./.lab`;
`--state-dir` or `$LBSPEAKER_LAB_STATE_DIR` override it):

    state.json          {"version", "config", "topology", "namespaces", "processes", "apiserver"}
    kubeconfig          for host-side tools and tests (http://127.0.0.1:<port>)
    kubeconfig-nodes    for processes inside node namespaces (http://172.18.0.2:6443)
    router/             FRR or BIRD config, sockets, pid files
    logs/<name>.log     stdout+stderr of every process the lab started
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.files import write_atomic

STATE_FILE = "state.json"
ENV_STATE_DIR = "LBSPEAKER_LAB_STATE_DIR"


def default_state_dir() -> Path:
    """`$LBSPEAKER_LAB_STATE_DIR`, else /run/lbspeaker-lab for root, else ./.lab."""
    env = os.environ.get(ENV_STATE_DIR)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/lbspeaker-lab")
    return Path.cwd() / ".lab"


# The lab's namespace names are fixed (kind's), so only one lab runs per machine. This file
# names the state dir of the lab that owns them, so a second `up`/`down` with another state
# dir refuses instead of adopting (or destroying) a lab it did not start.
OWNER_FILE = Path("/run/lbspeaker-lab.owner")


def lab_owner() -> Path | None:
    """The state dir of the running lab, if it is recorded and its state file still exists."""
    try:
        owner = Path(OWNER_FILE.read_text().strip())
    except OSError:
        return None
    return owner if (owner / STATE_FILE).exists() else None


def other_lab_owner(state_dir: Path) -> Path | None:
    """The state dir of a running lab that is not `state_dir`'s, if any."""
    owner = lab_owner()
    return owner if owner is not None and owner.resolve() != Path(state_dir).resolve() else None


def claim_lab(state_dir: Path) -> Path | None:
    """Record `state_dir` as the lab's owner; return the other owner instead if there is one."""
    other = other_lab_owner(state_dir)
    if other is None:
        OWNER_FILE.write_text(f"{Path(state_dir).resolve()}\n")
    return other


def release_lab(state_dir: Path) -> None:
    """Forget the owner record unless it names another running lab."""
    if other_lab_owner(state_dir) is None:
        with contextlib.suppress(OSError):
            OWNER_FILE.unlink()


def proc_start_time(pid: int) -> int | None:
    """Kernel start time (clock ticks since boot) of a PID, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[19])


def proc_state(pid: int) -> str | None:
    """One-letter process state (R, S, Z, ...) or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return data[data.rindex(")") + 2 :].split()[0]


@dataclass
class ProcessRecord:
    """A process the lab started: enough to find it again and end it safely."""

    name: str
    pid: int
    start_time: int | None
    argv: list[str]
    netns: str | None
    log: str | None

    def alive(self) -> bool:
        """Running and still the same process (PID not recycled), zombies count as dead."""
        _reap(self.pid)
        st = proc_start_time(self.pid)
        if st is None or (self.start_time is not None and st != self.start_time):
            return False
        return proc_state(self.pid) not in (None, "Z", "X")

    def in_current_netns(self) -> bool:
        """False if its namespace was deleted and re-created since it started (it runs in a
        detached copy then, and must be restarted to be of any use)."""
        if self.netns is None:
            return True
        try:
            return os.stat(f"/proc/{self.pid}/ns/net").st_ino == os.stat(f"/run/netns/{self.netns}").st_ino
        except OSError:
            return False

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie (no-op for others)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class LabState:
    """The state file, rewritten atomically after every change."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE
        self.data: dict[str, Any] = {
            "version": 1,
            "config": {},
            "topology": None,
            "namespaces": [],
            "processes": [],
            "apiserver": None,
        }
        if self.path.exists():
            with contextlib.suppress(json.JSONDecodeError):
                self.data.update(json.loads(self.path.read_text()))

    # -- persistence ------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether a state file is on disk (a lab was at least partly brought up)."""
        return self.path.exists()

    def save(self) -> None:
        """Write state.json atomically (tmp file + rename) so a crash never leaves half a file."""
        write_atomic(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n", mode=0o644)

    @property
    def log_dir(self) -> Path:
        """Where process logs go."""
        return self.dir / "logs"

    # -- namespaces -------------------------------------------------------------------------------
    @property
    def namespaces(self) -> list[str]:
        """Recorded namespaces, in creation order."""
        return list(self.data["namespaces"])

    def add_namespace(self, name: str) -> None:
        """Record a namespace (call before creating it)."""
        if name not in self.data["namespaces"]:
            self.data["namespaces"].append(name)
            self.save()

    # -- processes --------------------------------------------------------------------------------
    @property
    def processes(self) -> list[ProcessRecord]:
        """Recorded processes, in start order."""
        return [ProcessRecord(**p) for p in self.data["processes"]]

    def process(self, name: str) -> ProcessRecord | None:
        """The latest record for a process name, if any."""
        for p in reversed(self.processes):
            if p.name == name:
                return p
        return None

    def add_process(
        self, name: str, pid: int, argv: list[str], netns: str | None, log: str | None
    ) -> ProcessRecord:
        """Record a just-started process (replacing an older record of the same name)."""
        rec = ProcessRecord(name, pid, proc_start_time(pid), list(argv), netns, log)
        self.data["processes"] = [p for p in self.data["processes"] if p["name"] != name]
        self.data["processes"].append(rec.to_dict())
        self.save()
        return rec

    def remove_process(self, name: str) -> None:
        """Forget a process record."""
        self.data["processes"] = [p for p in self.data["processes"] if p["name"] != name]
        self.save()


def end_processes(records: list[ProcessRecord], grace: float = 5.0) -> list[ProcessRecord]:
    """SIGTERM every live record, wait up to `grace` seconds, then SIGKILL the rest.

    Only records whose PID still has the recorded start time are signalled. Returns the
    records that were still alive and had to be killed.
    """
    live = [r for r in records if r.alive()]
    for r in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(r.alive() for r in live):
        time.sleep(0.05)
    killed = [r for r in live if r.alive()]
    for r in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(r.alive() for r in killed):
        time.sleep(0.02)
    return killed

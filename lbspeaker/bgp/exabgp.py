"""ExaBGP process manager: one ExaBGP process, routes kept announced through anything.

The speaker runs one of these per BGPPeer (`peers.PeerProcesses`, see there why); this
class can carry several neighbours in one process, and reload them, as tests do.

Design (the I/O shell around `config`, `routes` and `session`):

* **Process.** `start()` writes the configuration (`config.render_config`) and runs
  `python -m exabgp server CONF` (optionally behind a command prefix such as
  `ip netns exec NS` for tests), with the environment ExaBGP 5 needs to run as root
  without dropping privileges, logging to stdout and with its CLI pipe off. Its PID is
  recorded; a waiter thread notices the exit at once.
* **API channel.** ExaBGP runs `python -m lbspeaker.bgp.relay --socket PATH` as its
  API process; the relay connects to the unix socket this manager listens on. Commands
  go down the socket; ExaBGP's JSON events and its `done`/`error` acknowledgements
  come back. One acknowledgement per command, in order, lets the manager know which
  announcements ExaBGP really took.
* **Desired state, not commands.** The caller sets the routes it wants per peer
  (`set_routes`, or `announce`/`withdraw`). The manager keeps `_sent` (what ExaBGP
  holds, as far as acknowledgements tell) and sends only the difference
  (`routes.diff_routes`); after `update_routes` (changes only) just those prefixes are
  compared, so a plan that moved one route does not cost a walk over every route. A
  refused command (`error`, e.g. a neighbour ExaBGP has not loaded yet after a reload)
  makes that entry dirty and it is retried shortly (by a whole diff).
  On every new relay connection (ExaBGP restarted, or its relay respawned) `_sent` is
  empty again, so every route is announced again.
* **Leftovers.** The PID is written to `WORKDIR/exabgp.pid`; `start()` ends an ExaBGP
  still running from a previous speaker instance with this workdir (checked by PID and
  command line, `end_leftover`), so two ExaBGPs never peer from the same node.
* **Crash/restart.** When ExaBGP exits without being asked, every session is reported
  Idle with the exit as reason and ExaBGP is started again after a back-off (0.5 s,
  doubling to 30 s, reset after a minute of stable running).
* **Peers.** `set_peers` rewrites the configuration and sends SIGUSR1: ExaBGP reloads,
  adds/removes the changed neighbours and leaves the other sessions alone (verified
  in tests/e2e/test_bgp_exabgp.py); routes of a changed peer are re-sent.
  Measured caveat: ExaBGP 5 *drops* a SIGUSR1 while any neighbour still has updates
  pending in its adj-rib-out, which is always the case while a session that holds
  routes is down. So the manager waits for ExaBGP's "loaded new configuration" log
  line, re-signals a few times, and as a last resort restarts ExaBGP (routes are then
  announced again as after a crash).
* **Stop.** `stop()` withdraws every route, waits for the acknowledgements (and a
  moment for the UPDATEs to leave), then SIGTERM (SIGKILL when the time is up), so
  routers drop this node's next hops at once; all of it within the `timeout` given (a
  speaker has a grace period to exit in), and a back-off after refused commands does
  not delay the withdrawals. Except to a peer with graceful restart
  (`routes.kept_across_restart`): its routes stay, and ExaBGP closes a session that
  negotiated graceful restart without a NOTIFICATION, so the router keeps them (stale)
  while the speaker restarts, as in a rolling update.
* **End-of-RIB.** A graceful-restart peer is configured with `manual-eor` (ExaBGP's own
  End-of-RIB would go out before the API has re-announced anything, and the router
  would drop the stale routes). Each time such a session is established, once routes
  have been set and every route to that peer is acknowledged, the manager sends
  `announce eor` for its families (`config.eor_commands`); the router then drops the
  stale routes that were not announced again.
* **Spawning.** ExaBGP is always spawned by the supervising thread (first start and
  restarts), which lives until `stop()`: a `pdeathsig` command prefix ties ExaBGP to
  the thread that forked it.
* **Sessions.** `session.SessionTable` turns events (and a long silence) into per-peer
  state; `on_session_change(name, PeerSession)` is called
  on every change, outside the manager's lock.

Writes to the socket go through a writer thread so that the manager's lock is never
held while blocked on ExaBGP (which would deadlock against its acknowledgements).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lbspeaker.bgp.config import PeerSpec, RenderedConfig, eor_commands, render_config
from lbspeaker.bgp.routes import (
    RouteAttrs,
    RouteChange,
    RouteTable,
    apply_route_changes,
    change_command,
    diff_routes,
    kept_across_restart,
)
from lbspeaker.bgp.session import Ack, ExaEvent, PeerSession, SessionTable, parse_line

log = logging.getLogger(__name__)

SessionCallback = Callable[[str, PeerSession], None]

# an attribute value no desired route has: an entry ExaBGP may or may not hold
_DIRTY = RouteAttrs(local_pref=-1)
# stands for an End-of-RIB command in the queue of commands awaiting acknowledgement
_EOR_PREFIX = "\x00eor"
# of a stop's timeout, kept for ending ExaBGP (SIGTERM, then SIGKILL) after the withdrawals
KILL_RESERVE = 0.5
_TEARDOWN_PREFIX = "\x00teardown"  # the pending entry of a `teardown` command (BFD)


def exabgp_env(log_level: str = "INFO") -> dict[str, str]:
    """Environment ExaBGP 5 needs here (measured: as root inside a namespace it must not
    switch to `nobody` nor drop privileges, and its CLI named pipe must be off)."""
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    return {
        "exabgp_daemon_user": user,
        "exabgp_daemon_drop": "false",
        "exabgp_daemon_daemonize": "false",
        "exabgp_api_cli": "false",
        "exabgp_api_ack": "true",
        "exabgp_api_respawn": "true",
        "exabgp_api_encoder": "json",
        "exabgp_log_destination": "stdout",
        "exabgp_log_level": log_level,
        "exabgp_log_short": "true",
        "exabgp_tcp_bind": "",
    }


class ExaBGPManager:
    """Runs ExaBGP and keeps the desired routes announced (see the module docstring)."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        command_prefix: Sequence[str] = (),
        python: str = sys.executable,
        on_session_change: SessionCallback | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        retry_interval: float = 0.5,
        stable_after: float = 60.0,
        stall_after: float = 10.0,
        extra_env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "exabgp.conf"
        self.socket_path = self.workdir / "api.sock"
        self.log_path = self.workdir / "exabgp.log"
        self.pid_path = self.workdir / "exabgp.pid"
        self.command_prefix = list(command_prefix)
        self.python = python
        self.on_session_change = on_session_change
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_interval = retry_interval
        self.stable_after = stable_after
        self.stall_after = stall_after
        self.extra_env = dict(extra_env or {})
        self.clock = clock

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._peers: dict[str, PeerSpec] = {}
        self._rendered: RenderedConfig | None = None
        self._desired: RouteTable = {}
        self._sent: RouteTable = {}
        self._pending: collections.deque[tuple[int, RouteChange, RouteAttrs | None]] = collections.deque()
        self._routes_set = False  # End-of-RIB only once the caller has said what to announce
        self._eor_due: dict[str, int] = {}  # peer -> establishment (count) that still needs End-of-RIB
        self._eor_sent: dict[str, int] = {}  # peer -> establishment End-of-RIB was acknowledged for
        self.eors_total = 0
        self._sessions = SessionTable()
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_started = 0.0
        self._conn: socket.socket | None = None
        self._conn_gen = 0
        self._relay_pid: int | None = None
        self._writer_q: queue.Queue[tuple[int, bytes] | None] = queue.Queue()
        self._retry_at = 0.0
        self._retry_delay = retry_interval
        self._dirty = True  # something may differ between _sent and the desired state
        self._touched: dict[str, set[str]] = {}  # else only these (update_routes) may
        self._restart_at: float | None = None
        self._backoff = backoff_initial
        self._running = False
        self._stopping = False
        self._started_once = False
        self._cancelled = False
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._notify_q: queue.Queue[tuple[str, PeerSession] | None] = queue.Queue()
        self.log_tail: collections.deque[str] = collections.deque(maxlen=300)
        # counters for metrics and tests
        self.restarts = 0
        self.exits: list[int | None] = []
        self.updates_total = 0
        self.errors_total = 0
        self.reloads = 0
        self.forced_restarts = 0
        self._reload_sent_at: float | None = None
        self._reload_attempts = 0
        self._forced = False

    # --- public API -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the running ExaBGP (None when it is not running)."""
        with self._lock:
            return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def relay_pid(self) -> int | None:
        with self._lock:
            return self._relay_pid

    @property
    def connected(self) -> bool:
        """True when ExaBGP runs and its relay is connected (ready for commands)."""
        with self._lock:
            return self._conn is not None

    @property
    def problems(self) -> list[str]:
        with self._lock:
            if self._rendered is None:
                return []
            return [f"BGPPeer {p.name}: {p.message}" for p in self._rendered.problems]

    def sessions(self) -> dict[str, PeerSession]:
        """Copy of every configured peer's session state."""
        with self._lock:
            return {k: copy.copy(v) for k, v in self._sessions.sessions.items()}

    def set_peers(self, peers: Sequence[PeerSpec]) -> RenderedConfig:
        """Configure exactly `peers`; reloads a running ExaBGP when the file changes."""
        with self._lock:
            rendered = render_config(peers, self._relay_argv())
            old_text = self._rendered.text if self._rendered else None
            old_peers = self._peers
            self._rendered = rendered
            self._peers = {p.name: p for p in rendered.peers}
            self._sessions.configure(rendered.peers, self.clock())
            for name in list(self._sent):
                if name not in self._peers or old_peers.get(name) != self._peers[name]:
                    # removed: ExaBGP drops the session and its routes; changed: re-send all
                    del self._sent[name]
            if rendered.text != old_text:
                self._write_config(rendered.text)
                if self._proc is not None and self._proc.poll() is None:
                    self.reloads += 1
                    log.info("BGP peers changed: reloading ExaBGP (pid %s)", self._proc.pid)
                    os.kill(self._proc.pid, signal.SIGUSR1)
                    self._reload_sent_at = time.monotonic()
                    self._reload_attempts = 1
                    # new neighbours exist only once ExaBGP has reloaded: give it a moment
                    self._retry_at = max(self._retry_at, time.monotonic() + 0.2)
            for p in rendered.problems:
                log.warning("BGPPeer %s: %s", p.name, p.message)
            self._cond.notify_all()
            self._dirty = True
            return rendered

    def set_routes(self, table: Mapping[str, Mapping[str, RouteAttrs]]) -> None:
        """Make `table` (peer name -> prefix -> attributes) the announced state."""
        with self._lock:
            self._desired = {peer: dict(routes) for peer, routes in table.items() if routes}
            self._routes_set = True
            self._cond.notify_all()
            self._dirty = True

    def update_routes(self, changes: Mapping[str, Mapping[str, RouteAttrs | None]]) -> None:
        """Change only these routes of the announced state ({peer: {prefix: attributes, or None
        to withdraw}}); the next sync compares just them with what ExaBGP holds, not every route."""
        with self._lock:
            apply_route_changes(self._desired, changes)
            for peer, routes in changes.items():
                self._touched.setdefault(peer, set()).update(routes)
            self._routes_set = True
            self._cond.notify_all()

    def announce(self, peer: str, prefix: str, attrs: RouteAttrs | None = None) -> None:
        """Add (or change) one route to one peer in the desired state."""
        with self._lock:
            self._desired.setdefault(peer, {})[prefix] = attrs or RouteAttrs()
            self._routes_set = True
            self._cond.notify_all()
            self._dirty = True

    def withdraw(self, peer: str, prefix: str) -> None:
        """Remove one route from the desired state."""
        with self._lock:
            routes = self._desired.get(peer, {})
            routes.pop(prefix, None)
            if not routes:
                self._desired.pop(peer, None)
            self._cond.notify_all()
            self._dirty = True

    def teardown(self, name: str, subcode: int = 10) -> bool:
        """Close peer `name`'s session now with a Cease NOTIFICATION (RFC 9384 subcode 10: BFD Down).

        For BFD: the path is gone, so the session is down without waiting for the hold timer.
        ExaBGP keeps the neighbour and its routes and reconnects by itself (connect retry), so
        the session comes back, routes and all, as soon as the router answers again. False
        when ExaBGP is not connected or does not know the peer (nothing to tear down).
        """
        with self._lock:
            peer = self._peers.get(name)
            if peer is None or self._conn is None:
                return False
            # its done/error keeps the acknowledgements in step
            self._pending.append((self._conn_gen, RouteChange(name, _TEARDOWN_PREFIX, None), None))
            self._writer_q.put((self._conn_gen, f"{peer.selector} teardown {subcode}\n".encode()))
            log.warning("BGP session to %s (%s): tearing down (Cease/%d)", name, peer.peer_address, subcode)
            return True

    def desired(self) -> RouteTable:
        with self._lock:
            return {k: dict(v) for k, v in self._desired.items()}

    def in_sync(self) -> bool:
        """True when ExaBGP acknowledged exactly the desired routes (of configured peers)."""
        with self._lock:
            return self._conn is not None and not self._pending and self._sent == self._effective_desired()

    def wait_synced(self, timeout: float = 10.0) -> bool:
        """Block until `in_sync()` or the timeout; returns the final value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.in_sync():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def start(self, timeout: float = 5.0) -> None:
        """Listen on the API socket and start ExaBGP (and the supervising threads).

        ExaBGP is spawned by the supervising thread (here as after a crash), never by the
        caller's: a `pdeathsig` prefix ties the child to the thread that forked it, and the
        caller may be a short-lived one. Returns once it is spawned (or after `timeout`).
        """
        with self._lock:
            if self._running or self._cancelled:
                return
            self._running = True
            self._started_once = True
            self._stopping = False
            if self._rendered is None:
                self._rendered = render_config([], self._relay_argv())
                self._write_config(self._rendered.text)
            end_leftover(self.pid_path, self.config_path)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(self.socket_path))
            os.chmod(self.socket_path, 0o600)
            server.listen(4)
            server.settimeout(0.2)  # so the accept thread notices stop() promptly
            self._server = server
            self._restart_at = time.monotonic()  # the supervising thread spawns it at once
        for target, name in (
            (self._accept_loop, "exabgp-accept"),
            (self._supervise_loop, "exabgp-supervise"),
            (self._writer_loop, "exabgp-writer"),
            (self._notify_loop, "exabgp-notify"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        with self._cond:
            self._cond.wait_for(lambda: self._proc is not None or not self._running, timeout)

    def stop(self, withdraw: bool = True, timeout: float = 2.0, grace: float = 0.2,
             keep_graceful: bool = True) -> None:
        """Withdraw every route (unless told not to; never to a graceful-restart peer, unless
        `keep_graceful` is False: a peer being deleted), then end ExaBGP and the threads.

        Everything, withdrawals included, is done within `timeout` seconds (plus at most
        ~0.1 s to reap a SIGKILLed ExaBGP): a speaker has a grace period to exit in.
        Withdrawals get what is left after reserving `KILL_RESERVE` for ending ExaBGP.
        """
        deadline = time.monotonic() + timeout

        def left(cap: float = float("inf")) -> float:
            return max(0.0, min(cap, deadline - time.monotonic()))

        with self._lock:
            if not self._running:
                self._cancelled = not self._started_once  # stopped before it started: never start
                return
            withdrawn = False
            if withdraw and self._conn is not None and self._proc is not None and self._proc.poll() is None:
                kept = kept_across_restart(self._desired, self._peers.values()) if keep_graceful else {}
                withdrawn = kept != self._desired
                if kept:
                    log.info("stop: keeping the routes to graceful-restart peers %s", ", ".join(sorted(kept)))
                self._desired = kept
                self._dirty = True
                self._retry_at = 0.0  # a back-off after refused commands must not hold the withdrawals
                self._cond.notify_all()
        if withdrawn:
            t0 = time.monotonic()
            if self.wait_synced(left() - KILL_RESERVE):
                log.info("stop: withdrawals acknowledged in %.3fs", time.monotonic() - t0)
                time.sleep(left(grace))  # acknowledged = in ExaBGP's RIB; let the UPDATEs leave
            else:
                log.warning("withdrawals not acknowledged within %.1fs; stopping ExaBGP anyway",
                            time.monotonic() - t0)
        with self._lock:
            self._stopping = True
            self._running = False
            proc = self._proc
            relay = self._relay_pid
            self._cond.notify_all()
        if proc is not None:
            self._terminate(proc, left())
        if relay is not None:
            # the relay exits on EOF from ExaBGP; make sure, by its recorded PID
            end = time.monotonic() + left(0.3)
            while _alive(relay) and time.monotonic() < end:
                time.sleep(0.01)
            if _alive(relay):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(relay, signal.SIGKILL)
        with self._lock:
            if self._server is not None:
                with contextlib.suppress(OSError):
                    self._server.close()
                self._server = None
            self._drop_conn()
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            with contextlib.suppress(FileNotFoundError):
                self.pid_path.unlink()
        self._writer_q.put(None)
        self._notify_q.put(None)
        for t in self._threads:
            t.join(timeout=left(0.5))  # daemon threads: one that lingers cannot hold the exit
        self._threads = []

    # --- process ----------------------------------------------------------------------------------

    def _relay_argv(self) -> list[str]:
        return [self.python, "-m", "lbspeaker.bgp.relay", "--socket", str(self.socket_path)]

    def _write_config(self, text: str) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)  # it holds MD5 passwords
        os.replace(tmp, self.config_path)

    def _spawn(self) -> None:
        """Start ExaBGP (lock held)."""
        env = dict(os.environ)
        env.update(exabgp_env())
        env.update(self.extra_env)
        argv = [*self.command_prefix, self.python, "-m", "exabgp", "server", str(self.config_path)]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.workdir),
            start_new_session=True,
        )
        self._proc = proc
        self.pid_path.write_text(f"{proc.pid}\n")
        self._proc_started = time.monotonic()
        self._restart_at = None
        self._reload_sent_at = None  # a fresh ExaBGP reads the current file
        log.info("started ExaBGP pid %d", proc.pid)
        threading.Thread(target=self._output_loop, args=(proc,), name="exabgp-output", daemon=True).start()
        threading.Thread(target=self._wait_loop, args=(proc,), name="exabgp-wait", daemon=True).start()
        self._cond.notify_all()

    def _terminate(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """SIGTERM (ExaBGP sends its NOTIFICATIONs), SIGKILL when `timeout` runs out."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(max(timeout, 0.05))
            except subprocess.TimeoutExpired:
                log.warning("ExaBGP pid %d still running %.1fs after SIGTERM; killing it", proc.pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(1.0)

    def _wait_loop(self, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        changed: list[str] = []
        with self._lock:
            if self._proc is not proc:
                return
            self.exits.append(code)
            if self._conn_gen and self._conn is not None:
                self._drop_conn()
            if self._stopping:
                return
            lived = time.monotonic() - self._proc_started
            if lived >= self.stable_after:
                self._backoff = self.backoff_initial
            if self._forced:
                self._forced = False
                delay = 0.0
                reason = "ExaBGP restarted to apply a BGPPeer change (it did not reload)"
            else:
                delay = self._backoff
                self._backoff = min(self._backoff * 2, self.backoff_max)
                reason = f"ExaBGP exited (status {code}); restarting in {delay:.1f}s"
            self._restart_at = time.monotonic() + delay
            log.error("%s", reason)
            changed = self._sessions.all_down(reason, self.clock())
            self._queue_notifications(changed)
            self._cond.notify_all()

    def _output_loop(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with open(self.log_path, "ab") as logfile:
            for raw in proc.stdout:
                logfile.write(raw)
                logfile.flush()
                line = raw.decode("utf-8", "replace").rstrip()
                self.log_tail.append(line)
                if "loaded new configuration successfully" in line or "could not load/reload" in line:
                    with self._lock:
                        if self._proc is proc:
                            self._reload_sent_at = None

    # --- API socket -------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            server = self._server
            if server is None:
                return
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=self._conn_loop, args=(conn,), name="exabgp-conn", daemon=True).start()

    def _conn_loop(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            hello = json.loads(reader.readline() or b"{}")
        except ValueError:
            hello = {}
        with self._lock:
            proc_pid = self._proc.pid if self._proc is not None else None
            if hello.get("relay") != "hello" or hello.get("exabgp_pid") != proc_pid or self._stopping:
                log.info("ignoring API connection from a stale relay (%s)", hello)
                conn.close()
                return
            self._drop_conn()
            self._conn = conn
            self._conn_gen += 1
            gen = self._conn_gen
            self._relay_pid = hello.get("relay_pid")
            self._sent = {}  # a fresh ExaBGP (or relay): announce everything again
            self._pending.clear()
            self._eor_due = {}  # a fresh ExaBGP reports its sessions afresh
            self._retry_at = 0.0
            self._dirty = True
            log.info("ExaBGP pid %s API connected (relay pid %s)", proc_pid, self._relay_pid)
            self._cond.notify_all()
        try:
            for raw in reader:
                self._handle_line(raw.decode("utf-8", "replace"), gen)
        except (OSError, ValueError):
            pass
        with self._lock:
            if self._conn_gen == gen and self._conn is conn:
                self._drop_conn()
                self._cond.notify_all()
                self._dirty = True

    def _drop_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._conn.close()
        self._conn = None
        self._pending.clear()

    def _handle_line(self, line: str, gen: int) -> None:
        msg = parse_line(line)
        if msg is None:
            return
        with self._lock:
            if gen != self._conn_gen:
                return
            if isinstance(msg, Ack):
                self._on_ack(msg.ok)
            elif isinstance(msg, ExaEvent):
                changed = self._sessions.apply(msg, self.clock())
                self._queue_notifications(changed)
                self._note_establishments(changed)
                if msg.type == "state" and msg.state == "up":
                    log.info("BGP session to %s established", msg.peer_address)
                elif msg.type == "state" and msg.state == "down":
                    log.warning("BGP session to %s down: %s", msg.peer_address, msg.reason)
            self._cond.notify_all()

    def _on_ack(self, ok: bool) -> None:
        if not self._pending:
            return
        _, change, previous = self._pending.popleft()
        if change.prefix == _EOR_PREFIX:
            self._on_eor_ack(change.peer, ok)
            return
        if change.prefix == _TEARDOWN_PREFIX:  # nothing to retry: BFD asks again on its next transition
            return
        if ok:
            self.updates_total += 1
            self._retry_delay = self.retry_interval
            return
        self.errors_total += 1
        if change.peer in self._peers:
            # ExaBGP refused it (e.g. neighbour not loaded yet): unknown state, retry later,
            # backing off so that a command ExaBGP can never take does not spin
            self._sent.setdefault(change.peer, {})[change.prefix] = _DIRTY
            self._retry_at = time.monotonic() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, 10.0)
            self._dirty = True
        log.debug(
            "ExaBGP refused %s %s to %s",
            "withdraw" if change.is_withdraw else "announce",
            change.prefix,
            change.peer,
        )
        del previous

    # --- sync ---------------------------------------------------------------------------------------

    def _effective_desired(self) -> RouteTable:
        return {p: dict(r) for p, r in self._desired.items() if p in self._peers and r}

    def _sync(self) -> None:
        """Send what is needed to turn `_sent` into the desired state (lock held)."""
        if (not self._dirty and not self._touched) or self._conn is None or time.monotonic() < self._retry_at:
            return
        if self._dirty:
            changes = diff_routes(self._sent, self._effective_desired())
        else:  # only the routes update_routes changed: the same diff, over those prefixes
            touched = {p: prefixes for p, prefixes in self._touched.items() if p in self._peers}
            changes = diff_routes(_only(self._sent, touched), _only(self._desired, touched))
        self._dirty = False
        self._touched = {}
        if not changes:
            return
        lines = []
        for change in changes:
            peer = self._peers.get(change.peer)
            if peer is None:
                continue
            previous = self._sent.get(change.peer, {}).get(change.prefix)
            if change.attrs is None:
                self._sent.get(change.peer, {}).pop(change.prefix, None)
                if not self._sent.get(change.peer, True):
                    self._sent.pop(change.peer, None)
            else:
                self._sent.setdefault(change.peer, {})[change.prefix] = change.attrs
            self._pending.append((self._conn_gen, change, previous))
            lines.append(change_command(peer, change))
        if lines:
            self._writer_q.put((self._conn_gen, ("\n".join(lines) + "\n").encode()))

    def _note_establishments(self, names: Sequence[str]) -> None:
        """A graceful-restart session newly Established owes the router an End-of-RIB (lock held)."""
        for name in names:
            peer = self._peers.get(name)
            s = self._sessions.sessions.get(name)
            if peer is None or s is None or not peer.graceful_restart:
                continue
            if s.established and s.established_count > self._eor_sent.get(name, 0):
                self._eor_due[name] = s.established_count
            elif not s.established:
                self._eor_due.pop(name, None)  # ExaBGP refuses End-of-RIB to a session that is down

    def _send_eors(self) -> None:
        """End-of-RIB to each due peer whose routes are all acknowledged (lock held)."""
        if not self._eor_due or not self._routes_set or self._conn is None:
            return
        if time.monotonic() < self._retry_at:
            return
        waiting = {c.peer for _, c, _ in self._pending}
        want = self._effective_desired()
        lines = []
        for name, count in sorted(self._eor_due.items()):
            peer = self._peers.get(name)
            if peer is None:
                del self._eor_due[name]
                continue
            if name in waiting or self._sent.get(name, {}) != want.get(name, {}):
                continue  # re-announcement not complete (or not acknowledged) yet
            del self._eor_due[name]
            self._eor_sent[name] = count
            for command in eor_commands(peer):
                self._pending.append((self._conn_gen, RouteChange(name, _EOR_PREFIX, None), None))
                lines.append(command)
            log.info("BGP peer %s: routes re-announced, sending End-of-RIB", name)
        if lines:
            self._writer_q.put((self._conn_gen, ("\n".join(lines) + "\n").encode()))

    def _on_eor_ack(self, name: str, ok: bool) -> None:
        if ok:
            self.eors_total += 1
            return
        s = self._sessions.sessions.get(name)
        if s is not None and s.established and name in self._peers:
            log.warning("ExaBGP refused End-of-RIB to %s; retrying", name)
            self._eor_due[name] = self._eor_sent.pop(name, s.established_count)
            self._retry_at = time.monotonic() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, 10.0)

    def _check_reload(self, now: float) -> None:
        """Re-signal a reload ExaBGP has not performed; restart it as a last resort (lock held)."""
        if self._reload_sent_at is None or now - self._reload_sent_at < 1.0:
            return
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._reload_sent_at = None
            return
        if self._reload_attempts < 3:
            self._reload_attempts += 1
            log.info("ExaBGP did not reload yet (attempt %d): signalling again", self._reload_attempts)
            os.kill(proc.pid, signal.SIGUSR1)
            self._reload_sent_at = now
            return
        log.warning("ExaBGP ignores reloads (updates pending for a down peer): restarting it")
        self.forced_restarts += 1
        self._forced = True
        self._reload_sent_at = None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)

    def _writer_loop(self) -> None:
        while True:
            item = self._writer_q.get()
            if item is None:
                return
            gen, data = item
            with self._lock:
                conn = self._conn if gen == self._conn_gen else None
            if conn is None:
                continue
            try:
                conn.sendall(data)
            except OSError:
                log.warning("lost the ExaBGP API connection while sending")

    def _supervise_loop(self) -> None:
        with self._cond:
            while self._running:
                now = time.monotonic()
                if self._restart_at is not None and now >= self._restart_at and not self._stopping:
                    if self._proc is not None:
                        self.restarts += 1
                        log.info("restarting ExaBGP (restart #%d)", self.restarts)
                    self._spawn()
                self._check_reload(now)
                self._sync()
                self._send_eors()
                self._queue_notifications(self._sessions.stalled(self.clock(), self.stall_after))
                self._cond.wait(0.05)

    # --- notifications ------------------------------------------------------------------------------

    def _queue_notifications(self, names: Sequence[str]) -> None:
        for name in names:
            s = self._sessions.sessions.get(name)
            if s is not None:
                self._notify_q.put((name, copy.copy(s)))

    def _notify_loop(self) -> None:
        while True:
            item = self._notify_q.get()
            if item is None:
                return
            if self.on_session_change is not None:
                try:
                    self.on_session_change(*item)
                except Exception:
                    log.exception("session callback failed")


def _only(table: Mapping[str, Mapping[str, RouteAttrs]], keys: Mapping[str, set[str]]) -> RouteTable:
    """The part of `table` at `keys` ({peer: prefixes})."""
    out: RouteTable = {}
    for peer, prefixes in keys.items():
        routes = table.get(peer, {})
        part = {p: routes[p] for p in prefixes if p in routes}
        if part:
            out[peer] = part
    return out


def end_leftover(pid_path: Path, config_path: Path | None = None) -> None:
    """SIGTERM (then SIGKILL) an ExaBGP a previous run left behind, named by `pid_path`.

    Checked by command line (an ExaBGP, with `config_path` if given) so a reused PID is
    never signalled."""
    try:
        pid = int(pid_path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return
    if b"exabgp" not in cmdline or (config_path is not None and str(config_path).encode() not in cmdline):
        return  # the PID was reused by something else
    log.warning("ending ExaBGP pid %d left by a previous run", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False

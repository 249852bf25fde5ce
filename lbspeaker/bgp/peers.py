"""One ExaBGP per BGPPeer: a peer added, changed or deleted never touches another peer's session.

Why not one ExaBGP for all peers, reloaded with SIGUSR1 (what the speaker did until issue 11):
ExaBGP 5 performs a reload only when no neighbour has updates pending in its adj-rib-out
(`reactor/loop.py`: `if self._pending_adjribout(): continue`), and a peer that is down but
has routes always has some. So deleting a down BGPPeer could not be reloaded; the last
resort, restarting ExaBGP, dropped every other session on the node (measured: ExaBGP
restarted on 2 of 4 nodes, healthy sessions to another peer down ~0.5 s). ExaBGP 5 has no
API command to add or remove a neighbour either (only `teardown`, `reload`, `restart`).
With a process per peer nothing is ever reloaded:

* a new peer starts its own ExaBGP (`ExaBGPManager` with a one-neighbour file);
* a deleted peer's ExaBGP withdraws its routes and stops, in the background;
* a changed peer (its rendered neighbour block differs: address, ASN, timers, password,
  families, graceful restart...) gets a new ExaBGP once the old one has stopped; a change
  ExaBGP does not see (e.g. `bfdProfile`) restarts nothing;
* the others' processes are not signalled, not even looked at.

The price is one ExaBGP (~25 MiB RSS) and one relay per peer per node; nodes peer with one
to a few routers. A crash is contained to its peer as well.

Peers are validated together (`config.render_config` over all of them) so the problems and
the rule "two BGPPeers with the same peerAddress and myASN: the second is not configured"
stay as with one file. Each peer's directory is `WORKDIR/peers/<name>`; `start()` ends
ExaBGPs a previous speaker left in any of them (and in WORKDIR itself: the one-process
layout), so two ExaBGPs never peer from the same node.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lbspeaker.bgp.config import PeerSpec, RenderedConfig, render_config
from lbspeaker.bgp.exabgp import ExaBGPManager, SessionCallback, end_leftover
from lbspeaker.bgp.routes import RouteAttrs, RouteTable, apply_route_changes
from lbspeaker.bgp.session import PeerSession

log = logging.getLogger(__name__)

ManagerFactory = Callable[[Path, SessionCallback], ExaBGPManager]
# a deleted peer's withdrawals and exit (its routes leave its router at once)
RETIRE_TIMEOUT = 2.0


SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


def peer_dir_name(base: Path, name: str) -> str:
    """The directory of a BGPPeer's ExaBGP under `base`/peers: as much of its name (a DNS
    subdomain, path-safe) as keeps `.../api.sock` within a unix socket path, and a digest
    so two names never share one."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    room = SOCKET_PATH_MAX - len(str(base / "peers")) - len("/-") - len(digest) - len("/api.sock")
    keep = name[: max(0, min(40, room))]
    return f"{keep}-{digest}" if keep else digest


def neighbor_text(peer: PeerSpec) -> str:
    """What ExaBGP would see of `peer`: equal texts need no new process."""
    return render_config([peer], ["relay"]).text


class PeerProcesses:
    """The `ExaBGPManager` interface the speaker uses, over one manager per BGPPeer.

    Each manager is started once: at `start()`, when its peer is added, or (a changed or
    re-added peer) when the previous ExaBGP of that name has stopped, which happens on a
    retiring thread so that the caller (the BGP runner) never waits for it.
    """

    def __init__(self, workdir: str | Path, factory: ManagerFactory,
                 on_session_change: SessionCallback | None = None) -> None:
        self.workdir = Path(workdir)
        self.factory = factory
        self.on_session_change = on_session_change
        self._lock = threading.RLock()
        self._managers: dict[str, ExaBGPManager] = {}
        self._started: set[ExaBGPManager] = set()
        self._texts: dict[str, str] = {}
        self._routes: dict[str, dict[str, RouteAttrs]] = {}
        self._retiring: dict[str, threading.Thread] = {}  # name -> the last retiring thread
        self._running = False
        self._stopped = False
        self._retired_updates = 0
        self._retired_restarts = 0
        self.processes_started = 0  # ExaBGP managers started (one per peer added or changed)

    # --- what BGP (speaker/bgp.py) uses --------------------------------------------------------------

    @property
    def updates_total(self) -> int:
        with self._lock:
            return self._retired_updates + sum(m.updates_total for m in self._managers.values())

    @property
    def restarts(self) -> int:
        with self._lock:
            return self._retired_restarts + sum(m.restarts for m in self._managers.values())

    def managers(self) -> dict[str, ExaBGPManager]:
        with self._lock:
            return dict(self._managers)

    def sessions(self) -> dict[str, PeerSession]:
        out: dict[str, PeerSession] = {}
        for name, m in self.managers().items():
            s = m.sessions().get(name)
            if s is not None:
                out[name] = s
        return out

    def in_sync(self) -> bool:
        return all(m.in_sync() for m in self.managers().values())

    def teardown(self, name: str, subcode: int = 10) -> bool:
        """Tear peer `name`'s session down now (BFD declared it down): `ExaBGPManager.teardown`."""
        m = self.managers().get(name)
        return m.teardown(name, subcode) if m is not None else False

    def start(self) -> None:
        with self._lock:
            if self._running or self._stopped:
                return
            self._running = True
            self._end_leftovers()
            names = list(self._managers)
        for name in names:
            self._start_if_due(name)

    def set_peers(self, peers: Sequence[PeerSpec]) -> RenderedConfig:
        """Run exactly `peers`: start the new ones, retire the gone ones, renew the changed ones."""
        rendered = render_config(peers, ["relay"])  # validation and duplicates, as one file had them
        for p in rendered.problems:
            log.warning("BGPPeer %s: %s", p.name, p.message)
        due: list[str] = []
        with self._lock:
            if self._stopped:
                return rendered
            wanted = {p.name: p for p in rendered.peers}
            for name in sorted(set(self._managers) - set(wanted)):
                log.info("BGPPeer %s removed: stopping its ExaBGP", name)
                self._retire(name, self._managers.pop(name), withdraw=True)
                self._texts.pop(name, None)
            for name, peer in sorted(wanted.items()):
                text = neighbor_text(peer)
                old = self._managers.get(name)
                if old is not None and self._texts.get(name) == text:
                    continue
                if old is not None:
                    log.info("BGPPeer %s changed: a new ExaBGP once the old one has stopped", name)
                    self._retire(name, old, withdraw=False)
                else:
                    log.info("BGPPeer %s added: starting its ExaBGP", name)
                self._managers[name] = self._new_manager(peer)
                self._texts[name] = text
                due.append(name)
        for name in due:
            self._start_if_due(name)
        return rendered

    def set_routes(self, table: Mapping[str, Mapping[str, RouteAttrs]]) -> None:
        with self._lock:
            self._routes = {peer: dict(routes) for peer, routes in table.items() if routes}
            for name, m in self._managers.items():
                m.set_routes({name: self._routes.get(name, {})})

    def update_routes(self, changes: Mapping[str, Mapping[str, RouteAttrs | None]]) -> None:
        """Only what changed since `set_routes`/`update_routes`: {peer: {prefix: attributes, or
        None to withdraw}}; each changed peer's manager diffs those prefixes alone (at 10,000
        Services a whole table per plan cost more than the plan)."""
        with self._lock:
            apply_route_changes(self._routes, changes)
            for peer, routes in changes.items():
                m = self._managers.get(peer)
                if m is not None:
                    m.update_routes({peer: routes})

    def desired(self) -> RouteTable:
        with self._lock:
            return {k: dict(v) for k, v in self._routes.items()}

    def stop(self, withdraw: bool = True, timeout: float = 2.0, grace: float = 0.2) -> None:
        """Every ExaBGP withdraws and stops at the same time, all within `timeout` (plus ~0.1 s)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopped = True
            self._running = False
            managers = list(self._managers.values())
            retiring = list(self._retiring.values())
        threads = [threading.Thread(target=m.stop, args=(withdraw, timeout, grace), daemon=True,
                                    name="exabgp-stop") for m in managers]
        for t in threads:
            t.start()
        for t in threads + retiring:
            t.join(max(0.0, deadline - time.monotonic()) + 0.1)

    # --- inside ---------------------------------------------------------------------------------------

    def _new_manager(self, peer: PeerSpec) -> ExaBGPManager:
        box: list[ExaBGPManager] = []

        def notify(name: str, session: PeerSession) -> None:
            with self._lock:
                current = box and self._managers.get(name) is box[0]
            if current and self.on_session_change is not None:
                self.on_session_change(name, session)

        m = self.factory(self.workdir / "peers" / peer_dir_name(self.workdir, peer.name), notify)
        box.append(m)
        m.set_peers([peer])
        m.set_routes({peer.name: self._routes.get(peer.name, {})})
        return m

    def _start_if_due(self, name: str) -> None:
        """Start the manager of `name` unless not running, started already, or its predecessor
        is still stopping (its retiring thread starts it then)."""
        with self._lock:
            m = self._managers.get(name)
            if m is None or m in self._started or not self._running or name in self._retiring:
                return
            self._started.add(m)
            self.processes_started += 1
        m.start()  # spawned by the manager's own supervising thread (pdeathsig)

    def _retire(self, name: str, old: ExaBGPManager, withdraw: bool) -> None:
        """Stop `old` on a thread of its own, after any earlier retirement of `name` (lock held)."""
        before = self._retiring.get(name)

        def run() -> None:
            if before is not None:
                before.join()
            try:
                # a deleted peer's routes go, graceful restart or not: nobody will re-announce them
                old.stop(withdraw=withdraw, timeout=RETIRE_TIMEOUT, keep_graceful=False)
            except Exception:
                log.exception("BGPPeer %s: stopping its ExaBGP failed", name)
            with self._lock:
                self._retired_updates += old.updates_total
                self._retired_restarts += old.restarts
                self._started.discard(old)
                if self._retiring.get(name) is threading.current_thread():
                    del self._retiring[name]
                if name not in self._managers and name not in self._retiring:
                    with contextlib.suppress(OSError):
                        shutil.rmtree(old.workdir)
            self._start_if_due(name)

        t = threading.Thread(target=run, name=f"exabgp-retire-{name}"[:60], daemon=True)
        self._retiring[name] = t
        t.start()

    def _end_leftovers(self) -> None:
        """ExaBGPs a previous speaker on this node left running (lock held, nothing started yet)."""
        end_leftover(self.workdir / "exabgp.pid")  # the one-process layout before issue 11
        for pid_path in sorted((self.workdir / "peers").glob("*/exabgp.pid")):
            end_leftover(pid_path, pid_path.parent / "exabgp.conf")

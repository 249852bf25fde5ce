"""CPU of one BGP plan + apply at scale, when one Service changes.

In-process, no namespaces, no API server: `speaker.bgp.BGP` with fakes for the status
writer's API, the reporter, the sessions writer and the passwords, `--services` Services
announced to `--peers` BGPPeers. Each step changes one Service (its endpoints go and
come back: a withdrawal, then an announcement) and runs `BGP.plan` + `BGP.apply`; the
CPU per step is printed. With `--exabgp` the manager is the real `bgp.peers.PeerProcesses`
over real (never started) `ExaBGPManager`s whose route diff (`_sync`) runs in the step
too, as the supervising thread would; else a fake that keeps what it is handed.

    python bench/bgp_apply.py [--services 10000] [--peers 2] [--steps 200] [--exabgp]

Figures from a shared, loaded machine are noisy (median of the steps is printed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from lbspeaker.api.addresses import parse_address_range  # noqa: E402
from lbspeaker.bgp.session import PeerSession  # noqa: E402
from lbspeaker.facts import BGPAdvertisementFacts, NodeFacts, PeerFacts, Pool, ServiceFacts  # noqa: E402
from lbspeaker.speaker.bgp import BGP, BGPHooks  # noqa: E402
from lbspeaker.speaker.snapshot import ChangeLog, Snapshot  # noqa: E402
from lbspeaker.speaker.status import BGP_STATUS, OwnedStatusWriter  # noqa: E402

NODE = "n1"


class Reporter:
    def normal(self, kind: str, name: str, reason: str, message: str) -> None: ...
    def warning(self, kind: str, name: str, reason: str, message: str) -> None: ...
    def problems(self, protocol: str, before: Any, now: Any, prefix: str = "") -> None: ...


class Sessions:
    def update(self, selected: Any, live: Any, bfd: Any = None) -> None: ...
    def quiet(self) -> None: ...


class Passwords:
    def resolve(self, peers: Any) -> dict[str, str | None]:
        return {}

    def due(self) -> bool:
        return False


class Source:
    synced = True

    def items(self) -> list[dict[str, Any]]:
        return []

    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        return None


class FakeManager:
    updates_total = 0
    restarts = 0

    def __init__(self, workdir: Path, on_change: Callable[[str, PeerSession], None]) -> None:
        self.routes: Mapping[str, Mapping[str, Any]] = {}

    def start(self) -> None: ...
    def stop(self, withdraw: bool = True, timeout: float = 2.0, grace: float = 0.2) -> None: ...
    def set_peers(self, peers: Any) -> None: ...

    def set_routes(self, table: Mapping[str, Mapping[str, Any]]) -> None:
        self.routes = table

    def sessions(self) -> dict[str, PeerSession]:
        return {}

    def in_sync(self) -> bool:
        return True


def exabgp_factory(workdir: Path, on_change: Callable[[str, PeerSession], None]) -> Any:
    """Real PeerProcesses over real ExaBGPManagers that are never started."""
    from lbspeaker.bgp.exabgp import ExaBGPManager
    from lbspeaker.bgp.peers import PeerProcesses

    class Unstarted(PeerProcesses):
        def start(self) -> None:  # no ExaBGP: only the route bookkeeping is measured
            pass

    return Unstarted(workdir, lambda d, cb: ExaBGPManager(d, on_session_change=cb),
                     on_session_change=on_change)


class Conn:
    def sendall(self, data: bytes) -> None: ...
    def shutdown(self, how: int) -> None: ...
    def close(self) -> None: ...


def sync_all(mgr: Any) -> None:
    """What each manager's supervising thread does after set_routes: diff and queue the commands."""
    for m in mgr.managers().values():
        with m._lock:
            m._conn = m._conn or Conn()  # type: ignore[assignment]  # "connected": _sync sends (into a queue nobody reads)
            m._sync()
            m._pending.clear()
            while not m._writer_q.empty():
                m._writer_q.get_nowait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--peers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--exabgp", action="store_true")
    args = ap.parse_args()

    pool = Pool("p", (parse_address_range("10.0.0.0/16"),))
    adv = BGPAdvertisementFacts.from_object({"metadata": {"name": "all"}, "spec": {}})
    peers = tuple(PeerFacts.from_object({"metadata": {"name": f"peer{i}"}, "spec": {
        "myASN": 64513, "peerASN": 64512, "peerAddress": f"172.18.0.{i + 1}"}}) for i in range(args.peers))
    services = {f"ns/s{i}": ServiceFacts("ns", f"s{i}", (f"10.0.{i // 250}.{i % 250 + 1}",), "p", False,
                                         ("n2",)) for i in range(args.services)}
    log = ChangeLog()
    status = OwnedStatusWriter(None, "lbspeaker-system", NODE, {BGP_STATUS: Source()})  # type: ignore[arg-type]
    tmp = tempfile.TemporaryDirectory()
    factory = exabgp_factory if args.exabgp else FakeManager
    bgp = BGP(NODE, status=status, sessions=Sessions(), reporter=Reporter(),  # type: ignore[arg-type]
              passwords=Passwords(), workdir=Path(tmp.name),  # type: ignore[arg-type]
              hooks=BGPHooks(manager_factory=factory))  # type: ignore[arg-type]

    def snapshot() -> Snapshot:
        return Snapshot(NODE, {}, service_map=services, pools=(pool,), nodes=(NodeFacts(NODE),),
                        node_addresses=("172.18.0.3",), bgp_advertisements=(adv,), peers=peers,
                        service_seq=log.seq, service_log=log)

    t0 = time.process_time()
    bgp.apply(bgp.plan(snapshot()))
    if args.exabgp:
        sync_all(bgp.manager)
    first = time.process_time() - t0
    samples = []
    for n in range(args.steps):
        key = f"ns/s{n % 50}"
        old = services[key]
        services[key] = ServiceFacts(old.namespace, old.name, old.ips, old.pool, False,
                                     () if old.serving_endpoints else ("n2",))
        log.add(key)
        t0 = time.process_time()
        bgp.apply(bgp.plan(snapshot()))
        if args.exabgp:
            sync_all(bgp.manager)
        samples.append(time.process_time() - t0)
    routes = sum(len(r) for r in bgp.applied.routes.values()) if bgp.applied else 0
    print(f"services={args.services} peers={args.peers} routes={routes} manager="
          f"{'PeerProcesses+ExaBGPManager._sync' if args.exabgp else 'fake'}")
    print(f"first plan+apply: {first * 1000:.1f} ms CPU")
    print(f"one Service changed, plan+apply: median {statistics.median(samples) * 1000:.3f} ms CPU, "
          f"mean {statistics.mean(samples) * 1000:.3f} ms over {len(samples)} steps")
    tmp.cleanup()


if __name__ == "__main__":
    main()

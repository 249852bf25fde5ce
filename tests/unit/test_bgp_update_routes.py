"""`update_routes` (changes only) keeps ExaBGP's routes exactly as `set_routes` (whole) would.

`ExaBGPManager._sync` then diffs only the prefixes changed since, unless something needs the
whole diff (new table, peers, connection, a refused command). Checked without ExaBGP: managers
never started, a connection that swallows the commands, acknowledgements given by the test.
The commands each sync queues must be exactly the whole diff's, in its order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.bgp.config import PeerSpec
from lbspeaker.bgp.exabgp import ExaBGPManager
from lbspeaker.bgp.peers import PeerProcesses
from lbspeaker.bgp.routes import RouteAttrs, diff_routes

LOOP = {"source_address": "127.0.0.1", "router_id": "127.0.0.1", "peer_port": 1790}
PEERS = [PeerSpec(n, f"127.0.0.{i + 2}", 64513, 64512, **LOOP)  # type: ignore[arg-type]
         for i, n in enumerate(["a", "b"])]
PREFIXES = [f"198.51.100.{i}/32" for i in range(5)]
ATTRS = st.sampled_from([None, RouteAttrs(), RouteAttrs(100), RouteAttrs(None, ("65000:1",))])


class Conn:
    def sendall(self, data: bytes) -> None: ...
    def shutdown(self, how: int) -> None: ...
    def close(self) -> None: ...


class Unstarted(PeerProcesses):
    def start(self) -> None:  # no ExaBGP: the route bookkeeping alone
        pass


changes = st.dictionaries(st.sampled_from(["a", "b", "gone"]),
                          st.dictionaries(st.sampled_from(PREFIXES), ATTRS))
tables = st.dictionaries(st.sampled_from(["a", "b"]),
                         st.dictionaries(st.sampled_from(PREFIXES), ATTRS.filter(lambda a: a is not None)))
ops = st.tuples(st.one_of(st.tuples(st.just("set"), tables), st.tuples(st.just("update"), changes)),
                st.integers(0, 2))  # then that many of the commands are refused (retried later)


def sync(m: ExaBGPManager) -> None:
    """One pass of the supervising thread; the queued commands must be the whole diff's."""
    with m._lock:
        m._conn = m._conn or Conn()  # type: ignore[assignment]
        m._retry_at = 0.0
        want = diff_routes(m._sent, m._effective_desired())
        queued = len(m._pending)
        m._sync()
        assert [c for _, c, _ in list(m._pending)[queued:]] == want


@settings(max_examples=100, deadline=None)
@given(st.lists(ops, max_size=12))
def test_changes_only_equal_the_whole_table(tmp_path_factory: Any, seq: list[Any]) -> None:
    tmp: Path = tmp_path_factory.mktemp("bgp")
    procs = Unstarted(tmp, lambda d, cb: ExaBGPManager(d, on_session_change=cb))
    procs.set_peers(PEERS)
    whole: dict[str, dict[str, RouteAttrs]] = {}
    for (op, arg), refused in seq:
        if op == "set":
            whole = {p: dict(r) for p, r in arg.items() if r}
            procs.set_routes(arg)
        else:
            for peer, routes in arg.items():
                for prefix, attrs in routes.items():
                    if attrs is None:
                        whole.get(peer, {}).pop(prefix, None)
                    else:
                        whole.setdefault(peer, {})[prefix] = attrs
            whole = {p: r for p, r in whole.items() if r}
            procs.update_routes(arg)
        assert procs.desired() == whole
        for name, m in procs.managers().items():
            assert m.desired() == ({name: whole[name]} if name in whole else {})
            sync(m)
            with m._lock:
                for i in range(len(m._pending)):
                    m._on_ack(i >= refused)
    for name, m in procs.managers().items():  # refusals retried: in the end ExaBGP holds the table
        sync(m)
        with m._lock:
            while m._pending:
                m._on_ack(True)
        assert m.in_sync() and m.desired() == ({name: whole[name]} if name in whole else {})

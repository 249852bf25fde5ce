"""BGP applies a plan incrementally: only the Services and routes the planner redid.

At 10,000 Services rebuilding every Service's ServiceBGPStatus fields and handing ExaBGP
the whole route table (which it then diffed route by route) on every plan cost more than
the plan (bench/bgp_apply.py), so `speaker.bgp.BGP.apply` follows `BGPPlan.changed_services`
/ `changed_routes` when the plan directly follows the last one it applied completely. This
is the test that makes that safe: after any sequence of plans, some never applied and some
whose apply failed part-way, the status fields and the routes the manager holds equal what
the last plan says in whole, and the nodeAssigned Events are the ones the whole comparison
sends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.bgp.plan import BGPPlanner
from lbspeaker.bgp.routes import RouteAttrs, apply_route_changes
from lbspeaker.bgp.session import PeerSession
from lbspeaker.facts import NodeFacts, ServiceFacts
from lbspeaker.speaker.bgp import BGP, BGPHooks
from lbspeaker.speaker.status import bgp_fields
from tests.helpers import FakeFailure, FakeReporter, FakeStatusWriter
from tests.unit.test_plan_incremental import (
    BGP_ADVS,
    BGP_NODE,
    BGP_PEERS,
    BGP_POOLS,
    bgp_contexts,
    bgp_steps,
    step_services,
)

NOT_APPLIED, STATUS_FAILS, ROUTES_FAIL = 0, 1, 2  # what a step does with its plan (else: applies it)





class Manager:
    updates_total = 0
    restarts = 0

    def __init__(self, workdir: Path, on_change: Callable[[str, PeerSession], None]) -> None:
        self.routes: dict[str, dict[str, RouteAttrs]] = {}
        self.fail = False

    def start(self) -> None: ...
    def stop(self, withdraw: bool = True, timeout: float = 2.0, grace: float = 0.2) -> None: ...
    def set_peers(self, peers: Any) -> None: ...

    def set_routes(self, table: Mapping[str, Mapping[str, RouteAttrs]]) -> None:
        if self.fail:
            raise FakeFailure
        self.routes = {peer: dict(routes) for peer, routes in table.items() if routes}

    def update_routes(self, changes: Mapping[str, Mapping[str, RouteAttrs | None]]) -> None:
        if self.fail:
            raise FakeFailure
        apply_route_changes(self.routes, changes)

    def sessions(self) -> dict[str, PeerSession]:
        return {}

    def in_sync(self) -> bool:
        return True



class Sessions:
    def update(self, selected: Any, live: Any, bfd: Any = None) -> None: ...


@settings(max_examples=150, deadline=None)
@given(bgp_contexts(), st.lists(st.tuples(bgp_steps(), st.integers(0, 6)), min_size=1, max_size=8))
def test_incremental_apply_equals_a_rebuild(context: dict[str, Any], seq: list[Any]) -> None:
    status, reporter = FakeStatusWriter(), FakeReporter()
    bgp = BGP(BGP_NODE, status=status, sessions=Sessions(), reporter=reporter,  # type: ignore[arg-type]
              passwords=None, workdir=Path("/nonexistent"),  # type: ignore[arg-type]
              hooks=BGPHooks(manager_factory=Manager))
    planner = BGPPlanner(BGP_NODE)
    current: dict[str, ServiceFacts] = {}
    for (changes, new_context, tell), what in seq:
        told = step_services(current, changes, tell)
        context = new_context or context
        plan = planner.plan(dict(current), told, **context)
        if what == NOT_APPLIED:
            continue
        before = bgp.applied.announced if bgp.applied is not None else {}
        mgr = bgp.manager
        if isinstance(mgr, Manager):
            mgr.fail = what == ROUTES_FAIL
        status.fail = what == STATUS_FAILS
        reporter.assigned.clear()
        try:
            bgp.apply(plan)
        except FakeFailure:
            assert what in (STATUS_FAILS, ROUTES_FAIL)
            status.fail = False
            if isinstance(bgp.manager, Manager):
                bgp.manager.fail = False
            continue
        assert status.fields == {k: bgp_fields(v) for k, v in plan.service_peers.items()}
        want_routes = {peer: dict(routes) for peer, routes in plan.routes.items() if routes}
        assert (bgp.manager.routes if isinstance(bgp.manager, Manager) else {}) == want_routes
        assert reporter.assigned == sorted(set(plan.announced) - set(before))


def test_a_plan_that_follows_is_applied_by_its_changes_alone() -> None:
    """The property above holds for a whole rebuild each time too: this pins that one Service
    changed is applied as changes (no whole status table, no whole route table)."""
    context = {"node_facts": NodeFacts(BGP_NODE), "pools": BGP_POOLS, "advertisements": [BGP_ADVS[0]],
               "peers": [BGP_PEERS[1]], "node_addresses": ("172.18.0.3",)}
    status = FakeStatusWriter()
    handed: list[str] = []

    class Recording(Manager):
        def set_routes(self, table: Any) -> None:
            handed.append("whole")
            super().set_routes(table)

        def update_routes(self, changes: Any) -> None:
            handed.append("changes")
            super().update_routes(changes)

    bgp = BGP(BGP_NODE, status=status, sessions=Sessions(), reporter=FakeReporter(),  # type: ignore[arg-type]
              passwords=None, workdir=Path("/nonexistent"),  # type: ignore[arg-type]
              hooks=BGPHooks(manager_factory=Recording))
    planner = BGPPlanner(BGP_NODE)
    services = {f"ns/s{i}": ServiceFacts("ns", f"s{i}", (f"10.0.0.{i + 1}",), "a", False, ("n2",))
                for i in range(3)}
    bgp.apply(planner.plan(services, None, **context))
    assert handed == ["whole"] and status.whole == 1
    services["ns/s0"] = ServiceFacts("ns", "s0", ("10.0.0.1",), "a", False, ())  # no endpoint: withdrawn
    plan = planner.plan(services, ["ns/s0"], **context)
    assert plan.changed_services == {"ns/s0"}
    assert plan.changed_routes == {("ibgp", "10.0.0.1/32")}
    bgp.apply(plan)
    assert handed == ["whole", "changes"] and status.whole == 1
    assert "ns/s0" not in status.fields and set(status.fields) == {"ns/s1", "ns/s2"}
    planner.plan(services, [], **context)  # made, never applied: the next plan is applied whole
    bgp.apply(planner.plan(services, [], **context))
    assert handed == ["whole", "changes", "whole"] and status.whole == 2

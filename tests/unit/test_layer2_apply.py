"""Layer2 applies a plan's Services incrementally: only the IPs the planner redid.

At 10,000 Services rebuilding every Service's ServiceL2Status fields, metrics and
nodeAssigned bookkeeping on every plan was most of a speaker's CPU (bench/scale.py), so
`Layer2._apply_services` follows `Plan.changed_ips`. This is the test that makes that safe:
after any sequence of plans, what it holds equals what a full rebuild from the last plan
gives, and the nodeAssigned Events are the ones the full comparison would send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.facts import ServiceFacts
from lbspeaker.plan import L2Planner, Plan
from lbspeaker.speaker.layer2 import Layer2
from lbspeaker.speaker.status import l2_fields
from tests.helpers import FakeReporter, FakeStatusWriter
from tests.unit.test_plan_incremental import NODE_NAMES, contexts, step_services, steps


class Metrics:
    def __init__(self) -> None:
        self.pairs: set[tuple[str, str]] = set()

    def change_announced(self, removed: set[tuple[str, str]], added: set[tuple[str, str]]) -> None:
        assert not added & removed
        self.pairs = (self.pairs - removed) | added



def owned(plan: Plan) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for ann in plan.announce.values():
        for svc in ann.services:
            out.setdefault(svc, set()).add(ann.ip)
    return out


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(NODE_NAMES), contexts(), st.lists(st.tuples(steps(), st.integers(0, 5)), min_size=1,
                                                         max_size=8))
def test_incremental_apply_equals_a_rebuild(node: str, context: dict[str, Any], seq: list[Any]) -> None:
    """Some plans are made and never applied (0: an apply that did not complete): the next one
    does not follow the last applied and must be applied whole."""
    status, metrics, reporter = FakeStatusWriter(), Metrics(), FakeReporter()
    l2 = Layer2(node, None, status=status, reporter=reporter, metrics=metrics,  # type: ignore[arg-type]
                node_problems=None)  # type: ignore[arg-type]
    planner = L2Planner(node)
    current: dict[str, ServiceFacts] = {}
    before: dict[str, set[str]] = {}
    previous: Plan | None = None
    for (changes, new_context, tell), skip in seq:
        told = step_services(current, changes, tell)
        context = new_context or context
        plan = planner.plan(dict(current), told, **context)
        if skip == 0:
            continue
        reporter.assigned.clear()
        l2._apply_services(previous, plan)
        previous = plan
        now = owned(plan)
        assert status.fields == {k: l2_fields(v) for k, v in plan.services_announced().items()}
        assert metrics.pairs == {(svc, ip) for svc, ips in now.items() for ip in ips}
        assert l2._owned_services == now
        assert reporter.assigned == sorted(s for s, ips in now.items() if not ips <= before.get(s, set()))
        before = now


class Announcer:
    """What the responders were told last; `fail_next` makes one call raise after taking part of
    the change in (as an interface that fails half-way would)."""

    def __init__(self) -> None:
        self.owned: dict[str, frozenset[str]] = {}
        self.fail_next = False

    def set_owned(self, ips_by_interface: Mapping[str, Any]) -> dict[str, str]:
        items = {k: frozenset(v) for k, v in ips_by_interface.items() if v}
        if self.fail_next:
            self.fail_next = False
            first = next(iter(items.items()), None)
            if first is not None:
                self.owned[first[0]] = first[1]
            raise OSError("interface gone half-way")
        self.owned = items
        return {}


def by_interface(plan: Plan) -> dict[str, frozenset[str]]:
    return {k: frozenset(v) for k, v in plan.by_interface().items()}


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NODE_NAMES), contexts(), st.lists(st.tuples(steps(), st.integers(0, 3)), min_size=2,
                                                         max_size=12))
def test_incremental_announcer_apply_equals_a_rebuild(
    node: str, context: dict[str, Any], seq: list[Any]
) -> None:
    """The announcer is told only the IPs the planner redid, yet always answers exactly for the
    plan applied last. 0: a plan never applied; 1: the announcer fails in the middle of an apply,
    which the next plan must repair."""
    announcer = Announcer()
    l2 = Layer2(node, announcer, status=FakeStatusWriter(), reporter=FakeReporter(), metrics=Metrics(),  # type: ignore[arg-type]
                node_problems=None)  # type: ignore[arg-type]
    planner = L2Planner(node)
    current: dict[str, ServiceFacts] = {}
    for (changes, new_context, tell), mode in seq:
        told = step_services(current, changes, tell)
        context = new_context or context
        plan = planner.plan(dict(current), told, **context)
        if mode == 0:
            continue
        if mode == 1:
            announcer.fail_next = True
            try:
                l2._apply_announcer(plan)
            except OSError:
                continue
            finally:
                announcer.fail_next = False  # not reached when nothing moved
        else:
            l2._apply_announcer(plan)
        assert announcer.owned == by_interface(plan)
        assert {k: frozenset(v) for k, v in l2._applied.items()} == by_interface(plan)

"""Prometheus metrics of the speaker: MetalLB's names under the `lbspeaker_` prefix.

The layer-2 counters live in the announcer (`Announcer.totals()`, per IP) and are
read at scrape time by a custom collector, so the reply path never touches a
Prometheus object. Each speaker gets its own registry (tests run several in one
process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

L2_COUNTERS = (
    ("requests_received", "lbspeaker_layer2_requests_received", "ARP/NDP requests received for owned IPs"),
    ("responses_sent", "lbspeaker_layer2_responses_sent", "ARP/NDP responses sent"),
    ("gratuitous_sent", "lbspeaker_layer2_gratuitous_sent", "Gratuitous ARP / unsolicited NA sent"),
)


Family = type[CounterMetricFamily] | type[GaugeMetricFamily]


def _single(kind: Family, name: str, doc: str, value: Any) -> Any:
    """A family of one unlabelled sample (a missing value reads as 0)."""
    fam = kind(name, doc)
    fam.add_metric([], float(value or 0))
    return fam


def _labelled(kind: Family, name: str, doc: str, label: str, values: Mapping[Any, Any] | None) -> Any:
    """A family of one sample per `label` value, sorted (a missing mapping: no samples)."""
    fam = kind(name, doc, labels=[label])
    for key, value in sorted((values or {}).items()):
        fam.add_metric([str(key)], float(value))
    return fam


class _ScrapeCollector(Collector):
    """Families built at scrape time from `read()`, a snapshot of plain counters.

    A scrape never fails because a source did: when `read()` raises, a collector with
    `always_yield` still yields its families (empty), the others yield nothing.
    """

    always_yield = False

    def __init__(self, read: Callable[[], Mapping[str, Any]] | None) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        try:
            s = self._read() if self._read is not None else {}
        except Exception:
            if not self.always_yield:
                return
            s = {}
        yield from self.families(s)

    def families(self, s: Mapping[str, Any]) -> Iterator[Any]:
        raise NotImplementedError


class _L2Collector(_ScrapeCollector):
    def families(self, s: Mapping[str, Any]) -> Iterator[Any]:
        for key, name, doc in L2_COUNTERS:
            yield _labelled(CounterMetricFamily, name, doc, "ip", s.get(key))
        yield _single(CounterMetricFamily, "lbspeaker_layer2_malformed_dropped",
                      "Malformed frames dropped", s.get("malformed_dropped"))
        yield _single(CounterMetricFamily, "lbspeaker_layer2_send_errors",
                      "Frames the kernel refused to send", s.get("send_errors"))


class _HeartbeatCollector(_ScrapeCollector):
    def families(self, s: Mapping[str, Any]) -> Iterator[Any]:
        for key, value in sorted(s.items()):
            name = f"lbspeaker_speaker_heartbeat_{key}"
            if isinstance(value, Mapping):  # {reason: n}: refused datagrams, a counter per reason
                doc = f"Heartbeat datagrams {key}, by reason"
                yield _labelled(CounterMetricFamily, name, doc, "reason", value)
            else:
                yield _single(GaugeMetricFamily, name, f"Heartbeat {key.replace('_', ' ')}", value)


class _BGPCollector(_ScrapeCollector):
    """lbspeaker_bgp_* families, read at scrape time from the BGP side's `metrics_snapshot()`:
    {"sessions": {peer: up}, "updates": n, "prefixes": {peer: n}, "restarts": n}."""

    always_yield = True

    def families(self, s: Mapping[str, Any]) -> Iterator[Any]:
        sessions = {peer: 1.0 if ok else 0.0 for peer, ok in (s.get("sessions") or {}).items()}
        yield _labelled(GaugeMetricFamily, "lbspeaker_bgp_session_up",
                        "1 while the BGP session to the peer is Established", "peer", sessions)
        yield _single(CounterMetricFamily, "lbspeaker_bgp_updates",
                      "Route announcements and withdrawals sent to ExaBGP", s.get("updates"))
        yield _labelled(GaugeMetricFamily, "lbspeaker_bgp_announced_prefixes_total",
                        "Prefixes this node announces to the peer", "peer", s.get("prefixes"))
        yield _single(CounterMetricFamily, "lbspeaker_bgp_exabgp_restarts",
                      "ExaBGP restarts after it exited on its own", s.get("restarts"))


class _PlanningCollector(_ScrapeCollector):
    """Plans run/skipped/failed per protocol, and cache events per resource by whether they changed
    what a plan reads: {"plans": {protocol: n}, "plans_skipped": ..., "plan_errors": ...,
    "events": {resource: n}, "events_ignored": {resource: n}}."""

    always_yield = True
    FAMILIES = (
        ("plans", "protocol", "Plans computed and applied"),
        ("plans_skipped", "protocol", "Snapshots not planned: none of the protocol's inputs moved"),
        ("plan_errors", "protocol", "Plan computations that failed (the last announcements stay)"),
        ("events", "resource", "Cache events that changed what a plan reads (each can trigger planning)"),
        ("events_ignored", "resource", "Cache events that changed nothing a plan reads (no planning)"),
    )

    def families(self, s: Mapping[str, Any]) -> Iterator[Any]:
        for key, label, doc in self.FAMILIES:
            yield _labelled(CounterMetricFamily, f"lbspeaker_speaker_{key}", doc, label, s.get(key))


class SpeakerMetrics:
    """All metrics of one speaker, registered in `self.registry`."""

    def __init__(self, node: str, registry: CollectorRegistry | None = None) -> None:
        self.node = node
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.announced = Gauge(
            "lbspeaker_speaker_announced",
            "1 for each Service IP this node announces", ["service", "ip", "node", "protocol"], registry=r)
        self.strictarp_ok = Gauge(
            "lbspeaker_speaker_strictarp_ok",
            "0 when kube-proxy runs IPVS without strictARP (every node answers ARP), else 1", registry=r)
        self.strictarp_ok.set(1)
        self.members = Gauge(
            "lbspeaker_speaker_members", "Live speakers in this speaker's view", registry=r)
        self.api_ok = Gauge(
            "lbspeaker_speaker_api_ok", "1 while this speaker's API view is current (fail-static when 0)",
            registry=r)
        self._announced: set[tuple[str, str]] = set()

    def attach_announcer(self, totals: Callable[[], Mapping[str, Any]]) -> None:
        self.registry.register(_L2Collector(totals))

    def attach_heartbeat(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self.registry.register(_HeartbeatCollector(stats))

    def attach_planning(self, stats: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        """Register the plan and cache-event counters (read at scrape time)."""
        self.registry.register(_PlanningCollector(stats))

    def attach_bgp(self, stats: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """Register the lbspeaker_bgp_* families (empty until `stats` has something)."""
        self.registry.register(_BGPCollector(stats))

    def attach_bfd(self, sessions: Callable[[], Mapping[Any, Any]] = dict) -> None:
        """Register the lbspeaker_bfd_* families (MetalLB's metallb_bfd_*; empty while no BFD runs).

        `sessions()`: {SessionKey: SessionInfo} of the running BFD sessions."""
        from lbspeaker.bfd.manager import BFDCollector

        self.registry.register(BFDCollector(sessions))

    def change_announced(self, removed: set[tuple[str, str]], added: set[tuple[str, str]]) -> None:
        """{(service key, ip)} no longer / newly announced (Layer2 hands over only what changed)."""
        for svc, ip in removed & self._announced:
            self.announced.remove(svc, ip, self.node, "layer2")
            self._announced.discard((svc, ip))
        for svc, ip in added - self._announced:
            self.announced.labels(svc, ip, self.node, "layer2").set(1)
            self._announced.add((svc, ip))

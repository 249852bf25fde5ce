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


class _L2Collector(Collector):
    def __init__(self, totals: Callable[[], Mapping[str, Any]]) -> None:
        self._totals = totals

    def collect(self) -> Iterator[Any]:
        try:
            t = self._totals()
        except Exception:
            return
        for key, name, doc in L2_COUNTERS:
            fam = CounterMetricFamily(name, doc, labels=["ip"])
            for ip, n in sorted((t.get(key) or {}).items()):
                fam.add_metric([str(ip)], float(n))
            yield fam
        fam = CounterMetricFamily("lbspeaker_layer2_malformed_dropped", "Malformed frames dropped")
        fam.add_metric([], float(t.get("malformed_dropped") or 0))
        yield fam
        fam2 = CounterMetricFamily("lbspeaker_layer2_send_errors", "Frames the kernel refused to send")
        fam2.add_metric([], float(t.get("send_errors") or 0))
        yield fam2


class _HeartbeatCollector(Collector):
    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        try:
            s = self._stats()
        except Exception:
            return
        for key, value in sorted(s.items()):
            if isinstance(value, Mapping):  # {reason: n}: refused datagrams, a counter per reason
                rej = CounterMetricFamily(f"lbspeaker_speaker_heartbeat_{key}",
                                          f"Heartbeat datagrams {key}, by reason", labels=["reason"])
                for reason, n in sorted(value.items()):
                    rej.add_metric([str(reason)], float(n))
                yield rej
                continue
            doc = f"Heartbeat {key.replace('_', ' ')}"
            fam = GaugeMetricFamily(f"lbspeaker_speaker_heartbeat_{key}", doc)
            fam.add_metric([], float(value))
            yield fam


class _BGPCollector(Collector):
    """lbspeaker_bgp_* families, read at scrape time from the BGP side's `metrics_snapshot()`:
    {"sessions": {peer: up}, "updates": n, "prefixes": {peer: n}, "restarts": n}."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]] | None) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        try:
            s = self._stats() if self._stats is not None else {}
        except Exception:
            s = {}
        up = GaugeMetricFamily("lbspeaker_bgp_session_up",
                               "1 while the BGP session to the peer is Established", labels=["peer"])
        for peer, ok in sorted((s.get("sessions") or {}).items()):
            up.add_metric([str(peer)], 1.0 if ok else 0.0)
        yield up
        updates = CounterMetricFamily("lbspeaker_bgp_updates",
                                      "Route announcements and withdrawals sent to ExaBGP")
        updates.add_metric([], float(s.get("updates") or 0))
        yield updates
        prefixes = GaugeMetricFamily("lbspeaker_bgp_announced_prefixes_total",
                                     "Prefixes this node announces to the peer", labels=["peer"])
        for peer, n in sorted((s.get("prefixes") or {}).items()):
            prefixes.add_metric([str(peer)], float(n))
        yield prefixes
        restarts = CounterMetricFamily("lbspeaker_bgp_exabgp_restarts",
                                       "ExaBGP restarts after it exited on its own")
        restarts.add_metric([], float(s.get("restarts") or 0))
        yield restarts


class _PlanningCollector(Collector):
    """Plans run/skipped/failed per protocol, and cache events per resource by whether they changed
    what a plan reads: {"plans": {protocol: n}, "plans_skipped": ..., "plan_errors": ...,
    "events": {resource: n}, "events_ignored": {resource: n}}."""

    FAMILIES = (
        ("plans", "protocol", "Plans computed and applied"),
        ("plans_skipped", "protocol", "Snapshots not planned: none of the protocol's inputs moved"),
        ("plan_errors", "protocol", "Plan computations that failed (the last announcements stay)"),
        ("events", "resource", "Cache events that changed what a plan reads (each can trigger planning)"),
        ("events_ignored", "resource", "Cache events that changed nothing a plan reads (no planning)"),
    )

    def __init__(self, stats: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        try:
            s = self._stats()
        except Exception:
            s = {}
        for key, label, doc in self.FAMILIES:
            fam = CounterMetricFamily(f"lbspeaker_speaker_{key}", doc, labels=[label])
            for name, n in sorted((s.get(key) or {}).items()):
                fam.add_metric([str(name)], float(n))
            yield fam


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

    def set_announced(self, pairs: set[tuple[str, str]]) -> None:
        """{(service key, ip)} announced now; stale label sets are removed."""
        for svc, ip in self._announced - pairs:
            self.announced.remove(svc, ip, self.node, "layer2")
        for svc, ip in pairs:
            self.announced.labels(svc, ip, self.node, "layer2").set(1)
        self._announced = set(pairs)

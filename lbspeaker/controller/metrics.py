"""Prometheus metrics of the controller, MetalLB's names under the `lbspeaker_` prefix.

Each Controller gets its own registry so that two replicas can run in one process
(the component tests do) without colliding on metric names.
"""

from __future__ import annotations

import contextlib
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ControllerMetrics:
    """All metrics of one controller instance, registered in `self.registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        gauge, counter = partial(Gauge, registry=self.registry), partial(Counter, registry=self.registry)
        self.addresses_in_use = gauge("lbspeaker_allocator_addresses_in_use_total",
                                      "Number of IP addresses in use, per pool", ["pool"])
        self.addresses_total = gauge("lbspeaker_allocator_addresses_total",
                                     "Number of usable IP addresses, per pool", ["pool"])
        self.pool_valid = gauge(
            "lbspeaker_controller_pool_valid_bool",
            "1 when the pool's current spec is valid and in use, 0 when the last valid one still runs",
            ["pool"])
        self.allocations = counter(
            "lbspeaker_controller_allocations",
            "Allocation decisions taken for Services, by result (allocated, failed, released, kept)",
            ["result"])
        self.updates = counter("lbspeaker_k8s_client_updates",
                               "Objects processed by the controller's work queue")
        self.update_errors = counter("lbspeaker_k8s_client_update_errors",
                                     "Work items that failed with an API error and were requeued")
        self.config_loaded = gauge("lbspeaker_k8s_client_config_loaded_bool",
                                   "1 once the pools have been read from the API")
        self.config_stale = gauge(
            "lbspeaker_k8s_client_config_stale_bool",
            "1 when at least one pool runs on its last valid configuration because its spec is invalid")
        self.is_leader = gauge("lbspeaker_controller_leader_bool",
                               "1 while this replica holds the controller Lease and allocates")
        self.queue_depth = gauge("lbspeaker_controller_queue_depth",
                                 "Keys waiting in the controller's work queue")
        self.reconcile_seconds = Histogram(
            "lbspeaker_controller_reconcile_duration_seconds", "Time to reconcile one work item",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry)
        self.orphaned_services = gauge(
            "lbspeaker_controller_services_outside_pools",
            "Services holding IPs that no current pool covers (kept until the operator acts)")

    def set_pool(self, pool: str, in_use: int, total: int) -> None:
        """Publish the counters of one pool."""
        self.addresses_in_use.labels(pool=pool).set(in_use)
        self.addresses_total.labels(pool=pool).set(total)

    def forget_pool(self, pool: str) -> None:
        """Drop the series of a deleted pool so dashboards do not show a ghost."""
        for gauge in (self.addresses_in_use, self.addresses_total, self.pool_valid):
            with contextlib.suppress(KeyError):
                gauge.remove(pool)

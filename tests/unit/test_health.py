"""The controller's HTTP endpoints and command line (no API server needed)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from lbspeaker.controller.main import parse_args
from lbspeaker.controller.metrics import ControllerMetrics
from lbspeaker.health import HealthServer, parse_addr


def test_probes_and_metrics_served() -> None:
    metrics = ControllerMetrics()
    metrics.set_pool("p", 3, 16)
    state = {"ready": False}
    server = HealthServer("127.0.0.1:0", metrics.registry, lambda: (True, "ok"),
                          lambda: (state["ready"], "leader" if state["ready"] else "caches not synced"))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert urllib.request.urlopen(base + "/healthz", timeout=5).read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/readyz", timeout=5)
        assert err.value.code == 503
        state["ready"] = True
        assert urllib.request.urlopen(base + "/readyz", timeout=5).read() == b"leader\n"
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'lbspeaker_allocator_addresses_in_use_total{pool="p"} 3.0' in body
        assert 'lbspeaker_allocator_addresses_total{pool="p"} 16.0' in body
        metrics.forget_pool("p")
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'pool="p"' not in body
    finally:
        server.stop()


@pytest.mark.parametrize(("addr", "expected"), [
    ("0.0.0.0:7472", ("0.0.0.0", 7472)),
    (":7472", ("0.0.0.0", 7472)),
    ("[::1]:9", ("::1", 9)),
])
def test_parse_addr(addr: str, expected: tuple[str, int]) -> None:
    assert parse_addr(addr) == expected


def test_cli_defaults_and_flags() -> None:
    args = parse_args([])
    assert args.leader_elect is True and args.namespace == "lbspeaker-system" and args.lb_class is None
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == (15.0, 10.0, 2.0)
    assert args.metrics_addr == "0.0.0.0:7472"
    args = parse_args(["--no-leader-elect", "--lb-class", "x/y", "--kubeconfig", "k", "--identity", "me"])
    assert args.leader_elect is False and args.lb_class == "x/y" and args.kubeconfig == "k"
    assert args.identity == "me"


def test_cli_refuses_lease_timings_that_allow_two_leaders() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--lease-duration", "5", "--renew-deadline", "10"])

"""The controller's HTTP endpoints and command line (no API server needed)."""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from lbspeaker.controller.main import parse_args
from lbspeaker.controller.metrics import ControllerMetrics
from lbspeaker.health import HealthServer, parse_addr
from tests.helpers import wait_for


def test_probes_and_metrics_served() -> None:
    metrics = ControllerMetrics()
    metrics.set_pool("p", 3, 16)
    state = {"ready": False}
    server = HealthServer(
        "127.0.0.1:0",
        metrics.registry,
        lambda: (True, "ok"),
        lambda: (state["ready"], "leader" if state["ready"] else "caches not synced"),
    )
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


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("0.0.0.0:7472", ("0.0.0.0", 7472)),
        (":7472", ("0.0.0.0", 7472)),
        ("[::1]:9", ("::1", 9)),
    ],
)
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


# -- hardening (issue 13 #6): real sockets against a server with small limits ---------------------


def _server(**kwargs: Any) -> HealthServer:
    server = HealthServer(
        "127.0.0.1:0", ControllerMetrics().registry, lambda: (True, "ok"), lambda: (True, "ready"), **kwargs
    )
    server.start()
    return server


def _get(port: int, path: str = "/healthz") -> bytes:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read()


def _health_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("Thread-") or t.name == "health-http")


def test_half_open_connections_are_bounded_and_reclaimed() -> None:
    """Was: 1,000 silent connections held 1,002 threads, never reclaimed."""
    server = _server(read_timeout_s=0.5, max_connections=8)
    before = threading.active_count()
    peak = [0]
    flooding = threading.Event()
    flooding.set()

    def sample() -> None:
        while flooding.is_set():
            peak[0] = max(peak[0], threading.active_count() - 1)  # minus this sampler
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    socks: list[socket.socket] = []
    try:
        for _ in range(200):  # connect and send nothing
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        # every one of them is closed by the server: at once when no slot is free, else on timeout
        for s in socks:
            s.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(1) == b""
        flooding.clear()
        sampler.join(5)
        assert peak[0] <= before + 8, f"{peak[0]} threads for 8 slots (baseline {before})"
        assert server.rejected > 0
        wait_for(lambda: threading.active_count() <= before, 10)  # reclaimed
        assert _get(server.port) == b"ok\n"
    finally:
        flooding.clear()
        for s in socks:
            s.close()
        server.stop()


def test_a_busy_server_still_answers_once_slots_free() -> None:
    server = _server(read_timeout_s=30.0, max_connections=2)
    try:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
        wait_for(lambda: threading.active_count() >= 3, 5)  # both held connections have their thread
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            _get(server.port)
        assert server.rejected >= 1
        for s in held:
            s.close()  # the client ends them: their threads see EOF and leave
        assert wait_for(lambda: _get(server.port) == b"ok\n", 10)
    finally:
        server.stop()


def test_an_aborted_connection_logs_one_line_and_no_traceback(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    server = _server(read_timeout_s=5.0, max_connections=4)
    try:
        with caplog.at_level(logging.DEBUG, logger="lbspeaker.health"):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # half a request, then a reset
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            wait_for(lambda: server.aborted == 1, 5)
            assert _get(server.port) == b"ok\n"
        lines = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert lines[0].exc_info is None and "ended early: ConnectionResetError" in lines[0].getMessage()
        assert "Traceback" not in capfd.readouterr().err
    finally:
        server.stop()


def test_a_silent_client_times_out_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    server = _server(read_timeout_s=0.3, max_connections=4)
    try:
        with caplog.at_level(logging.INFO, logger="lbspeaker.health"):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            assert s.recv(1) == b""  # the server gave up on it
            s.close()
            wait_for(lambda: server.aborted == 1, 5)
        msgs = [r.getMessage() for r in caplog.records]
        assert len(msgs) == 1 and "timed out" in msgs[0] and caplog.records[0].exc_info is None
    finally:
        server.stop()


def test_ipv6_listen_address() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = HealthServer("[::1]:0", ControllerMetrics().registry, lambda: (True, "ok"), lambda: (True, "ok"))
    server.start()
    try:
        assert urllib.request.urlopen(f"http://[::1]:{server.port}/healthz", timeout=5).read() == b"ok\n"
    finally:
        server.stop()

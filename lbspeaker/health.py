"""One small HTTP server for `/metrics`, `/healthz` (`/livez`) and `/readyz`, shared by the
controller and the speaker.

Each component supplies its own checks: `/healthz` answers "are my loops running"
(liveness: a failure means restart me), `/readyz` "can I do my job" (readiness); the
body says why. A check that raises answers 503 with the error rather than killing the
server thread.

It faces whatever can reach the node's port, so it defends itself: every read has a
timeout (a half-open connection holds its thread for `read_timeout_s`, not forever),
at most `max_connections` are served at once (more are closed at once, without a
thread), and a client that goes away costs one log line, not a traceback.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


def parse_addr(addr: str) -> tuple[str, int]:
    """`host:port` (host may be empty or `[v6]`) -> bindable pair."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, but at most `max_connections` threads; the rest are closed at once."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # socketserver's 5 drops a probe's SYN as soon as a few clients stall

    def __init__(
        self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int
    ) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self.rejected = 0  # connections closed unserved because every slot was busy
        self.aborted = 0  # connections that failed mid-request (client went away, timed out)
        self._last_reject_log = float("-inf")
        self._count_lock = threading.Lock()
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.rejected += 1
            now = time.monotonic()
            if now - self._last_reject_log >= 60.0:  # a flood must not become a log flood
                self._last_reject_log = now
                log.warning(
                    "http: every connection slot is busy; closing new connections unserved "
                    "(%d so far; is something holding connections open?)",
                    self.rejected,
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # the thread never started
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def count_abort(self) -> None:
        with self._count_lock:
            self.aborted += 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line for a client that went away; a traceback only for a bug of ours."""
        exc = sys.exc_info()[1]
        self.count_abort()
        peer = client_address[0] if isinstance(client_address, tuple) else client_address
        if isinstance(exc, OSError):
            log.info("http: connection from %s ended early: %s", peer, exc.__class__.__name__)
        else:
            log.error("http: request from %s failed", peer, exc_info=exc)


class HealthServer:
    """Serves metrics and probes from a daemon thread; `port` is the bound port (0 picks one)."""

    def __init__(
        self,
        addr: str,
        registry: CollectorRegistry,
        healthz: Check,
        readyz: Check,
        *,
        read_timeout_s: float = 10.0,
        max_connections: int = 32,
    ) -> None:
        host, port = parse_addr(addr)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = read_timeout_s  # applied to the socket before the first read

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/livez", "/readyz"):
                    try:
                        ok, why = (outer.readyz if path == "/readyz" else outer.healthz)()
                    except Exception as exc:
                        ok, why = False, f"check failed: {exc}"
                    self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http: " + format, *args)

            def log_error(self, format: str, *args: object) -> None:
                """Timeouts and malformed requests: one line, counted with the aborted ones."""
                outer._server.count_abort()
                log.info("http: connection from %s: " + format, self.client_address[0], *args)

        self.registry = registry
        self.healthz = healthz
        self.readyz = readyz
        self._server = BoundedHTTPServer((host, port), Handler, max_connections)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def rejected(self) -> int:
        """Connections closed unserved because `max_connections` were busy."""
        return self._server.rejected

    @property
    def aborted(self) -> int:
        """Connections that ended mid-request (the client went away or sent nothing in time)."""
        return self._server.aborted

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""One small HTTP server for `/metrics`, `/healthz` (`/livez`) and `/readyz`, shared by the
controller and the speaker.

Each component supplies its own checks: `/healthz` answers "are my loops running"
(liveness: a failure means restart me), `/readyz` "can I do my job" (readiness); the
body says why. A check that raises answers 503 with the error rather than killing the
server thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


def parse_addr(addr: str) -> tuple[str, int]:
    """`host:port` (host may be empty or `[v6]`) -> bindable pair."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class HealthServer:
    """Serves metrics and probes from a daemon thread; `port` is the bound port (0 picks one)."""

    def __init__(self, addr: str, registry: CollectorRegistry, healthz: Check, readyz: Check) -> None:
        host, port = parse_addr(addr)
        outer = self

        class Handler(BaseHTTPRequestHandler):
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

        self.registry = registry
        self.healthz = healthz
        self.readyz = readyz
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

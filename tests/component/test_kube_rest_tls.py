"""`Rest` over HTTPS, as against a real kube-apiserver: the kubeconfig's CA, client certificate
and token must all still be used now that requests go through urllib3 directly.

The lab API server serves plain http, so a tiny stdlib HTTPS server stands in here; it demands
a client certificate signed by the test CA and records what each request presented. The
certificates are made with the `openssl` CLI (the `cryptography` package is not a dependency).
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.resources import CONFIGMAPS
from lbspeaker.kube.rest import ConnectionFailure, Rest

pytestmark = pytest.mark.component

TOKEN = "tls-test-token"
CLIENT_CN = "lbspeaker-tls-client"
CONFIGMAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "x", "namespace": "default", "resourceVersion": "1"},
    "data": {"k": "v"},
}

OPENSSL_CNF = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path  # unrelated: signed nothing the server or client presents
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["/usr/bin/openssl", *map(str, args)], check=True, capture_output=True)


def _make_ca(d: Path, name: str, cnf: Path) -> tuple[Path, Path]:
    cert, key = d / f"{name}.crt", d / f"{name}.key"
    _openssl("req", "-x509", "-config", cnf, "-extensions", "ca", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
             "-subj", f"/CN={name}", "-days", "2")
    return cert, key


def _make_leaf(d: Path, name: str, cn: str, ext: str, cnf: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    cert, key, csr = d / f"{name}.crt", d / f"{name}.key", d / f"{name}.csr"
    _openssl("req", "-new", "-config", cnf, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
             "-set_serial", "0x" + name.encode().hex(), "-days", "2",
             "-extfile", cnf, "-extensions", ext, "-out", cert)
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    d = tmp_path / "pki"
    d.mkdir()
    cnf = d / "openssl.cnf"
    cnf.write_text(OPENSSL_CNF)
    ca = _make_ca(d, "test-ca", cnf)
    other = _make_ca(d, "other-ca", cnf)
    server = _make_leaf(d, "server", "127.0.0.1", "server", cnf, ca)
    client = _make_leaf(d, "client", CLIENT_CN, "client", cnf, ca)
    return Pki(ca[0], other[0], server[0], server[1], client[0], client[1])


@dataclass
class Seen:
    """What the server got: per request, the client certificate's CN and the Authorization header."""

    requests: list[tuple[str | None, str | None]] = field(default_factory=list)


class TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, seen: Seen) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.context = context
        self.seen = seen

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        # Handshake in the handler's thread (first read), not in the accepting one.
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: the wrong-CA test's client aborts the handshake, on purpose."""


class Handler(BaseHTTPRequestHandler):
    server: TlsServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        peer = self.connection.getpeercert()
        subject = peer.get("subject", ()) if peer else ()
        cn = next((v for rdn in subject for k, v in rdn if k == "commonName"), None)
        self.server.seen.requests.append((cn, self.headers.get("Authorization")))
        if self.path == "/api/v1/namespaces/default/configmaps/x":
            status, body = 200, json.dumps(CONFIGMAP).encode()
        else:
            status, body = 404, json.dumps({"kind": "Status", "code": 404, "reason": "NotFound",
                                            "message": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def https_server(pki: Pki) -> Iterator[tuple[str, Seen]]:
    """An HTTPS server on 127.0.0.1 that requires a client certificate signed by the test CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(pki.ca)
    seen = Seen()
    server = TlsServer(context, seen)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="tls-test-server", daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, url: str, ca: Path, pki: Pki) -> Path:
    """A kubeconfig in the shape kubeadm writes: everything inline, base64; plus a bearer token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": url, "certificate-authority-data": _b64(ca)}}],
        "users": [{"name": "u", "user": {"client-certificate-data": _b64(pki.client_cert),
                                         "client-key-data": _b64(pki.client_key), "token": TOKEN}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def test_https_with_the_kubeconfigs_ca_client_certificate_and_token(
    https_server: tuple[str, Seen], pki: Pki, tmp_path: Path
) -> None:
    url, seen = https_server
    api = load_api_client(str(write_kubeconfig(tmp_path / "kc", url, pki.ca, pki)))
    try:
        rest = Rest(api)
        assert rest.get(CONFIGMAPS, "x", "default") == CONFIGMAP
        assert seen.requests == [(CLIENT_CN, f"Bearer {TOKEN}")]
    finally:
        api.close()


def test_a_server_not_signed_by_the_kubeconfigs_ca_is_refused(
    https_server: tuple[str, Seen], pki: Pki, tmp_path: Path
) -> None:
    url, seen = https_server
    api = load_api_client(str(write_kubeconfig(tmp_path / "kc", url, pki.other_ca, pki)))
    try:
        rest = Rest(api)
        with pytest.raises(ConnectionFailure) as err:
            rest.get(CONFIGMAPS, "x", "default")
        assert err.value.status == 0
        assert "CERTIFICATE_VERIFY_FAILED" in err.value.message, err.value.message
        assert seen.requests == []  # no request got through
    finally:
        api.close()

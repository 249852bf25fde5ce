"""A deliberately small Kubernetes REST + watch client for the lab's cluster agents.

The agents play kubelet, the EndpointSlice controller and kube-proxy. They are test
stand-ins, not product code, so they do not use `lbspeaker.kube`: keeping them on a
separate code path means a bug in the product's kube layer cannot hide behind the
very agents that the product's end-to-end tests rely on. The official `kubernetes`
package is used only to read the kubeconfig (its generated API classes changed shape
between major versions); requests go straight through urllib3 with JSON dicts.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import urllib3

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A non-2xx answer from the API server (status code, reason and message kept)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class KubeApi:
    """JSON-in, JSON-out access to one API server described by a kubeconfig."""

    def __init__(self, kubeconfig: str | None) -> None:
        from kubernetes import client, config  # only for kubeconfig parsing

        cfg = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(client_configuration=cfg)
        self.host = cfg.host.rstrip("/")
        self._headers: dict[str, str] = {"Accept": "application/json"}
        token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        if token:
            # load_kube_config stores "Bearer <token>"; be lenient about a bare token.
            self._headers["Authorization"] = (
                token if token.lower().startswith("bearer ") else f"Bearer {token}"
            )
        elif cfg.username:
            self._headers.update(urllib3.make_headers(basic_auth=f"{cfg.username}:{cfg.password}"))
        kw: dict[str, Any] = {"num_pools": 4, "maxsize": 16}
        if self.host.startswith("https"):
            kw["cert_reqs"] = ssl.CERT_REQUIRED if cfg.verify_ssl else ssl.CERT_NONE
            if cfg.ssl_ca_cert:
                kw["ca_certs"] = cfg.ssl_ca_cert
            if cfg.cert_file:
                kw["cert_file"] = cfg.cert_file
            if cfg.key_file:
                kw["key_file"] = cfg.key_file
            if not cfg.verify_ssl:
                urllib3.disable_warnings()
        self._pool = urllib3.PoolManager(**kw)

    def _url(self, path: str, query: dict[str, Any] | None) -> str:
        url = self.host + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        return url

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> dict[str, Any]:
        """One request; returns the decoded JSON body or raises ApiError."""
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        resp = self._pool.request(
            method,
            self._url(path, query),
            body=data,
            headers=headers,
            timeout=urllib3.Timeout(connect=5, read=timeout),
            retries=False,
        )
        text = resp.data.decode("utf-8", "replace")
        try:
            obj = json.loads(text) if text else {}
        except json.JSONDecodeError:
            obj = {"message": text}
        if not 200 <= resp.status < 300:
            raise ApiError(
                resp.status, str(obj.get("reason") or resp.reason), str(obj.get("message") or text)
            )
        return obj if isinstance(obj, dict) else {"items": obj}

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        return self.request("GET", path, query or None)

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", path, body=body)

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def delete(self, path: str, **query: Any) -> dict[str, Any]:
        return self.request("DELETE", path, query or None)

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 60) -> Iterator[dict[str, Any]]:
        """Yield watch events ({type, object}) until the server ends the stream."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        resp = self._pool.request(
            "GET",
            self._url(path, query),
            headers=self._headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=5, read=timeout_seconds + 30),
            retries=False,
        )
        try:
            if resp.status != 200:
                text = resp.read().decode("utf-8", "replace")
                raise ApiError(resp.status, str(resp.reason), text)
            buf = b""
            for chunk in resp.stream(4096, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            if buf.strip():
                yield json.loads(buf)
        finally:
            resp.release_conn()


def obj_key(obj: dict[str, Any]) -> tuple[str, str]:
    """(namespace, name) of an object; namespace is "" for cluster-scoped ones."""
    md = obj.get("metadata") or {}
    return (md.get("namespace") or "", md.get("name") or "")


class Informer:
    """List+watch cache of one collection, as plain dicts, on a daemon thread.

    Level-triggered consumers only need "something changed" plus a consistent
    snapshot, so listeners get no payload; they re-read `items()`. A watch that
    breaks keeps the old contents (fail-static) and resumes from the last
    resourceVersion; 410 Gone triggers a fresh list.
    """

    def __init__(self, api: KubeApi, path: str, name: str | None = None) -> None:
        self.api = api
        self.path = path
        self.name = name or path
        self._items: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer {self.name}", daemon=True)

    def add_listener(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get((namespace, name))

    def _notify(self) -> None:
        for fn in self._listeners:
            try:
                fn()
            except Exception:  # a listener bug must not kill the watch
                log.exception("listener of %s failed", self.name)

    def _list(self) -> str:
        data = self.api.get(self.path)
        items = {obj_key(o): o for o in data.get("items") or []}
        with self._lock:
            self._items = items
        self.synced.set()
        self._notify()
        return str((data.get("metadata") or {}).get("resourceVersion") or "0")

    def _run(self) -> None:
        rv: str | None = None
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                for event in self.api.watch(self.path, rv, timeout_seconds=45):
                    if self._stop.is_set():
                        return
                    etype = event.get("type")
                    obj = event.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            rv = None
                            break
                        raise ApiError(
                            int(obj.get("code") or 500), str(obj.get("reason")), str(obj.get("message"))
                        )
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = str(new_rv)
                    if etype == "BOOKMARK":
                        continue
                    with self._lock:
                        if etype == "DELETED":
                            self._items.pop(obj_key(obj), None)
                        else:
                            self._items[obj_key(obj)] = obj
                    self._notify()
                backoff = 0.2
            except ApiError as e:
                if e.status == 410:
                    rv = None
                    continue
                log.warning("watch %s: %s", self.name, e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5)
            except Exception as e:  # connection reset, API server restarting, ...
                log.debug("watch %s broke: %s", self.name, e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5)
            else:
                # A clean end of stream (server timeout): pause a hair to avoid hot loops.
                if self._stop.wait(0.01):
                    return
        return


class Trigger:
    """Debounced "please reconcile" flag shared between informer threads and one worker."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def __call__(self) -> None:
        self._event.set()

    def wait(self, timeout: float, debounce: float = 0.05) -> bool:
        """Wait for a trigger (or timeout); after one, absorb the burst that follows."""
        fired = self._event.wait(timeout)
        if fired:
            time.sleep(debounce)
            self._event.clear()
        return fired

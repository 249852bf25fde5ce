"""A thin REST layer over the official client's transport: raw paths in, plain JSON dicts out.

Generated model classes are avoided on purpose: custom resources and core resources
are handled alike, and the pure core consumes the same dicts the API sends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import urllib3
from kubernetes.client import ApiClient

from lbspeaker.kube.client import DEFAULT_TIMEOUTS, Timeouts
from lbspeaker.kube.resources import Resource

log = logging.getLogger(__name__)

PatchType = Literal["merge", "strategic", "json"]

PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}

Query = Sequence[tuple[str, str]]


class ApiError(Exception):
    """A failed API call, parsed from the Kubernetes `Status` body (status 0: no HTTP answer at all)."""

    def __init__(
        self, status: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details: Mapping[str, Any] = details or {}

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: stale resourceVersion on update, or AlreadyExists on create (see `reason`)."""
        return self.status == 409

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def gone(self) -> bool:
        """410: the resourceVersion asked for is older than the server still remembers."""
        return self.status == 410

    @property
    def too_large_resource_version(self) -> bool:
        """504 Timeout, cause ResourceVersionTooLarge: the server has not reached the resourceVersion
        asked for (a store restored from backup or reset is behind us); matched as client-go does."""
        if self.status != 504 and self.reason != "Timeout":
            return False
        causes = self.details.get("causes")
        for cause in causes if isinstance(causes, list) else []:
            if isinstance(cause, Mapping) and (
                cause.get("reason") == "ResourceVersionTooLarge"
                or cause.get("message") == "Too large resource version"
            ):
                return True
        return "Too large resource version" in self.message

    @property
    def retry_after_s(self) -> float | None:
        """The server's `details.retryAfterSeconds`, when it gave one."""
        value = self.details.get("retryAfterSeconds")
        return float(value) if isinstance(value, int | float) and value > 0 else None

    @property
    def retriable(self) -> bool:
        """Worth retrying the same call later: transport failures, throttling, server-side trouble."""
        return self.status == 0 or self.status == 429 or self.status >= 500

    @classmethod
    def from_status(cls, status: Mapping[str, Any], http_status: int | None = None) -> ApiError:
        """Build from a `Status` object (an error body, or the object of a watch ERROR event)."""
        code = status.get("code") or http_status or 0
        return cls(
            int(code),
            str(status.get("reason") or ""),
            str(status.get("message") or ""),
            status.get("details") if isinstance(status.get("details"), Mapping) else None,
        )

    @classmethod
    def from_body(cls, http_status: int, http_reason: str, body: bytes) -> ApiError:
        """Parse an error response; a body that is not a Status keeps its text as the message."""
        try:
            decoded = json.loads(body) if body else None
        except ValueError:
            decoded = None
        if isinstance(decoded, Mapping) and decoded.get("kind") == "Status":
            err = cls.from_status(decoded, http_status)
            err.status = http_status  # the HTTP code is authoritative
            if not err.reason:
                err.reason = http_reason
            return err
        text = body.decode("utf-8", "replace")[:2000] if body else ""
        return cls(http_status, http_reason or "", text)


class ConnectionFailure(ApiError):
    """No HTTP answer: refused, reset, timed out, TLS failure. `status` is 0."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "ConnectionFailure", message)


def _name_ns(obj: Mapping[str, Any]) -> tuple[str | None, str | None]:
    meta = obj.get("metadata") or {}
    return meta.get("name"), meta.get("namespace")


class Rest:
    """get/list/create/replace/patch/delete (+ /status) on a `Resource`, returning plain dicts."""

    def __init__(self, api_client: ApiClient, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.api_client = api_client
        self.timeouts = timeouts
        self._cached_pool: tuple[str, urllib3.HTTPConnectionPool, str] | None = None
        self._timeouts: dict[tuple[float, float], urllib3.Timeout] = {}

    # -- transport ---------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        query: Query | None,
        body: Any,
        content_type: str | None,
        timeout: tuple[float, float],
        accept: str = "application/json",
    ) -> Any:
        """Send one request; returns the urllib3 response (body not yet read) of a 2xx answer.

        Why urllib3 directly: the official client's `param_serialize` + `call_api` +
        `RESTClientObject.request` (sanitizing, content-type regexes, the pool manager's key
        normalizing) cost more client CPU than the HTTP exchange itself. What we keep from it:
        its configuration and its urllib3 pool manager (TLS, client certificates, CA, proxy,
        no_proxy, keepalive, pool size, `retries`), its default headers (User-Agent) and cookie,
        and the `BearerToken` auth settings read on every request (so the refresh hook runs as
        before, throttled by `client.throttle_refresh`). Dropped on purpose: redirects are not
        followed (a 3xx is an ApiError; the API server sends none), the client's silent
        json-patch -> strategic-merge rewrite of non-list bodies (`patch` rejects those), and
        `client_go_retries` (off by default; our callers retry with backoff).
        """
        conf = self.api_client.configuration
        host = conf.host
        headers: dict[str, str] = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        headers.update(self.api_client.default_headers)
        if self.api_client.cookie:
            headers["Cookie"] = self.api_client.cookie
        auth = conf.auth_settings().get("BearerToken")
        if auth and auth["value"]:
            headers[auth["key"]] = auth["value"]
        target = path
        if query:
            target += "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query)
        payload = json.dumps(body).encode() if body is not None else None
        try:
            pool, prefix = self._pool(host)
            resp = pool.urlopen(
                method,
                prefix + target,
                body=payload,
                headers=headers,
                timeout=self._timeout(timeout),
                redirect=False,
                preload_content=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # TLS errors are HTTPErrors too
            raise ConnectionFailure(f"{method} {path}: {exc}") from exc
        if not 200 <= resp.status <= 299:
            try:
                data = resp.read()
            except (urllib3.exceptions.HTTPError, OSError):
                data = b""
            finally:
                resp.release_conn()
            raise ApiError.from_body(resp.status, resp.reason or "", data)
        return resp

    def _timeout(self, timeout: tuple[float, float]) -> urllib3.Timeout:
        """One `Timeout` per (connect, read) pair: validating a new one costs more than a lookup."""
        found = self._timeouts.get(timeout)
        if found is None:
            if len(self._timeouts) >= 64:  # watches pick random read timeouts: stay bounded
                self._timeouts.clear()
            found = self._timeouts[timeout] = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        return found

    def _pool(self, host: str) -> tuple[Any, str]:
        """What to send through for `host`, and what to put before the request's path.

        Plain and SOCKS pool managers: their per-host connection pool, looked up once (the pool
        manager's lookup normalizes its whole key on every call) and again after the host
        changes or the pool is closed (`ApiClient.close`, eviction); the prefix is the path part
        of `host` (e.g. `https://rancher/k8s/clusters/c-1`). An HTTP(S) `ProxyManager` is used
        as is, with the absolute URL: it picks tunnel or absolute-form and adds proxy headers.
        """
        manager = self.api_client.rest_client.pool_manager
        if isinstance(manager, urllib3.ProxyManager):
            return manager, host
        cached = self._cached_pool
        if cached is not None and cached[0] == host and cached[1].pool is not None:
            return cached[1], cached[2]
        pool = manager.connection_from_url(host)
        prefix = urllib3.util.parse_url(host).path or ""  # the client sends host + path as is
        self._cached_pool = (host, pool, prefix)
        return pool, prefix

    def request(
        self,
        method: str,
        path: str,
        query: Query | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One JSON request/response on a raw path (the building block of the typed methods)."""
        read_timeout = timeout if timeout is not None else self.timeouts.read
        raw = self._send(method, path, query, body, content_type, (self.timeouts.connect, read_timeout))
        try:
            data = raw.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ConnectionFailure(f"{method} {path}: reading the answer: {exc}") from exc
        finally:
            raw.release_conn()
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ApiError(0, "BadResponse", f"{method} {path}: not JSON: {exc}") from exc

    def stream(self, path: str, query: Query, read_timeout: float) -> Any:
        """Open a streaming GET (watch); the caller reads and closes the urllib3 response."""
        return self._send(
            "GET",
            path,
            query,
            None,
            None,
            (self.timeouts.connect, read_timeout),
        )

    # -- typed helpers -----------------------------------------------------------------------

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        """One object; raises ApiError(404) when absent."""
        return self.request("GET", resource.path(namespace, name))

    def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One page of a list: the List dict with `items` and `metadata.resourceVersion`/`continue`."""
        query: list[tuple[str, str]] = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if limit:
            query.append(("limit", str(limit)))
        if continue_:
            query.append(("continue", continue_))
        if resource_version is not None:
            query.append(("resourceVersion", resource_version))
        if resource_version_match:
            query.append(("resourceVersionMatch", resource_version_match))
        result = self.request("GET", resource.path(namespace), query, timeout=timeout)
        if not isinstance(result, dict):
            raise ApiError(0, "BadResponse", f"list {resource.plural}: not an object")
        result.setdefault("items", [])
        if result["items"] is None:
            result["items"] = []
        return result

    def list_all(self, resource: Resource, namespace: str | None = None, label_selector: str | None = None,
                 field_selector: str | None = None, page_size: int = 500) -> dict[str, Any]:
        """All pages of a list joined; `metadata.resourceVersion` is the consistent snapshot's."""
        result = self.list(resource, namespace, label_selector, field_selector, limit=page_size)
        items: list[dict[str, Any]] = list(result["items"])
        meta = result.setdefault("metadata", {})
        while meta.get("continue"):
            page = self.list(resource, namespace, label_selector, field_selector, limit=page_size,
                             continue_=meta["continue"])
            items.extend(page["items"])
            meta = page.get("metadata") or {}
        result["items"] = items
        result["metadata"] = {**result["metadata"], **meta}
        result["metadata"].pop("continue", None)
        return result

    def iter_list(
        self, resource: Resource, namespace: str | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Convenience: iterate the objects of `list_all`."""
        yield from self.list_all(resource, namespace, **kwargs)["items"]

    def create(
        self, resource: Resource, obj: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """POST `obj`; apiVersion/kind are filled in from the descriptor when missing."""
        _, obj_ns = _name_ns(obj)
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **obj}
        ns = (namespace or obj_ns) if resource.namespaced else None
        if resource.namespaced and not ns:
            raise ValueError(f"creating a {resource.kind} needs a namespace")
        return self.request("POST", resource.path(ns), body=body)

    def replace(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the whole object; its metadata.resourceVersion makes it conditional (409 if stale)."""
        return self._put(resource, obj, None, "replace")

    def replace_status(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT to the /status subresource (only `status` changes; 409 if resourceVersion is stale)."""
        return self._put(resource, obj, "status", "replace_status")

    def _put(self, resource: Resource, obj: Mapping[str, Any], subresource: str | None,
             caller: str) -> dict[str, Any]:
        """The PUT both `replace` and `replace_status` send: to the object's own name and namespace."""
        name, ns = _name_ns(obj)
        if not name:
            raise ValueError(f"{caller} needs metadata.name")
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **obj}
        return self.request("PUT", resource.path(ns if resource.namespaced else None, name, subresource),
                            body=body)

    def patch(self, resource: Resource, name: str, patch: Any, namespace: str | None = None,
              patch_type: PatchType = "merge", subresource: str | None = None) -> dict[str, Any]:
        """PATCH (merge by default; strategic only works on built-in kinds; json takes a list of ops)."""
        if patch_type == "json" and not isinstance(patch, list):
            raise ValueError("a JSON patch is a list of operations")
        return self.request("PATCH", resource.path(namespace, name, subresource), body=patch,
                            content_type=PATCH_CONTENT_TYPES[patch_type])

    def patch_status(self, resource: Resource, name: str, patch: Any, namespace: str | None = None,
                     patch_type: PatchType = "merge") -> dict[str, Any]:
        """PATCH the /status subresource."""
        return self.patch(resource, name, patch, namespace, patch_type, subresource="status")

    def delete(self, resource: Resource, name: str, namespace: str | None = None,
               resource_version: str | None = None, uid: str | None = None,
               propagation_policy: str | None = None) -> dict[str, Any] | None:
        """DELETE, optionally preconditioned on resourceVersion/uid (409 when they no longer match)."""
        body: dict[str, Any] | None = None
        if resource_version or uid or propagation_policy:
            body = {"apiVersion": "v1", "kind": "DeleteOptions"}
            pre: dict[str, str] = {}
            if resource_version:
                pre["resourceVersion"] = resource_version
            if uid:
                pre["uid"] = uid
            if pre:
                body["preconditions"] = pre
            if propagation_policy:
                body["propagationPolicy"] = propagation_policy
        return self.request("DELETE", resource.path(namespace, name), body=body)

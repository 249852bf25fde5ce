"""aiohttp handlers: URL parsing, discovery, verbs and watch streaming for the lab API server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import yaml
from aiohttp import web

from lab.apiserver import authz, openapi, patches, tables
from lab.apiserver.errors import ApiError, bad_request, not_found, too_large_resource_version
from lab.apiserver.registry import ALL_VERBS, CRD_KEY, STATUS_VERBS, Registry, ResourceType
from lab.apiserver.selectors import parse_field_selector, parse_label_selector
from lab.apiserver.store import Store

log = logging.getLogger(__name__)
JsonObj = dict[str, Any]

VERSION_INFO = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-lbspeaker-lab",
    "gitCommit": "lab",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSONPATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


LINE_CACHE_SIZE = 4096  # recent events; all watchers of one event read it within a few loop turns


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), status=status, content_type="application/json"
    )


class Handlers:
    """Route every request under /api and /apis; hold per-server settings."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        bookmark_interval: float,
        rv_block_timeout: float = 3.0,
        users: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.users = users or {}  # bearer token -> user name: these requests go through RBAC
        self.registry = registry
        self.bookmark_interval = bookmark_interval
        # kube's watch cache waits this long (blockTimeout) for a resourceVersion it has not reached
        self.rv_block_timeout = rv_block_timeout
        self.open_streams: set[web.StreamResponse] = set()
        # Encoded watch lines by (type, stored object, version served): each event is encoded once,
        # not once per watcher. Stored objects are never mutated, and holding one keeps its id unique.
        self._lines: dict[tuple[str, int, str], tuple[JsonObj, bytes]] = {}

    # -- entry ----------------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except ApiError as e:
            return json_response(e.status(), e.code)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug in the lab server: answer like kube does with a 500 Status
            log.exception("internal error on %s %s", request.method, request.path)
            return json_response(
                ApiError(500, "InternalError", f"Internal error occurred: {e}").status(), 500
            )

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return json_response({"paths": ["/api", "/api/v1", "/apis", "/version", "/healthz"]})
        head = parts[0]
        if head in ("healthz", "readyz", "livez"):
            return web.Response(text="ok")
        if head == "version":
            return json_response(VERSION_INFO)
        if head == "openapi" and len(parts) >= 2 and parts[1] == "v3":
            doc = (
                openapi.root_document(self.registry)
                if len(parts) == 2
                else openapi.gv_document(self.registry, *self._openapi_gv(parts[2:]))
            )
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return json_response(doc)
        if head == "api":
            if len(parts) == 1:
                return json_response(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}
                        ],
                    }
                )
            group, version, rest = "", parts[1], parts[2:]
        elif head == "apis":
            if len(parts) == 1:
                return json_response(self._group_list())
            if len(parts) == 2:
                return json_response(self._group(parts[1]))
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return json_response(self._resource_list(group, version))
        return await self._resource(request, group, version, rest)

    @staticmethod
    def _openapi_gv(rest: list[str]) -> tuple[str, str]:
        if len(rest) == 2 and rest[0] == "api":
            return "", rest[1]
        if len(rest) == 3 and rest[0] == "apis":
            return rest[1], rest[2]
        return "-", "-"

    # -- discovery -----------------------------------------------------------------------------------
    def _group_obj(self, name: str, versions: list[str]) -> JsonObj:
        vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": vs, "preferredVersion": vs[0]}

    def _group_list(self) -> JsonObj:
        groups = [self._group_obj(g, vs) for g, vs in self.registry.groups().items()]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _group(self, name: str) -> JsonObj:
        versions = self.registry.groups().get(name)
        if not versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_obj(name, versions)}

    def _resource_list(self, group: str, version: str) -> JsonObj:
        types = self.registry.resources(group, version)
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources: list[JsonObj] = []
        for rt in sorted(types, key=lambda t: t.plural):
            entry: JsonObj = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(ALL_VERBS),
            }
            if rt.short_names:
                entry["shortNames"] = rt.short_names
            if rt.categories:
                entry["categories"] = rt.categories
            resources.append(entry)
            if rt.key == ("", "pods"):
                resources.append(
                    {
                        "name": "pods/binding",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "Binding",
                        "verbs": ["create"],
                    }
                )
            if rt.status_subresource:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": list(STATUS_VERBS),
                    }
                )
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    # -- resources -----------------------------------------------------------------------------------
    async def _resource(
        self, request: web.Request, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        watch_path = False
        if rest[0] == "watch":
            watch_path, rest = True, rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        rt = self.registry.get(group, version, plural)
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if namespace is not None and not rt.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub and not (
            (sub == "status" and rt.status_subresource)
            or (sub == "finalize" and plural == "namespaces")
            or (sub == "binding" and rt.key == ("", "pods"))
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        q = request.query
        self._authorize(request, rt, namespace, name, sub, watch_path or q.get("watch") in ("true", "1"))
        dry_run = "dryRun" in q
        method = request.method
        if name is None:
            if method == "GET":
                if watch_path or q.get("watch") in ("true", "1"):
                    return await self._watch(request, rt, namespace)
                if not q.get("continue"):
                    await self._await_rv(q.get("resourceVersion"), q.get("resourceVersionMatch") == "Exact")
                listed = self._list(rt, namespace, q)
                if tables.wants_table(request.headers.get("Accept", "")):
                    return json_response(self._table(rt, listed["items"], listed["metadata"], q))
                return json_response(listed)
            if method == "POST":
                body = await self._body(request)
                with self._field_validation(q):
                    created = self.store.create(rt, namespace, body, dry_run)
                return json_response(self.store.view(rt, created), 201)
            if method == "DELETE":
                opts = await self._body(request, optional=True)
                labels = parse_label_selector(q.get("labelSelector"))
                fields = parse_field_selector(q.get("fieldSelector"), rt.plural)
                return json_response(self.store.delete_collection(rt, namespace, labels, fields, opts))
        else:
            if rt.namespaced and namespace is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if watch_path and method == "GET":
                return await self._watch(request, rt, namespace, field_name=name)
            if sub == "finalize":
                sub = ""
            if method == "GET":
                obj = self.store.get(rt, namespace, name)
                if tables.wants_table(request.headers.get("Accept", "")):
                    meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                    return json_response(self._table(rt, [obj], meta, q))
                return json_response(obj)
            if method == "PUT":
                body = await self._body(request)
                with self._field_validation(q):
                    updated = self.store.update(rt, namespace, name, body, sub, dry_run)
                return json_response(self.store.view(rt, updated))
            if method == "PATCH":
                return json_response(
                    self.store.view(rt, await self._patch(request, rt, namespace, name, sub, dry_run))
                )
            if sub == "binding":
                if method != "POST":
                    raise ApiError(
                        405,
                        "MethodNotAllowed",
                        "the server does not allow this method on the requested resource",
                    )
                return json_response(self.store.bind_pod(rt, namespace, name, await self._body(request)), 201)
            if method == "DELETE" and not sub:
                opts = await self._body(request, optional=True) or {}
                if not isinstance(opts, dict):
                    raise bad_request("DeleteOptions must be an object")
                if "gracePeriodSeconds" in q and "gracePeriodSeconds" not in opts:
                    opts["gracePeriodSeconds"] = q["gracePeriodSeconds"]
                return json_response(self.store.delete(rt, namespace, name, opts, dry_run))
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _authorize(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        name: str | None,
        sub: str,
        watch: bool,
    ) -> None:
        """403 unless RBAC grants it, for requests with one of `users`' tokens (see lab.apiserver.authz)."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        user = self.users.get(token)
        if user is None:
            return
        verb = authz.verb_of(request.method, name is not None, watch)
        req = authz.Request(user, verb, rt.group, rt.plural, sub, namespace, name)
        objs = self.store.objects
        if not authz.allowed(
            req,
            objs.get((authz.RBAC_GROUP, "roles"), {}),
            {k[1]: v for k, v in objs.get((authz.RBAC_GROUP, "clusterroles"), {}).items()},
            objs.get((authz.RBAC_GROUP, "rolebindings"), {}).values(),
            objs.get((authz.RBAC_GROUP, "clusterrolebindings"), {}).values(),
        ):
            raise authz.forbidden(req)

    @contextlib.contextmanager
    def _field_validation(self, q: Any) -> Iterator[None]:
        """fieldValidation=Strict for the (synchronous) store call inside the block."""
        self.store.strict_fields = q.get("fieldValidation") == "Strict"
        try:
            yield
        finally:
            self.store.strict_fields = False

    def _table(
        self, rt: ResourceType, items: list[JsonObj], meta: JsonObj, q: Any, with_columns: bool = True
    ) -> JsonObj:
        crd = None
        if rt.custom:
            crd = self.store.objects.get(CRD_KEY, {}).get(("", f"{rt.plural}.{rt.group}"))
        return tables.table(rt, crd, items, meta, q.get("includeObject") or "Metadata", with_columns)

    async def _body(self, request: web.Request, optional: bool = False) -> Any:
        raw = await request.read()
        if not raw.strip():
            if optional:
                return None
            raise bad_request("the body of the request is empty")
        try:
            return json.loads(raw)
        except ValueError:
            pass
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise bad_request(f"the body of the request was in an unknown format: {e}") from None

    async def _await_rv(self, rv: str | None, exact: bool = False) -> None:
        """A read at resourceVersion `rv`: wait for the store to reach it, or answer 504 TooLarge.

        As kube-apiserver: "" and "0" need nothing; Exact goes to etcd, which refuses a future
        revision at once; otherwise the watch cache blocks up to `rv_block_timeout` first.
        """
        if not rv or rv == "0":
            return
        try:
            wanted = int(rv)
        except ValueError:
            raise bad_request(f'invalid resource version "{rv}"') from None
        if wanted <= self.store.rv:
            return
        if exact:
            raise too_large_resource_version(wanted, self.store.rv, retry_after=0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.rv_block_timeout
        while self.store.rv < wanted:
            if loop.time() >= deadline:
                raise too_large_resource_version(wanted, self.store.rv)
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    def _list(self, rt: ResourceType, namespace: str | None, q: Any) -> JsonObj:
        labels = parse_label_selector(q.get("labelSelector"))
        fields = parse_field_selector(q.get("fieldSelector"), rt.plural)
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise bad_request("limit must be an integer") from None
        return self.store.list_objects(rt, namespace, labels, fields, limit, q.get("continue") or None)

    async def _patch(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        sub: str,
        dry_run: bool,
    ) -> JsonObj:
        ctype = (request.content_type or "").lower()
        body = await self._body(request)
        if ctype == MERGE or (ctype == "application/json" and isinstance(body, dict)):

            def fn(cur: JsonObj) -> Any:
                return patches.merge_patch(cur, body)
        elif ctype == STRATEGIC:
            if rt.custom:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: "
                    f"{JSONPATCH}, {MERGE}, {APPLY}",
                )

            def fn(cur: JsonObj) -> Any:
                return patches.strategic_merge_patch(cur, body)
        elif ctype == JSONPATCH or (ctype == "application/json" and isinstance(body, list)):

            def fn(cur: JsonObj) -> Any:
                return patches.json_patch(cur, body)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{JSONPATCH}, {MERGE}" + ("" if rt.custom else f", {STRATEGIC}"),
            )
        with self._field_validation(request.query):
            return self.store.patch(rt, namespace, name, fn, sub, dry_run)

    # -- watch ---------------------------------------------------------------------------------------
    async def _watch(
        self, request: web.Request, rt: ResourceType, namespace: str | None, field_name: str | None = None
    ) -> web.StreamResponse:
        q = request.query
        labels = parse_label_selector(q.get("labelSelector"))
        fsel = q.get("fieldSelector") or ""
        if field_name:
            fsel = ",".join(x for x in (fsel, f"metadata.name={field_name}") if x)
        fields = parse_field_selector(fsel, rt.plural)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        send_initial = q.get("sendInitialEvents") in ("true", "1")
        timeout: float | None = None
        if q.get("timeoutSeconds"):
            try:
                timeout = float(q["timeoutSeconds"])
            except ValueError:
                raise bad_request("timeoutSeconds must be an integer") from None
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        try:
            if send_initial:  # a watch-list waits for its resourceVersion (the plain watch does not)
                await self._await_rv(q.get("resourceVersion"))
            watcher = self.store.watch(rt, namespace, labels, fields, q.get("resourceVersion"), send_initial)
        except ApiError as e:
            if e.code not in (410, 504):
                raise
            # kube-apiserver answers a too-old (or, for a watch-list, too-new) watch with 200 and
            # a single ERROR event
            await resp.prepare(request)
            await resp.write(self._line("ERROR", e.status()))
            await resp.write_eof()
            return resp
        if send_initial:
            watcher.queue.put_nowait(("INITIAL_END", {"rv": self.store.rv}))
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self.open_streams.add(resp)
        try:
            await resp.prepare(request)
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                wakes = [next_bookmark] if bookmarks else []
                if deadline is not None:
                    wakes.append(deadline)
                if not await watcher.queue.wait(min(wakes) if wakes else None):
                    if deadline is not None and loop.time() >= deadline:
                        break
                    if self.store.rv >= watcher.min_rv:  # never a bookmark older than the watch
                        await resp.write(self._line("BOOKMARK", self._bookmark(rt)))
                    next_bookmark = loop.time() + self.bookmark_interval
                    continue
                items: list[tuple[str, JsonObj] | None] = []
                while not watcher.queue.empty() and len(items) < 500:
                    items.append(watcher.queue.get_nowait())
                if any(i is None for i in items):
                    items = items[: items.index(None)]
                    if items:
                        await resp.write(
                            b"".join(self._event_line(rt, i, bookmarks, as_table, q) for i in items if i)
                        )
                    if watcher.cut and request.transport is not None:
                        request.transport.abort()  # abrupt: no terminating chunk
                        return resp
                    break
                await resp.write(
                    b"".join(self._event_line(rt, i, bookmarks, as_table, q) for i in items if i)
                )
            with contextlib.suppress(ConnectionResetError):
                await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.store.unwatch(watcher)
            watcher.queue.close()
            self.open_streams.discard(resp)
        return resp

    def _bookmark(self, rt: ResourceType, initial_end: bool = False, rv: int | None = None) -> JsonObj:
        meta: JsonObj = {"resourceVersion": str(self.store.rv if rv is None else rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}

    def _event_line(
        self,
        rt: ResourceType,
        item: tuple[str, JsonObj],
        bookmarks: bool,
        as_table: bool = False,
        q: Any = None,
    ) -> bytes:
        type_, obj = item
        if type_ == "INITIAL_END":
            return self._line("BOOKMARK", self._bookmark(rt, True, obj["rv"])) if bookmarks else b""
        view = self.store.view(rt, obj)
        if as_table:
            meta = {"resourceVersion": view["metadata"].get("resourceVersion", "")}
            return self._line(type_, self._table(rt, [view], meta, q or {}))
        key = (type_, id(obj), rt.api_version)
        hit = self._lines.get(key)
        if hit is not None and hit[0] is obj:
            return hit[1]
        line = self._line(type_, view)
        if len(self._lines) >= LINE_CACHE_SIZE:
            self._lines.clear()
        self._lines[key] = (obj, line)
        return line

    @staticmethod
    def _line(type_: str, obj: JsonObj) -> bytes:
        return json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"


def build_app(
    store: Store,
    registry: Registry,
    bookmark_interval: float,
    rv_block_timeout: float = 3.0,
    users: dict[str, str] | None = None,
) -> tuple[web.Application, Handlers]:
    handlers = Handlers(store, registry, bookmark_interval, rv_block_timeout, users)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handlers.handle)
    return app, handlers


__all__ = ["Handlers", "build_app", "not_found"]

"""List+watch cache of one resource (an informer without the queue), run in its own thread.

Why not `kubernetes.watch.Watch`: we need exact control over resourceVersion (every
event and BOOKMARK moves it), over 410 Gone (re-list while still serving the old
contents, then emit the difference), and over closing the stream promptly on stop.
The cache never empties itself because a watch broke: fail-static is the point.

A store that went back in time (etcd restored from a backup, or reset) is the one failure a
watch alone cannot see: kube-apiserver accepts a watch from a resourceVersion it has not
reached and keeps it silent until it gets there. So a watch that ended early or in silence is
resumed only after a cheap read at our resourceVersion; an answer that is older than ours, or
the 504 "Too large resource version", means re-list.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import urllib3

from lbspeaker.facts import key_of
from lbspeaker.kube.backoff import Backoff
from lbspeaker.kube.resources import Resource
from lbspeaker.kube.rest import ApiError, Rest

log = logging.getLogger(__name__)

Key = str  # facts.key_of: "namespace/name", or "name" for cluster-scoped objects
EventHandler = Callable[[str, dict[str, Any]], None]

ADDED, MODIFIED, DELETED, BOOKMARK, ERROR = "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"


def rv_of(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata") or {}
    rv = meta.get("resourceVersion")
    return str(rv) if rv is not None else None


class LineSplitter:
    """Turns a byte stream cut at arbitrary points into complete newline-terminated lines.

    A trailing partial line (a stream cut mid-event) is never returned, so a broken
    watch can only lose events we have not acknowledged by resourceVersion.
    """

    def __init__(self, max_line: int = 64 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf.extend(chunk)
        lines: list[bytes] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(self._buf[start:nl]).strip()
            if line:
                lines.append(line)
            start = nl + 1
        if start:
            del self._buf[:start]
        if len(self._buf) > self._max_line:
            raise ValueError("watch line exceeds the size limit")
        return lines

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line still buffered."""
        return len(self._buf)


def identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a cache whose consumers read each event as it comes (the speaker's facts index)
    needs to keep of an object: enough to name it in an Event and to tell, at a re-list, which
    objects went, came back with another uid, or changed (the resourceVersion).

    At 10,000 Services a speaker held about 55 MiB of Service dicts and 80 MiB of
    EndpointSlice dicts that nothing read after the index had read them.
    """
    meta = obj.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta}
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": kept}


def diff_snapshots(
    old: Mapping[Key, dict[str, Any]],
    new: Mapping[Key, dict[str, Any]],
    whole: Mapping[Key, dict[str, Any]] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Synthetic events that take a consumer from `old` to `new` (after a re-list).

    Same key but another uid means the object was deleted and re-created while we
    were not watching: report exactly that (DELETED then ADDED), not a MODIFIED.
    `old` and `new` are compared as stored (see `WatchCache`'s `keep`); an ADDED or MODIFIED
    carries the object from `whole` when given, the one just listed before it was trimmed.
    """
    events: list[tuple[str, dict[str, Any]]] = []
    listed = new if whole is None else whole
    for key, obj in old.items():
        if key not in new:
            events.append((DELETED, obj))
    for key, obj in new.items():
        before = old.get(key)
        if before is None:
            events.append((ADDED, listed[key]))
            continue
        uid_before = (before.get("metadata") or {}).get("uid")
        uid_now = (obj.get("metadata") or {}).get("uid")
        if uid_before and uid_now and uid_before != uid_now:
            events.append((DELETED, before))
            events.append((ADDED, listed[key]))
        elif rv_of(before) != rv_of(obj) or (rv_of(obj) is None and before != obj):
            events.append((MODIFIED, listed[key]))
    return events


def rv_went_back(current: str | None, answered: str | None) -> bool:
    """`answered` is an older resourceVersion than `current`: the server's store went back in time.

    resourceVersions are opaque by contract, but etcd's revisions (and the lab server's) are
    increasing integers; anything else is never called older.
    """
    if not current or not answered:
        return False
    try:
        return int(answered) < int(current)
    except ValueError:
        return False


class StoreBehind(Exception):
    """The server's store is behind our resourceVersion (restored, reset): re-list, as after 410."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WatchGone(Exception):
    """The resourceVersion we watch from is too old (HTTP 410 or an ERROR event with code 410)."""


def _resume_error(exc: ApiError) -> Exception:
    """What an error answer to a read at our resourceVersion means: too old, too new, or neither."""
    if exc.gone:
        return WatchGone(str(exc))
    if exc.too_large_resource_version:
        return StoreBehind(exc.message or str(exc), exc.retry_after_s)
    return exc


class _StreamBroken(Exception):
    """The watch stream ended badly (reset, timeout, garbage); resume from the last resourceVersion."""


def iter_chunks(resp: Any, chunk_size: int = 65536) -> Iterator[bytes]:
    """Yield bytes as they arrive (not `chunk_size` at a time: `read()` would block for a full buffer)."""
    if getattr(resp, "chunked", False) and resp.supports_chunked_reads():
        yield from resp.read_chunked(decode_content=True)
        return
    while True:
        data = resp.read1(chunk_size)
        if not data:
            return
        yield data


class WatchCache:
    """Local copy of one resource kept current by list+watch; see the module docstring.

    Objects handed out are the decoded dicts themselves: treat them as read-only.
    `on_event(type, obj)` runs in the cache thread after the store was updated; an
    exception in it is logged and does not stop the cache.

    `keep(obj)` is what the store holds of each object (default: all of it). Handlers always
    see the whole object; a DELETED found by a re-list carries what was kept. What is kept
    must carry the uid and the resourceVersion, which a re-list compares (`identity` does).
    """

    def __init__(
        self,
        rest: Rest,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        on_event: EventHandler | None = None,
        *,
        backoff_initial_s: float = 0.2,
        backoff_cap_s: float = 8.0,
        watch_timeout_s: int = 300,
        page_size: int = 500,
        name: str | None = None,
        keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if namespace and not resource.namespaced:
            raise ValueError(f"{resource.kind} is cluster-scoped; a cache of it takes no namespace")
        self.rest = rest
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self._handlers: list[EventHandler] = [on_event] if on_event else []
        self._keep = keep
        self._backoff = Backoff(initial=backoff_initial_s, cap=backoff_cap_s)
        self.watch_timeout_s = watch_timeout_s
        self.page_size = page_size
        self.name = name or f"watch-{resource.plural}" + (f"-{namespace}" if namespace else "")

        self._lock = threading.RLock()
        self._items: dict[Key, dict[str, Any]] = {}
        self._rv: str | None = None
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread: threading.Thread | None = None
        self._need_list = True
        self._verify_rv = False  # read at our resourceVersion before the next watch (see the docstring)
        self._watching = False

        # Counters for metrics and tests.
        self.lists = 0  # successful lists, the first one included
        self.relists = 0  # lists after the first (410 Gone, or errors we could not resume from)
        self.reconnects = 0  # watches re-opened after an error (not after a clean server timeout)
        self.watches = 0  # watch requests opened successfully
        self.events = 0  # ADDED/MODIFIED/DELETED received from watches
        self.bookmarks = 0
        self.probes = 0  # reads at our resourceVersion before resuming a watch
        self.store_behind = 0  # times the server's store was found behind us (then re-listed)
        self.last_error: str | None = None

    # -- public API --------------------------------------------------------------------------

    def start(self) -> WatchCache:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; closes the streaming response so this returns promptly."""
        self._stop.set()
        with self._lock:
            resp = self._resp
        if resp is not None:
            _abort(resp)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def synced(self) -> bool:
        """True once the first list is in (it stays true through later watch failures)."""
        return self._synced.is_set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    @property
    def watching(self) -> bool:
        """A watch is open right now (for readiness: a cache can be synced yet stale)."""
        return self._watching

    @property
    def resource_version(self) -> str | None:
        with self._lock:
            return self._rv

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._items)

    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(f"{namespace}/{name}" if namespace else name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # a bug must not freeze the cache: log, back off, re-list
                log.exception("%s: unexpected error; re-listing", self.name)
                self.last_error = f"unexpected: {exc!r}"
                self._need_list = True
                self._stop.wait(self._backoff.next())

    def _step(self) -> None:
        """One list (if needed) and one watch, with the error handling that keeps the cache alive."""
        if self._need_list:
            try:
                self._list()
            except (ApiError, OSError, urllib3.exceptions.HTTPError, ValueError) as exc:
                self.last_error = f"list: {exc}"
                delay = self._backoff.next()
                log.warning("%s: list failed (%s); retrying in %.2fs", self.name, exc, delay)
                self._stop.wait(delay)
                return
        # Until a watch runs its full term and delivers something, assume it may have to be verified.
        verify, self._verify_rv = self._verify_rv, True
        try:
            if verify:
                self._probe()
            got_something = self._watch_once()
        except WatchGone as exc:
            log.info("%s: resourceVersion %s is gone (%s); re-listing", self.name, self._rv, exc)
            self._need_list = True
            return
        except StoreBehind as exc:
            self.store_behind += 1
            self.last_error = f"store behind: {exc}"
            delay = max(self._backoff.next(), min(exc.retry_after_s or 0.0, 5.0))
            log.warning(
                "%s: the API server's store is behind our resourceVersion %s (%s): it was restored or "
                "reset; re-listing in %.2fs",
                self.name,
                self._rv,
                exc,
                delay,
            )
            self._need_list = True
            self._stop.wait(delay)
            return
        except (ApiError, _StreamBroken, OSError, urllib3.exceptions.HTTPError) as exc:
            if self._stop.is_set():
                return
            self.reconnects += 1
            self.last_error = f"watch: {exc}"
            delay = self._backoff.next()
            log.warning("%s: watch failed (%s); resuming from %s in %.2fs", self.name, exc, self._rv, delay)
            self._stop.wait(delay)
            return
        if got_something:
            self._backoff.reset()
        elif not self._stop.is_set():
            # A server that ends watches at once without a word: do not spin on it.
            self._stop.wait(self._backoff.next())

    def _list(self) -> None:
        result = self.rest.list_all(
            self.resource, self.namespace, self.label_selector, self.field_selector, page_size=self.page_size
        )
        new_items = {key_of(o): o for o in result["items"]}
        rv = str((result.get("metadata") or {}).get("resourceVersion") or "") or None
        kind = self.resource.kind
        for obj in new_items.values():
            # Items of a list carry no apiVersion/kind; add them so consumers can tell objects apart.
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", kind)
        kept = {k: self._keep(o) for k, o in new_items.items()} if self._keep else new_items
        with self._lock:
            old = self._items
            self._items = kept
            self._rv = rv
            first = self.lists == 0
            self.lists += 1
            if not first:
                self.relists += 1
        self._need_list = False
        self._verify_rv = False  # this resourceVersion came from the server just now
        self._synced.set()
        self._backoff.reset()
        for type_, obj in diff_snapshots(old, kept, new_items):
            self._dispatch(type_, obj)
        log.debug("%s: listed %d objects at resourceVersion %s", self.name, len(new_items), rv)

    def _probe(self) -> None:
        """One cheap read at our resourceVersion: raises StoreBehind if the server has not reached it.

        kube answers 504 "Too large resource version" (after waiting up to 3 s); a server that
        does not wait answers with an older resourceVersion. Selectors are left out: they do not
        change the answer and only cost the server.
        """
        if not self._rv:
            return
        self.probes += 1
        try:
            result = self.rest.list(
                self.resource,
                self.namespace,
                limit=1,
                resource_version=self._rv,
                resource_version_match="NotOlderThan",
            )
        except ApiError as exc:
            raise _resume_error(exc) from exc
        answered = str((result.get("metadata") or {}).get("resourceVersion") or "") or None
        if rv_went_back(self._rv, answered):
            raise StoreBehind(f"a list at resourceVersion {self._rv} answered {answered}")

    def _watch_once(self) -> bool:
        """Run one watch request to its end; returns whether it delivered any line at all."""
        timeout_s = int(self.watch_timeout_s * (1.0 + random.random()))
        query: list[tuple[str, str]] = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_s)),
        ]
        if self._rv:
            query.append(("resourceVersion", self._rv))
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        try:
            resp = self.rest.stream(self.resource.path(self.namespace), query, read_timeout=timeout_s + 30)
        except ApiError as exc:
            raise _resume_error(exc) from exc
        with self._lock:
            if self._stop.is_set():
                _abort(resp)
                return False
            self._resp = resp
        self.watches += 1
        self._watching = True
        started = time.monotonic()
        got = False
        try:
            splitter = LineSplitter()
            try:
                for chunk in iter_chunks(resp):
                    for line in splitter.feed(chunk):
                        got = True
                        self._handle_line(line)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if self._stop.is_set():
                    return got
                raise _StreamBroken(str(exc)) from exc
            except AttributeError:
                # stop() closed the response under the reader (urllib3 drops its file object).
                if self._stop.is_set():
                    return got
                raise
            if splitter.pending and not self._stop.is_set():
                raise _StreamBroken(f"stream ended inside an event ({splitter.pending} bytes)")
            # The server ended it at our timeout after delivering something: resume without a check.
            self._verify_rv = not (got and time.monotonic() - started >= timeout_s - 1)
        finally:
            self._watching = False
            with self._lock:
                self._resp = None
            _abort(resp)
            with contextlib.suppress(Exception):
                resp.release_conn()  # give the pool its slot back (a closed connection is replaced)
        return got or time.monotonic() - started >= 1.0

    def _handle_line(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            type_ = event["type"]
            obj = event["object"]
        except (ValueError, KeyError, TypeError) as exc:
            raise _StreamBroken(f"undecodable watch line: {exc}") from exc
        if type_ == ERROR:
            raise _resume_error(ApiError.from_status(obj if isinstance(obj, Mapping) else {}))
        if not isinstance(obj, dict):
            raise _StreamBroken(f"watch event {type_} without an object")
        rv = rv_of(obj)
        if rv_went_back(self._rv, rv):
            raise StoreBehind(f"watch {type_} at resourceVersion {rv}, older than ours ({self._rv})")
        if type_ == BOOKMARK:
            self.bookmarks += 1
            if rv:
                with self._lock:
                    self._rv = rv
            return
        if type_ not in (ADDED, MODIFIED, DELETED):
            log.warning("%s: ignoring watch event of type %r", self.name, type_)
            return
        obj.setdefault("apiVersion", self.resource.api_version)
        obj.setdefault("kind", self.resource.kind)
        key = key_of(obj)
        with self._lock:
            if type_ == DELETED:
                self._items.pop(key, None)
            else:
                self._items[key] = self._keep(obj) if self._keep else obj
            if rv:
                self._rv = rv
        self.events += 1
        self._dispatch(type_, obj)

    def _dispatch(self, type_: str, obj: dict[str, Any]) -> None:
        for handler in self._handlers:
            try:
                handler(type_, obj)
            except Exception:
                log.exception("%s: event handler failed on %s %s", self.name, type_, key_of(obj))


def _abort(resp: Any) -> None:
    """Close a streaming response from any thread; shutdown() wakes a reader blocked in recv()."""
    # Best effort: the response may already be released or have lost its socket.
    with contextlib.suppress(Exception):
        resp.shutdown()
    with contextlib.suppress(Exception):
        resp.close()


def wait_all_synced(caches: Iterable[WatchCache], timeout: float) -> bool:
    """Wait for several caches against one shared deadline."""
    deadline = time.monotonic() + timeout
    return all(c.wait_synced(max(0.0, deadline - time.monotonic())) for c in caches)

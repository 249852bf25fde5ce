"""WatchCache against a scripted fake server: each list/watch call answers from a script, so the
error paths a real server rarely shows (HTTP 410 on open, ERROR events, garbage, half lines) are covered."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lbspeaker.kube.cache import WatchCache
from lbspeaker.kube.resources import CONFIGMAPS
from lbspeaker.kube.rest import ApiError, ConnectionFailure
from tests.helpers import Recorder, wait_for


def o(name: str, rv: int, **data: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "d", "resourceVersion": str(rv), "uid": "u-" + name},
        "data": data,
    }


def line(type_: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": type_, "object": obj}).encode() + b"\n"


class FakeResp:
    """A non-chunked streaming response made of byte chunks."""

    chunked = False

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    def read1(self, n: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def shutdown(self) -> None:
        pass

    def close(self) -> None:
        pass


class BlockingResp(FakeResp):
    """Blocks (like an idle watch) until shut down."""

    def __init__(self) -> None:
        super().__init__([])
        self.closed = threading.Event()

    def read1(self, n: int) -> bytes:
        self.closed.wait(10)
        return b""

    def shutdown(self) -> None:
        self.closed.set()


class ScriptRest:
    def __init__(self, lists: list[Any], streams: list[Any]) -> None:
        self.lists = lists
        self.streams = streams
        self.list_calls = 0
        self.watch_rvs: list[str | None] = []

    def list_all(self, *args: Any, **kwargs: Any) -> Any:
        self.list_calls += 1
        step = self.lists.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def stream(self, path: str, query: list[tuple[str, str]], read_timeout: float) -> Any:
        q = dict(query)
        assert q["watch"] == "true" and q["allowWatchBookmarks"] == "true" and int(q["timeoutSeconds"]) > 0
        self.watch_rvs.append(q.get("resourceVersion"))
        step = self.streams.pop(0) if self.streams else BlockingResp()
        if isinstance(step, Exception):
            raise step
        return step


def listing(rv: int, *objs: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "ConfigMapList",
        "metadata": {"resourceVersion": str(rv)},
        "items": [dict(x) for x in objs],
    }


@pytest.fixture
def run() -> Iterator[Any]:
    made: list[WatchCache] = []

    def make(rest: ScriptRest, rec: Recorder) -> WatchCache:
        c = WatchCache(rest, CONFIGMAPS, on_event=rec, backoff_initial_s=0.001, backoff_cap_s=0.01)  # type: ignore[arg-type]
        made.append(c.start())
        return c

    yield make
    for c in made:
        c.stop()


def test_http_410_on_open_relists_and_diffs(run: Any) -> None:
    rest = ScriptRest(
        lists=[listing(10, o("a", 5), o("b", 6)), listing(20, o("b", 15), o("c", 18))],
        streams=[ApiError(410, "Gone", "too old")],
    )
    rec = Recorder()
    c = run(rest, rec)
    wait_for(lambda: c.relists == 1 and len(rest.watch_rvs) >= 2, 5)
    assert rest.watch_rvs[:2] == ["10", "20"]
    assert sorted((t, x["metadata"]["name"]) for t, x in rec.events[2:]) == [
        ("ADDED", "c"),
        ("DELETED", "a"),
        ("MODIFIED", "b"),
    ]
    assert {x["metadata"]["name"] for x in c.items()} == {"b", "c"}
    assert c.get("d", "b")["kind"] == "ConfigMap"


def test_error_event_other_than_410_resumes_from_last_rv(run: Any) -> None:
    rest = ScriptRest(
        lists=[listing(10)],
        streams=[
            FakeResp(
                [
                    line("ADDED", o("a", 11)),
                    line(
                        "ERROR", {"kind": "Status", "code": 500, "reason": "InternalError", "message": "boom"}
                    ),
                ]
            ),
            FakeResp([line("BOOKMARK", {"metadata": {"resourceVersion": "30"}}), line("ADDED", o("b", 31))]),
        ],
    )
    rec = Recorder()
    c = run(rest, rec)
    wait_for(lambda: len(rest.watch_rvs) >= 3, 5)
    assert rest.watch_rvs[:3] == ["10", "11", "31"]
    assert c.reconnects == 1 and c.relists == 0 and c.bookmarks == 1
    assert rec.names() == ["a", "b"]


def test_error_event_410_relists(run: Any) -> None:
    rest = ScriptRest(
        lists=[listing(10, o("a", 5)), listing(50, o("a", 5))],
        streams=[
            FakeResp([line("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "old"})])
        ],
    )
    rec = Recorder()
    c = run(rest, rec)
    wait_for(lambda: len(rest.watch_rvs) >= 2, 5)
    assert rest.watch_rvs[:2] == ["10", "50"] and c.relists == 1
    assert rec.events == [("ADDED", c.get("d", "a"))]  # nothing changed: no synthetic events


def test_half_line_and_garbage_are_not_applied(run: Any) -> None:
    full = line("MODIFIED", o("a", 12, k="v"))
    rest = ScriptRest(
        lists=[listing(10, o("a", 5))],
        streams=[
            FakeResp([line("ADDED", o("b", 11)), full[:20]]),  # cut inside an event
            FakeResp([b"not json\n"]),
            FakeResp([full[:7], full[7:]]),  # an event split across reads
        ],
    )
    rec = Recorder()
    c = run(rest, rec)
    wait_for(lambda: len(rest.watch_rvs) >= 4, 5)
    assert rest.watch_rvs[:4] == ["10", "11", "11", "12"]
    assert c.get("d", "a")["data"] == {"k": "v"} and c.reconnects == 2


def test_list_failures_back_off_and_keep_unsynced(run: Any) -> None:
    rest = ScriptRest(
        lists=[ConnectionFailure("refused"), ApiError(500, "InternalError", "x"), listing(3, o("a", 2))],
        streams=[],
    )
    rec = Recorder()
    c = run(rest, rec)
    assert c.wait_synced(5)
    assert rest.list_calls == 3 and rec.names() == ["a"]


def test_handler_exception_does_not_stop_the_cache(run: Any) -> None:
    rest = ScriptRest(
        lists=[listing(10)], streams=[FakeResp([line("ADDED", o("a", 11)), line("ADDED", o("b", 12))])]
    )
    seen: list[str] = []

    def bad(type_: str, obj: dict[str, Any]) -> None:
        seen.append(obj["metadata"]["name"])
        raise RuntimeError("handler bug")

    c = run(rest, bad)
    wait_for(lambda: seen == ["a", "b"], 5)
    assert len(c) == 2


def test_stop_interrupts_an_idle_watch(run: Any) -> None:
    rest = ScriptRest(lists=[listing(1)], streams=[])
    c = run(rest, Recorder())
    wait_for(lambda: c.watching, 5)
    c.stop(timeout=2)
    assert c._thread is not None and not c._thread.is_alive()


def test_unexpected_error_relists_instead_of_dying(run: Any) -> None:
    rest = ScriptRest(lists=[listing(10, o("a", 5)), listing(20, o("a", 5))], streams=[RuntimeError("bug")])
    c = run(rest, Recorder())
    wait_for(lambda: len(rest.watch_rvs) >= 2, 5)
    assert rest.list_calls == 2 and rest.watch_rvs[:2] == ["10", "20"] and "bug" in (c.last_error or "")
    assert c._thread is not None and c._thread.is_alive()

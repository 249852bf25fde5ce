"""WatchCache against a scripted fake server: each list/watch call answers from a script, so the
error paths a real server rarely shows (HTTP 410 on open, ERROR events, garbage, half lines) are covered."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from lbspeaker.kube.cache import WatchCache, rv_went_back
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
    def __init__(self, lists: list[Any], streams: list[Any], probes: list[Any] | None = None) -> None:
        self.lists = lists
        self.streams = streams
        self.probes = probes or []  # answers to the cache's one-item reads before a resumed watch
        self.list_calls = 0
        self.probe_rvs: list[str | None] = []
        self.watch_rvs: list[str | None] = []

    def list(self, resource: Any, namespace: Any = None, **kwargs: Any) -> Any:
        """A probe: by default the server has reached the resourceVersion asked for."""
        assert kwargs["limit"] == 1 and kwargs["resource_version_match"] == "NotOlderThan"
        self.probe_rvs.append(kwargs["resource_version"])
        step = self.probes.pop(0) if self.probes else listing(int(kwargs["resource_version"]))
        if isinstance(step, Exception):
            raise step
        return step

    def list_all(self, *args: Any, **kwargs: Any) -> Any:
        self.list_calls += 1
        step = self.lists.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def stream(self, path: str, query: Sequence[tuple[str, str]], read_timeout: float) -> Any:
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


TOO_LARGE = {
    "kind": "Status",
    "status": "Failure",
    "code": 504,
    "reason": "Timeout",
    "message": "Timeout: Too large resource version: 50, current: 7",
    "details": {
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": 1,
    },
}


def test_bookmark_older_than_ours_relists(run: Any) -> None:
    """A server whose store was reset answers a resumed watch with an older resourceVersion."""
    rest = ScriptRest(
        lists=[listing(50, o("a", 40)), listing(8, o("new", 7))],
        streams=[FakeResp([line("BOOKMARK", {"metadata": {"resourceVersion": "7"}})])],
    )
    rec = Recorder()
    c = run(rest, rec)
    wait_for(lambda: c.relists == 1 and len(rest.watch_rvs) >= 2, 5)
    assert rest.watch_rvs[:2] == ["50", "8"] and c.store_behind == 1 and c.bookmarks == 0
    assert {x["metadata"]["name"] for x in c.items()} == {"new"}
    assert sorted((t, x["metadata"]["name"]) for t, x in rec.events[1:]) == [
        ("ADDED", "new"),
        ("DELETED", "a"),
    ]


def test_event_older_than_ours_relists(run: Any) -> None:
    rest = ScriptRest(
        lists=[listing(50, o("a", 40)), listing(9, o("a", 3), o("b", 9))],
        streams=[FakeResp([line("ADDED", o("b", 9))])],
    )
    c = run(rest, Recorder())
    wait_for(lambda: c.relists == 1 and len(rest.watch_rvs) >= 2, 5)
    assert rest.watch_rvs[:2] == ["50", "9"] and c.store_behind == 1
    assert {x["metadata"]["name"] for x in c.items()} == {"a", "b"}


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(ApiError.from_status(TOO_LARGE, 504), id="504-too-large"),
        pytest.param(listing(7), id="older-list"),
    ],
)
def test_probe_finds_the_store_behind_and_relists(run: Any, answer: Any) -> None:
    """The watch broke; the re-opened one would be silent (kube), so a read at our RV decides."""
    rest = ScriptRest(
        lists=[listing(50, o("a", 40)), listing(8, o("new", 7))],
        streams=[ConnectionFailure("reset")],
        probes=[answer],
    )
    c = run(rest, Recorder())
    wait_for(lambda: c.relists == 1 and len(rest.watch_rvs) >= 2, 5)
    assert rest.probe_rvs[0] == "50" and rest.watch_rvs[:2] == ["50", "8"] and c.store_behind == 1
    assert {x["metadata"]["name"] for x in c.items()} == {"new"}


def test_watch_error_too_large_relists(run: Any) -> None:
    rest = ScriptRest(
        lists=[listing(50, o("a", 40)), listing(8)],
        streams=[FakeResp([line("ERROR", TOO_LARGE)])],
    )
    c = run(rest, Recorder())
    wait_for(lambda: c.relists == 1 and len(rest.watch_rvs) >= 2, 5)
    assert rest.watch_rvs[:2] == ["50", "8"] and c.store_behind == 1 and len(c) == 0


def test_probe_that_finds_our_rv_resumes_without_relisting(run: Any) -> None:
    rest = ScriptRest(lists=[listing(10, o("a", 5))], streams=[ConnectionFailure("reset")])
    c = run(rest, Recorder())
    wait_for(lambda: len(rest.watch_rvs) >= 2, 5)
    assert rest.watch_rvs[:2] == ["10", "10"] and rest.probe_rvs[:1] == ["10"]
    assert c.relists == 0 and c.store_behind == 0


@pytest.mark.parametrize(
    ("current", "answered", "back"),
    [
        ("50", "7", True),
        ("50", "50", False),
        ("50", "51", False),
        (None, "7", False),
        ("50", None, False),
        ("abc", "7", False),  # opaque resourceVersions are never called older
        ("9", "10", False),  # numerically, not as strings
        ("10", "9", True),
    ],
)
def test_rv_went_back(current: str | None, answered: str | None, back: bool) -> None:
    assert rv_went_back(current, answered) is back


@pytest.mark.parametrize(
    ("status", "too_large"),
    [
        (TOO_LARGE, True),
        ({**TOO_LARGE, "details": {}}, True),  # kube before 1.17: only the message says it
        (
            {
                **TOO_LARGE,
                "message": "Timeout: x",
                "details": {"causes": [{"message": "Too large resource version"}]},
            },
            True,
        ),
        ({"code": 504, "reason": "Timeout", "message": "Timeout: request did not complete"}, False),
        ({"code": 410, "reason": "Expired", "message": "too old resource version: 1 (5)"}, False),
    ],
)
def test_too_large_resource_version_is_recognised(status: dict[str, Any], too_large: bool) -> None:
    assert ApiError.from_status(status).too_large_resource_version is too_large

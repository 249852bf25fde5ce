"""OwnedStatusWriter against the lab API server, with the caches wired as the speaker wires them:
someone else's deletion or edit of our status objects is undone from the cache's events (no
periodic full pass needed), and the echoes of our own writes cost no write."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.apiserver import LabApiServer
from lbspeaker.kube.cache import WatchCache
from lbspeaker.kube.client import Timeouts, load_api_client
from lbspeaker.kube.resources import NAMESPACES, SERVICEL2STATUSES
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.speaker.status import L2_STATUS, OwnedStatusWriter, l2_fields, node_selector
from tests.helpers import wait_for

pytestmark = pytest.mark.component

NS = "lbspeaker-system"
NODE = "node-a"


class CountingRest(Rest):
    """Counts the writes (POST, PATCH, PUT, DELETE) made through it."""

    writes = 0

    def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if method != "GET":
            self.writes += 1
        return super().request(method, path, *args, **kwargs)


@pytest.fixture
def writer(
    apiserver_with_crds: LabApiServer, kubeconfig: Path
) -> Iterator[tuple[OwnedStatusWriter, CountingRest]]:
    rest = CountingRest(load_api_client(str(kubeconfig)), timeouts=Timeouts(connect=2, read=5))
    rest.create(NAMESPACES, {"metadata": {"name": NS}})
    rest.writes = 0
    holder: dict[str, OwnedStatusWriter] = {}
    cache = WatchCache(rest, SERVICEL2STATUSES, namespace=NS, label_selector=node_selector(NODE),
                       on_event=lambda t, o: holder["w"].observed(L2_STATUS, t, o))
    # A resync an hour away: whatever is repaired below is repaired by the events.
    w = holder["w"] = OwnedStatusWriter(rest, NS, NODE, {L2_STATUS: cache}, retry_s=0.2, resync_s=3600)
    cache.start()
    assert cache.wait_synced(5)
    w.start()
    yield w, rest
    w.stop()
    cache.stop()


def status_of(rest: Rest, name: str) -> dict[str, Any] | None:
    try:
        return rest.get(SERVICEL2STATUSES, name, NS).get("status") or {}
    except ApiError as exc:
        if exc.not_found:
            return None
        raise


def test_someone_elses_delete_or_edit_is_undone(writer: tuple[OwnedStatusWriter, CountingRest]) -> None:
    w, rest = writer
    keys = [f"default/web{i}" for i in range(3)]
    w.set_desired(L2_STATUS, {k: l2_fields(["eth0"]) for k in keys})
    names = [L2_STATUS.name(k, NODE) for k in keys]
    wait_for(lambda: all((status_of(rest, n) or {}).get("interfaces") == [{"name": "eth0"}] for n in names),
             timeout=10)
    # Echoes of our own writes arrive and change nothing: no further write.
    wait_for(lambda: not w._written[L2_STATUS], timeout=5,
             message=lambda: f"still trusting our writes over the cache: {w._written[L2_STATUS]}")
    assert rest.writes == 6  # a create and a status patch each

    before = rest.writes
    rest.delete(SERVICEL2STATUSES, names[0], NS)
    wait_for(lambda: (status_of(rest, names[0]) or {}).get("interfaces") == [{"name": "eth0"}], timeout=5,
             message="a status object deleted by someone else was not put back")

    rest.patch_status(SERVICEL2STATUSES, names[1], {"status": {"interfaces": [{"name": "evil0"}]}}, NS)
    wait_for(lambda: (status_of(rest, names[1]) or {}).get("interfaces") == [{"name": "eth0"}], timeout=5,
             message="a status edited by someone else was not written back")
    assert w.in_sync
    wait_for(lambda: rest.writes == before + 5, timeout=5)  # ours: delete, create + patch, patch back

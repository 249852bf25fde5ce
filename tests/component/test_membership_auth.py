"""Heartbeat keys end to end against the lab API server (issue 13 #2): the controller's SecretKeeper
creates the Secret, speakers load it through their watch, a rotation moves no IP, and a speaker
without a key runs on Leases alone (never on unauthenticated heartbeats)."""

from __future__ import annotations

import base64
import threading

import pytest

from lbspeaker.election import elect_l2
from lbspeaker.kube.memberlist import SECRET_NAME, SecretKeeper, keys_of
from lbspeaker.kube.resources import SECRETS
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.speaker.heartbeat import PeerState, Reason
from tests.component.test_speaker import (  # noqa: F401  (fixtures)
    IP,
    NODES_,
    NS,
    SpeakerFactory,
    owners,
    rest,
    speakers,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.component


def test_secret_keeper_creates_once_and_recreates(rest: Rest) -> None:  # noqa: F811
    rest.delete(SECRETS, SECRET_NAME, NS)  # the speakers' fixture made one: start from none
    keeper = SecretKeeper(rest, NS, recheck_s=0.2)
    assert keeper.ensure()
    first = rest.get(SECRETS, SECRET_NAME, NS)
    assert len(keys_of(first)) == 1 and first["type"] == "Opaque"
    assert keeper.ensure()  # an existing Secret is never changed (rotation is the operator's)
    assert rest.get(SECRETS, SECRET_NAME, NS)["data"] == first["data"]
    keeper.start()
    try:
        rest.delete(SECRETS, SECRET_NAME, NS)

        def recreated() -> bool:
            try:
                return bool(keys_of(rest.get(SECRETS, SECRET_NAME, NS)))
            except ApiError as exc:
                if exc.not_found:
                    return False
                raise

        wait_for(recreated, timeout=10)
        assert rest.get(SECRETS, SECRET_NAME, NS)["data"] != first["data"]  # a fresh key
    finally:
        keeper.stop()


def test_rotation_moves_no_ip(rest: Rest, speakers: SpeakerFactory) -> None:  # noqa: F811
    spk, anns = {}, {}
    for n in NODES_:
        spk[n], anns[n] = speakers(n, heartbeat_key_delay=1.0)
    expected = elect_l2(IP, NODES_)
    wait_for(lambda: owners(anns) == [expected], timeout=15, message=lambda: f"owners {owners(anns)}")
    hbs = {n: s.heartbeat for n, s in spk.items()}
    assert all(hbs.values())

    def all_alive() -> bool:
        return all(hb.states().get(m) is PeerState.ALIVE for n, hb in hbs.items() if hb
                   for m in NODES_ if m != n)

    wait_for(all_alive, timeout=10)
    old = rest.get(SECRETS, SECRET_NAME, NS)
    old_id = next(iter(keys_of(old)))
    seen: list[list[str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.01):
            seen.append(owners(anns))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # Step 1: add a newer key. Everyone accepts it at once and signs with it a second later.
        old["data"]["key-99990101000000"] = base64.b64encode(b"n" * 32).decode()
        rest.replace(SECRETS, old)
        wait_for(lambda: all(hb.signing_key_id == "key-99990101000000" for hb in hbs.values() if hb),
                 timeout=15)
        # Step 2: remove the old key.
        cur = rest.get(SECRETS, SECRET_NAME, NS)
        del cur["data"][old_id]
        rest.replace(SECRETS, cur)
        wait_for(lambda: all(hb.stats()["keys"] == 1 for hb in hbs.values() if hb), timeout=10)
        received = {n: hb.received for n, hb in hbs.items() if hb}
        wait_for(lambda: all(hb.received > received[n] + 5 for n, hb in hbs.items() if hb), timeout=10)
        assert all_alive()
    finally:
        stop.set()
        watcher.join()
    assert seen and all(o == [expected] for o in seen), sorted({tuple(o) for o in seen})
    for hb in hbs.values():
        assert hb is not None
        assert hb.rejects.counts.get(Reason.UNKNOWN_KEY, 0) == 0
        assert hb.rejects.counts.get(Reason.BAD_MAC, 0) == 0


def test_without_the_secret_speakers_run_on_leases_alone(rest: Rest, speakers: SpeakerFactory) -> None:  # noqa: F811
    rest.delete(SECRETS, SECRET_NAME, NS)
    spk, anns = {}, {}
    for n in NODES_:
        spk[n], anns[n] = speakers(n)
    expected = elect_l2(IP, NODES_)
    wait_for(lambda: owners(anns) == [expected], timeout=15, message=lambda: f"owners {owners(anns)}")
    for s in spk.values():
        hb = s.heartbeat
        assert hb is not None and not hb.authenticated and hb.signing_key_id is None
        wait_for(lambda hb=hb: hb.rejects.counts.get(Reason.NO_KEY, 0) == 0 and hb.states() == {}, timeout=5)
    port = spk[expected].health.port  # type: ignore[union-attr]
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert "lbspeaker_speaker_heartbeat_keys 0.0" in metrics
    assert 'lbspeaker_speaker_heartbeat_rejected_total{reason="bad_mac"} 0.0' in metrics
    # Graceful handover still works on Leases (release at once).
    spk[expected].stop()
    rest_nodes = {n for n in NODES_ if n != expected}
    wait_for(lambda: owners({n: anns[n] for n in rest_nodes}) == [elect_l2(IP, rest_nodes)], timeout=10)

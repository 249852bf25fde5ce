"""recvmmsg/sendmmsg batch I/O, on a datagram socketpair (the same calls as on a packet socket)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from lbspeaker.l2.mmsg import MmsgIO

pytestmark = pytest.mark.skipif(not MmsgIO.available(), reason="libc without recvmmsg/sendmmsg")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_receives_every_waiting_frame_in_one_call_and_nothing_when_idle(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    io = MmsgIO(a, batch=8)
    assert io.recv() == []
    frames = [bytes([i]) * (42 + i) for i in range(5)]
    for f in frames:
        b.send(f)
    assert io.recv() == frames
    assert io.recv() == []


def test_batch_bound_and_order(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    io = MmsgIO(a, batch=4)
    frames = [i.to_bytes(2, "big") for i in range(10)]
    for f in frames:
        b.send(f)
    got = io.recv() + io.recv() + io.recv()
    assert got == frames
    assert [len(io.recv())] == [0]


def test_sends_all_frames_in_batches(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    io = MmsgIO(a, batch=3)
    frames = [bytes([i]) * 60 for i in range(7)]
    assert io.send(frames) == 7
    assert [b.recv(256) for _ in frames] == frames

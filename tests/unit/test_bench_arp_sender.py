"""bench/arp_throughput.py's flood sender and receiver windows, on a fake clock: the sender
stops at its deadline however far behind its pace it falls (the membership lab's 10 s flood
ran 28.6 s), and replies are counted over the window asked for."""

from __future__ import annotations

import pytest

from bench.arp_throughput import replies_between, send_loop, send_plan


@pytest.mark.parametrize(
    ("sent", "count", "elapsed", "rate", "batch", "expected"),
    [
        (0, 1000, 0.0, 1000.0, 64, 1),  # paced: the first request is due at once
        (1, 1000, 0.0, 1000.0, 64, 0),  # ahead of the pace: wait
        (10, 1000, 0.0105, 1000.0, 64, 1),  # on pace: one more is due
        (0, 1_300_000, 5.0, 130_000.0, 64, 64),  # far behind: one batch, not 650,000
        (990, 1000, 5.0, 1000.0, 64, 10),  # the count caps what is due
        (0, 1000, 0.0, 0.0, 64, 64),  # unpaced: a full batch
        (980, 1000, 0.0, 0.0, 64, 20),  # unpaced, near the count
        (1000, 1000, 9.0, 0.0, 64, 0),  # done
    ],
)
def test_send_plan(sent: int, count: int, elapsed: float, rate: float, batch: int, expected: int) -> None:
    assert send_plan(sent, count, elapsed, rate, batch) == expected


class FakeClock:
    """Monotonic time that advances only when frames are sent (`per_frame` s each) or slept."""

    def __init__(self, per_frame: float) -> None:
        self.now = 1000.0
        self.per_frame = per_frame
        self.batches: list[tuple[int, int]] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s

    def send(self, start: int, n: int) -> int:
        self.batches.append((start, n))
        self.now += n * self.per_frame
        return n


@pytest.mark.parametrize("rate", [130_000.0, 0.0])
def test_a_sender_slower_than_its_pace_stops_at_the_deadline(rate: float) -> None:
    fake = FakeClock(per_frame=1 / 16_000)  # what the paced Python sender reached in the lab
    sent, errors, t0, t_end = send_loop(1_300_000, rate, 10.0, 64, fake.send, fake.clock, fake.sleep)
    assert t_end - t0 <= 10.0 + 64 * fake.per_frame  # at most one batch past the deadline
    assert sent == sum(n for _, n in fake.batches) == pytest.approx(160_000, abs=64)
    assert errors == 0
    starts = [s for s, _ in fake.batches]
    assert starts == [sum(n for _, n in fake.batches[:i]) for i in range(len(fake.batches))]


def test_a_fast_sender_keeps_its_pace_and_stops_at_the_count() -> None:
    fake = FakeClock(per_frame=1e-7)
    sent, _, t0, t_end = send_loop(5000, 1000.0, 10.0, 64, fake.send, fake.clock, fake.sleep)
    assert sent == 5000
    assert 4.99 <= t_end - t0 <= 5.01  # 5,000 at 1,000/s
    assert max(n for _, n in fake.batches) <= 64


def test_frames_that_did_not_go_out_are_errors() -> None:
    fake = FakeClock(per_frame=1e-6)

    def half(start: int, n: int) -> int:
        fake.send(start, n)
        return n // 2

    sent, errors, _, _ = send_loop(640, 0.0, 10.0, 64, half, fake.clock, fake.sleep)
    assert (sent, errors) == (640, 320)


@pytest.mark.parametrize(
    ("t0", "t1", "expected"),
    [
        (10.00, 10.03, 1 + 2 + 3),  # bins starting at 10.00, 10.01, 10.02
        (10.01, 10.02, 2),
        (0.0, 100.0, 1 + 2 + 3 + 4),
        (10.04, 11.0, 0),  # nothing in the window: the last bin starts at 10.03
    ],
)
def test_replies_between_counts_the_window_only(t0: float, t1: float, expected: int) -> None:
    bins = [(1000, 1), (1001, 2), (1002, 3), (1003, 4)]
    assert replies_between(bins, 0.01, t0, t1) == expected

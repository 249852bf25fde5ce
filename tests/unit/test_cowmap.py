"""CowDict: a snapshot never changes after it was handed out, and always equals the dict it
stands for (hypothesis drives random writes, deletes and snapshots against a plain dict)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.cowmap import BUCKETS, CowDict, Frozen

KEYS = st.integers(0, 3 * BUCKETS) | st.text(max_size=3)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.integers()),
        st.tuples(st.just("pop"), KEYS, st.none()),
        st.tuples(st.just("freeze"), st.none(), st.none()),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_snapshots_are_immutable_and_exact(ops: list[tuple[str, object, object]]) -> None:
    cow: CowDict[object, object] = CowDict()
    model: dict[object, object] = {}
    taken: list[tuple[Frozen[object, object], dict[object, object]]] = []
    for op, key, value in ops:
        if op == "set":
            cow[key] = value
            model[key] = value
        elif op == "pop":
            assert cow.pop(key, "absent") == model.pop(key, "absent")
        else:
            taken.append((cow.freeze(), dict(model)))
        assert len(cow) == len(model)
        assert all(cow.get(k) == v and k in cow for k, v in model.items())
    taken.append((cow.freeze(), dict(model)))
    for frozen, expected in taken:  # every snapshot still says what it said when taken
        assert dict(frozen) == expected and len(frozen) == len(expected)
        assert frozen == expected and expected == frozen
        assert all(frozen[k] == v and frozen.get(k) == v and k in frozen for k, v in expected.items())


def test_freeze_without_writes_is_the_same_object_and_a_write_copies_one_bucket() -> None:
    cow: CowDict[int, int] = CowDict()
    for i in range(10 * BUCKETS):
        cow[i] = i
    first = cow.freeze()
    assert cow.freeze() is first
    cow[0] = -1
    second = cow.freeze()
    assert first[0] == 0 and second[0] == -1
    shared = sum(a is b for a, b in zip(first._buckets, second._buckets, strict=True))
    assert shared == BUCKETS - 1

"""lab.files.write_atomic: a polling reader sees a file whole or not at all."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from lab.files import write_atomic


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    """The failure this replaces: a reader waiting for a kubeconfig found it created but empty."""
    path = tmp_path / "kubeconfig"
    texts = [f"{i}:" + "x" * 200_000 + "\n" for i in range(30)]
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            if path.exists():
                seen.append(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for text in texts:
            write_atomic(path, text)
    finally:
        done.set()
        reader.join(timeout=10)
    assert seen, "the reader never saw the file"
    assert set(seen) <= set(texts), "a read returned a file that was not one of the whole writes"
    assert path.read_text() == texts[-1]
    assert [p.name for p in tmp_path.iterdir()] == ["kubeconfig"], "no temporary file is left behind"


def test_mode_and_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "sub" / "state.json", "old\n", mode=0o644)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(write_atomic(tmp_path / "token", "t").stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        write_atomic(path, None)  # type: ignore[arg-type]
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]

"""The shared test helpers wait for what they claim to wait for."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.helpers import daemon_pid


@pytest.mark.parametrize("first", ["", "12", "\n"])
def test_daemon_pid_waits_until_the_number_is_whole(tmp_path: Path, first: str) -> None:
    """A daemon creates its pid file, then writes it: a reader in between sees '' or a part."""
    pid_file = tmp_path / "bird.pid"
    pid_file.write_text(first)
    writer = threading.Timer(0.2, lambda: pid_file.write_text("12345\n"))
    writer.start()
    try:
        # "12" without its newline may be the start of "12345\n"
        assert daemon_pid(pid_file, timeout=5) == 12345
    finally:
        writer.cancel()


def test_daemon_pid_names_the_file_when_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"bird\.pid"):
        daemon_pid(tmp_path / "bird.pid", timeout=0.2)

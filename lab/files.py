"""Atomic file writes for files another process polls for (state, kubeconfigs).

A reader that waits for a path to exist must never find it half written: the text goes to a
temporary file in the same directory and is renamed over the path, which readers see whole
or not at all.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o600) -> Path:
    """Write `text` to `path` by rename, so the path appears (or changes) whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path

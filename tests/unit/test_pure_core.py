"""The pure core stays pure: its modules import with `socket`, `pyroute2` and `kubernetes` unavailable.

Each module is imported in a fresh interpreter behind a meta-path finder that refuses
those names, so a pure module that gains an I/O import (directly or through another
lbspeaker module) fails here, not in review. pydantic, which the API models need, is
loaded before the finder: its stdlib dependency `email.utils` imports `socket` for a
hostname helper it never calls here. `socket` is then dropped from `sys.modules`, so
an `import socket` anywhere in lbspeaker goes through the finder and fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PURE = (
    "lbspeaker.facts",
    "lbspeaker.configstate",
    "lbspeaker.election",
    "lbspeaker.plan",
    "lbspeaker.cowmap",
    "lbspeaker.links",
    "lbspeaker.selectors",
    "lbspeaker.bgp.plan",
    "lbspeaker.bgp.routes",
    "lbspeaker.bgp.config",
    "lbspeaker.bgp.session",
    "lbspeaker.controller.allocator",
    "lbspeaker.controller.translate",
    "lbspeaker.controller.advertisements",
    "lbspeaker.controller.workqueue",
    "lbspeaker.bfd.packet",
    "lbspeaker.bfd.session",
    "lbspeaker.bfd.profile",
    "lbspeaker.bfd.plan",
    "lbspeaker.api.models",
    "lbspeaker.api.addresses",
    "lbspeaker.api.constants",
    "lbspeaker.api.crdgen",
    "lbspeaker.lbctl.report",
    "lbspeaker.lbctl.migrate",
    "lbspeaker.speaker.strictarp",
)

BLOCKED = ("socket", "_socket", "pyroute2", "kubernetes")

SCRIPT = """
import importlib, sys
import email.utils, pydantic.main  # allowed dependencies, see the module docstring
BLOCKED = {blocked!r}
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not available to the pure core")
        return None

sys.meta_path.insert(0, Refuse())
importlib.import_module({module!r})
"""

ROOT = Path(__file__).resolve().parents[2]


def run(module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(blocked=BLOCKED, module=module)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_without_io_libraries(module: str) -> None:
    done = run(module)
    assert done.returncode == 0, f"{module} needs an I/O library:\n{done.stderr[-2000:]}"


@pytest.mark.parametrize("module", ["lbspeaker.netinfo", "lbspeaker.kube.rest"])
def test_the_check_can_fail(module: str) -> None:
    assert "is not available to the pure core" in run(module).stderr

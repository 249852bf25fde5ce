"""`lbspeaker-lab up` asks each component's readinessProbe where the component really listens."""

from __future__ import annotations

import pytest

from lab.readiness import ProbeTarget, metrics_addr, probe_target
from lab.state import ProcessRecord


def rec(name: str, argv: list[str], netns: str | None = None) -> ProcessRecord:
    return ProcessRecord(name, 1, None, argv, netns, None)


@pytest.mark.parametrize(
    ("record", "want"),
    [
        # the working tree's controller: loopback of the host, a free port
        (rec("controller", ["lbspeaker-controller", "--metrics-addr", "127.0.0.1:40001"]),
         ProbeTarget("controller", None, "http://127.0.0.1:40001/readyz")),
        # the image's controller: the manifest's args, inside kind-control-plane
        (rec("controller", ["podman", "run", "img", "--metrics-addr=0.0.0.0:7472"], "kind-control-plane"),
         ProbeTarget("controller", "kind-control-plane", "http://127.0.0.1:7472/readyz")),
        # a speaker with no flag: the program's default port, in its node's namespace
        (rec("speaker-kind-worker", ["lbspeaker-speaker", "--node-name", "kind-worker"], "kind-worker"),
         ProbeTarget("speaker-kind-worker", "kind-worker", "http://127.0.0.1:7473/readyz")),
        (rec("speaker-n", ["x", "--metrics-addr=[::]:9000"], "n"), ProbeTarget("speaker-n", "n", "http://127.0.0.1:9000/readyz")),
        # no probe: the agents, metrics switched off, a malformed address
        (rec("agents", ["python", "-m", "lab.agents"]), None),
        (rec("speaker-n", ["x", "--metrics-addr="], "n"), None),
        (rec("controller", ["x", "--metrics-addr", "nonsense"]), None),
    ],
)
def test_probe_target(record: ProcessRecord, want: ProbeTarget | None) -> None:
    assert probe_target(record) == want


def test_the_last_flag_wins_as_argparse_does() -> None:
    assert metrics_addr(["--metrics-addr", "a:1", "--metrics-addr=b:2"], "d:0") == "b:2"
    assert metrics_addr(["--metrics-addr"], "d:0") == "d:0"

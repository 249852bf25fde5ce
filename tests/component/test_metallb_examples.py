"""MetalLB's v0.16 example set (manifests/examples/metallb-v0.16/), migrated with `lbctl
migrate-metallb` and applied with `kubectl apply --validate=strict` to the lab API server: every
object is accepted with every field it carries, and the controller then takes the configuration
(its ConfigurationState says Valid)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.apiserver import LabApiServer
from lbspeaker.controller.reconciler import Controller, ControllerConfig
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.resources import CONFIGURATIONSTATES, NAMESPACES, by_kind
from lbspeaker.kube.rest import ApiError, Rest
from tests.helpers import wait_for

pytestmark = [pytest.mark.component,
              pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "manifests" / "examples" / "metallb-v0.16"
NS = "lbspeaker-system"


def test_migrated_examples_apply_strictly_and_are_taken(apiserver_with_crds: LabApiServer,
                                                        tmp_path: Path) -> None:
    kubeconfig = apiserver_with_crds.write_kubeconfig(tmp_path / "kc")
    rest = Rest(load_api_client(str(kubeconfig)))
    rest.create(NAMESPACES, {"metadata": {"name": NS}})

    migrated = subprocess.run(
        [sys.executable, "-m", "lbspeaker.lbctl", "migrate-metallb", "-f", str(EXAMPLES)],
        capture_output=True, text=True, timeout=60, check=True)
    objects: list[dict[str, Any]] = [d for d in yaml.safe_load_all(migrated.stdout) if d]
    assert len(objects) >= 15 and "lbctl: " in migrated.stderr
    (tmp_path / "lbspeaker.yaml").write_text(migrated.stdout)

    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    applied = subprocess.run(
        ["kubectl", "apply", "--validate=strict", "-f", str(tmp_path / "lbspeaker.yaml")],
        env=env, capture_output=True, text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count(" created") == len(objects), applied.stdout

    # Stored as written: every field the migration carried is still there (nothing pruned).
    for obj in objects:
        resource = by_kind(obj["kind"])
        assert resource is not None
        stored = rest.get(resource, obj["metadata"]["name"], NS)
        for key, value in obj["spec"].items():
            assert stored["spec"].get(key) == value, (obj["kind"], obj["metadata"]["name"], key)

    ctl = Controller(rest, ControllerConfig(identity="ctl-a", lease_duration=3, renew_deadline=2,
                                            retry_period=0.3))
    ctl.start()
    try:
        def result() -> str | None:
            try:
                return rest.get(CONFIGURATIONSTATES, "controller", NS).get("status", {}).get("result")
            except ApiError:
                return None
        wait_for(lambda: result() in ("Valid", "Invalid"), timeout=20)
        got = rest.get(CONFIGURATIONSTATES, "controller", NS)["status"]
        assert got["result"] == "Valid", got
        out = subprocess.run(["kubectl", "get", "configurationstates", "-n", NS], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert out.splitlines()[1].split()[:2] == ["controller", "Valid"]
    finally:
        ctl.stop()

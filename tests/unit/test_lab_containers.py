"""`lbspeaker-lab up --image`: the `podman run` argv comes from the rendered manifests (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab import containers as c
from lab.agents.nodes import NOT_READY_TAINT, taints_once_ready

NODES = [("kind-control-plane", True), ("kind-worker", False)]


@pytest.fixture(scope="module")
def plans() -> dict[str, c.ContainerPlan]:
    objects = c.render_manifests()
    out = c.plan_lab_containers(
        objects, "lbspeaker:dev", NODES, "http://172.18.0.2:6443", Path("/s"), Path("/s/logs")
    )
    return {p.record: p for p in out}


def opt(argv: list[str], flag: str) -> list[str]:
    """Every value of a repeated `--flag VALUE` before the image."""
    head = argv[: argv.index("lbspeaker:dev")]
    return [head[i + 1] for i, a in enumerate(head) if a == flag]


def tail(argv: list[str]) -> list[str]:
    return argv[argv.index("lbspeaker:dev") + 1 :]


def test_one_controller_and_a_speaker_per_node(plans: dict[str, c.ContainerPlan]) -> None:
    assert set(plans) == {"controller", "speaker-kind-control-plane", "speaker-kind-worker"}
    assert plans["controller"].netns == "kind-control-plane"
    assert opt(plans["speaker-kind-worker"].argv, "--network") == ["ns:/run/netns/kind-worker"]
    assert opt(plans["speaker-kind-worker"].argv, "--hostname") == ["kind-worker"]  # hostNetwork
    # /etc/hosts names the host, as a node's and a pod's do (ExaBGP resolves it at import)
    assert opt(plans["speaker-kind-worker"].argv, "--add-host") == ["kind-worker:127.0.1.1"]
    assert opt(plans["controller"].argv, "--add-host") == ["controller-0:127.0.1.1"]


@pytest.mark.parametrize(
    ("record", "user", "cap_add", "command", "first_args"),
    [
        ("controller", ["65532:65532"], [], '["lbspeaker-controller"]',
         ["--namespace=lbspeaker-system", "--identity=controller-0", "--leader-elect"]),
        ("speaker-kind-worker", ["0"], ["NET_RAW,NET_ADMIN"], '["lbspeaker-speaker"]',
         ["--node-name=kind-worker", "--namespace=lbspeaker-system"]),
    ],
)
def test_security_context_and_command_of_the_manifests(
    plans: dict[str, c.ContainerPlan], record: str, user: list[str], cap_add: list[str], command: str,
    first_args: list[str],
) -> None:
    argv = plans[record].argv
    assert opt(argv, "--user") == user
    assert opt(argv, "--cap-drop") == ["all"]
    assert opt(argv, "--cap-add") == cap_add
    assert "--read-only" in argv and "--read-only-tmpfs=false" in argv
    assert opt(argv, "--security-opt") == ["no-new-privileges"]
    assert opt(argv, "--entrypoint") == [command]
    assert tail(argv)[: len(first_args)] == first_args
    # the lab API server speaks http: in-cluster config cannot, a kubeconfig naming the token file can
    assert tail(argv)[-1] == f"--kubeconfig={c.LAB_KUBECONFIG}"
    mounts = opt(argv, "--volume")
    assert f"/s/pods/{record.replace('controller', 'controller-0')}/serviceaccount:{c.SA_DIR}:ro" in mounts
    env = dict(e.split("=", 1) for e in opt(argv, "--env"))
    assert env["POD_NAMESPACE"] == "lbspeaker-system"
    assert env["KUBERNETES_SERVICE_HOST"] == "172.18.0.2" and env["KUBERNETES_SERVICE_PORT"] == "6443"


def test_emptydir_volumes_become_sized_tmpfs(plans: dict[str, c.ContainerPlan]) -> None:
    mounts = opt(plans["speaker-kind-worker"].argv, "--mount")
    assert "type=tmpfs,destination=/run/lbspeaker,tmpfs-mode=1777,tmpfs-size=16777216" in mounts
    assert any("destination=/tmp," in m for m in mounts)


def test_https_server_is_reached_in_cluster() -> None:
    objects = c.render_manifests()
    (plan,) = c.plan_lab_containers(
        objects, "lbspeaker:dev", NODES, "https://10.0.0.1:443", Path("/s"), Path("/l"), speakers=False
    )
    assert not any(a.startswith("--kubeconfig") for a in tail(plan.argv))
    assert f"/s/kubeconfig:{c.LAB_KUBECONFIG}:ro" not in opt(plan.argv, "--volume")


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("--node-name=$(NODE_NAME)", {"NODE_NAME": "n1"}, "--node-name=n1"),
        ("$(A)-$(B)", {"A": "x", "B": "y"}, "x-y"),
        ("$(MISSING)", {}, "$(MISSING)"),  # Kubernetes leaves unknown references as written
        ("$$(NODE_NAME)", {"NODE_NAME": "n1"}, "$(NODE_NAME)"),  # $$ escapes
        ("plain", {"X": "1"}, "plain"),
    ],
)
def test_expand(value: str, env: dict[str, str], expected: str) -> None:
    assert c.expand(value, env) == expected


def test_unsupported_volume_is_a_clear_error() -> None:
    objects = c.render_manifests()
    ds = c.workload(objects, "DaemonSet", "speaker")
    ds["spec"]["template"]["spec"]["volumes"][0] = {"name": "run", "hostPath": {"path": "/run"}}
    ctx = c.PodContext("speaker-n", "lbspeaker-system", "n", "n", "172.18.0.2", 6443)
    with pytest.raises(c.ManifestError, match="emptyDir"):
        c.container_plan(ds, "speaker", ctx, "img", Path("/s"), Path("/l"))


def node(ready: str | None, taints: list[dict[str, Any]]) -> dict[str, Any]:
    conds = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {"spec": {"taints": taints}, "status": {"conditions": conds}}


CP = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
NR = {"key": NOT_READY_TAINT, "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (node("True", [CP, NR]), [CP]),
        (node("True", [NR]), []),
        (node("False", [NR]), None),  # not Ready: the taint stays
        (node("True", [CP]), None),  # nothing to lift
        (node("True", []), None),
    ],
)
def test_taints_once_ready(obj: dict[str, Any], expected: list[dict[str, Any]] | None) -> None:
    assert taints_once_ready(obj) == expected

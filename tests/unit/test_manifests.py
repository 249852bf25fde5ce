"""The install (`kubectl apply -k manifests/`) checked without a cluster.

Rendered with lbspeaker's kustomize subset renderer (compared with `kubectl kustomize`
when kubectl is installed), every object validated against the Kubernetes OpenAPI
schemas (kubernetes-validate ships them: offline), the security posture the issue asks
for asserted field by field, and every flag in the containers' `args` parsed by the
program's own argument parser.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbspeaker.api.constants import NAMESPACE
from lbspeaker.api.models import KINDS
from lbspeaker.lbctl.kustomize import KustomizeError, render

kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
K8S_VERSION = "1.31.0"  # oldest minor we promise; schemas ship with kubernetes-validate
IMAGE = "ghcr.io/lbspeaker/lbspeaker:0.1.0"

ENV_SAMPLES = {"POD_NAMESPACE": NAMESPACE, "POD_NAME": "controller-abc", "NODE_NAME": "kind-worker"}


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render(MANIFESTS)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"{kind} {name} not rendered")


def container(obj: dict[str, Any]) -> dict[str, Any]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def identity(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])


# -- rendering ------------------------------------------------------------------------------------


def test_renders_everything(objects: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in objects}
    assert {
        "CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
        "Role", "RoleBinding", "Deployment", "DaemonSet", "Service", "PodDisruptionBudget",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    } <= kinds
    crds = {o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"}
    on_disk = {p.name for p in (MANIFESTS / "crds").glob("lbspeaker.io_*.yaml")}
    assert len(crds) == len(on_disk) == len(KINDS)


def test_same_as_kubectl_kustomize(objects: list[dict[str, Any]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the renderer alone is used")
    proc = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"kubectl kustomize failed: {proc.stderr[:200]}")
    theirs = {identity(o): o for o in yaml.safe_load_all(proc.stdout) if o}
    ours = {identity(o): o for o in objects}
    assert theirs.keys() == ours.keys()
    for key, obj in ours.items():
        assert obj == theirs[key], key


def test_renderer_refuses_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamespace: x\n")
    with pytest.raises(KustomizeError, match="namespace"):
        render(tmp_path)


def test_renderer_images(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
        "spec: {template: {spec: {containers: [{name: c, image: 'app:1'}, {name: e, image: other}]}}}\n"
    )
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [d.yaml]\nimages: [{name: app, newName: reg:5000/x/app, newTag: '2'}]\n"
    )
    (obj,) = render(tmp_path)
    images = [c["image"] for c in obj["spec"]["template"]["spec"]["containers"]]
    assert images == ["reg:5000/x/app:2", "other"]


# -- schemas ----------------------------------------------------------------------------------------


def test_every_object_matches_the_kubernetes_schema(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        # strict: unknown fields (a typo in a securityContext ...) are errors too.
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_validation_is_not_vacuous(objects: list[dict[str, Any]]) -> None:
    bad = yaml.safe_load(yaml.safe_dump(find(objects, "DaemonSet", "speaker")))
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilites"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_all_in_our_namespace(objects: list[dict[str, Any]]) -> None:
    ns = find(objects, "Namespace", NAMESPACE)
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    for obj in objects:
        if obj["kind"] in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                           "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
            assert "namespace" not in obj["metadata"], identity(obj)
            continue
        expected = "kube-system" if obj["metadata"]["name"].endswith("kube-proxy") else NAMESPACE
        assert obj["metadata"].get("namespace") == expected, identity(obj)


# -- workloads ----------------------------------------------------------------------------------------


def test_image_reference(objects: list[dict[str, Any]]) -> None:
    for kind, name in (("Deployment", "controller"), ("DaemonSet", "speaker")):
        assert container(find(objects, kind, name))["image"] == IMAGE


def test_controller_is_locked_down(objects: list[dict[str, Any]]) -> None:
    dep = find(objects, "Deployment", "controller")
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == "controller"
    assert pod.get("hostNetwork") is not True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    c = container(dep)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["command"] == ["lbspeaker-controller"]


def test_speaker_has_only_the_capabilities_it_needs(objects: list[dict[str, Any]]) -> None:
    ds = find(objects, "DaemonSet", "speaker")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["serviceAccountName"] == "speaker"
    assert pod["terminationGracePeriodSeconds"] <= 10
    c = container(ds)
    sc = c["securityContext"]
    assert sc.get("privileged") is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    tolerated = {(t.get("key"), t.get("operator"), t.get("effect")) for t in pod["tolerations"]}
    assert ("node-role.kubernetes.io/control-plane", "Exists", "NoSchedule") in tolerated
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["command"] == ["lbspeaker-speaker"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_pdb_and_metrics_services_select_the_pods(objects: list[dict[str, Any]]) -> None:
    pdb = find(objects, "PodDisruptionBudget", "controller")
    dep = find(objects, "Deployment", "controller")
    ds = find(objects, "DaemonSet", "speaker")
    dep_labels = dep["spec"]["template"]["metadata"]["labels"]
    ds_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep_labels.items()
    ctl_svc = find(objects, "Service", "controller-metrics")
    spk_svc = find(objects, "Service", "speaker-metrics")
    assert ctl_svc["spec"]["selector"].items() <= dep_labels.items()
    assert not ctl_svc["spec"]["selector"].items() <= ds_labels.items()
    assert spk_svc["spec"]["selector"].items() <= ds_labels.items()
    assert spk_svc["spec"]["clusterIP"] == "None"
    for svc, workload in ((ctl_svc, dep), (spk_svc, ds)):
        port_names = {p["name"] for p in container(workload)["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names


# -- flags ------------------------------------------------------------------------------------------


def expand(arg: str) -> str:
    """Kubernetes' $(VAR) expansion with sample values of the downward-API variables."""
    return re.sub(r"\$\(([A-Z_]+)\)", lambda m: ENV_SAMPLES[m.group(1)], arg)


def flags_from_help(module: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    return set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", proc.stdout))


def check_args(module_name: str, args: list[str]) -> None:
    """Parse the manifest's args with the program's own parser (build_parser, parse_args, or --help)."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            pytest.skip(f"{module_name} does not exist yet")
        raise
    argv = [expand(a) for a in args]
    if hasattr(module, "build_parser"):
        module.build_parser().parse_args(argv)
    elif hasattr(module, "parse_args"):
        module.parse_args(argv)
    else:
        known = flags_from_help(module_name)
        used = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
        assert used <= known, f"flags not in `{module_name} --help`: {sorted(used - known)}"


def metrics_port(args: list[str]) -> int | None:
    for a in args:
        if a.startswith("--metrics-addr="):
            return int(a.rsplit(":", 1)[1])
    return None


@pytest.mark.parametrize(
    ("kind", "name", "module"),
    [
        ("Deployment", "controller", "lbspeaker.controller.main"),
        ("DaemonSet", "speaker", "lbspeaker.speaker.main"),
    ],
)
def test_args_are_real_flags(objects: list[dict[str, Any]], kind: str, name: str, module: str) -> None:
    c = container(find(objects, kind, name))
    env_names = {e["name"] for e in c.get("env", [])}
    for arg in c["args"]:
        for var in re.findall(r"\$\(([A-Z_]+)\)", arg):
            assert var in env_names, f"{arg} uses ${var} that the container does not define"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert metrics_port(c["args"]) == ports["monitoring"]
    for a in c["args"]:
        if a.startswith("--heartbeat-port="):
            assert int(a.split("=", 1)[1]) == ports["heartbeat"]
    # Probes hit the port the program really listens on.
    assert c["livenessProbe"]["httpGet"]["port"] == c["readinessProbe"]["httpGet"]["port"] == "monitoring"
    check_args(module, c["args"])


def test_console_scripts_exist(objects: list[dict[str, Any]]) -> None:
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for kind, name in (("Deployment", "controller"), ("DaemonSet", "speaker")):
        assert container(find(objects, kind, name))["command"][0] in scripts


def test_local_image_overlay_changes_only_the_image(objects: list[dict[str, Any]]) -> None:
    """The kind quickstart's overlay installs what manifests/ does, with the tag `./dev image` and
    `docker build -t lbspeaker:dev .` make (nothing unpublished is pulled)."""
    overlay = render(MANIFESTS / "overlays" / "local-image")
    images = [
        c["image"]
        for o in overlay
        if o["kind"] in ("Deployment", "DaemonSet")
        for c in o["spec"]["template"]["spec"]["containers"]
    ]
    assert images == ["lbspeaker:dev", "lbspeaker:dev"]
    dev_script = (MANIFESTS.parent / "dev").read_text()
    assert "IMAGE_TAG=lbspeaker:dev" in dev_script

    def without_images(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = yaml.safe_load(yaml.safe_dump(objs))
        for o in out:
            for c in ((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
                c.pop("image")
        return list(out)

    assert without_images(overlay) == without_images(objects)

"""manifests/examples/ and the Dockerfile, checked without a cluster or a Docker engine.

Built-in kinds of every example against the Kubernetes schemas (kubernetes-validate,
offline); lbspeaker custom resources against the generated CRD schemas, CEL rules
included (the lab API server's validator, i.e. what the API server would say), after
defaulting; the Dockerfile parsed for a numeric non-root user and real programs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbspeaker.api.models import parse_object
from lbspeaker.lbctl.kustomize import render

kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "manifests" / "examples"
EXAMPLE_DIRS = ["kind", "bgp", "etp-local", "shared-ip", "ipvs-strictarp"]
K8S_VERSION = "1.31.0"


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, from the generated CRDs on disk."""
    out = {}
    for path in (REPO / "manifests" / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        for version in crd["spec"]["versions"]:
            out[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = (
                version["schema"]["openAPIV3Schema"]
            )
    return out


SCHEMAS = crd_schemas()


def validate_custom(obj: dict[str, Any]) -> list[tuple[str, str]]:
    from lab.apiserver.schema import apply_defaults, validate

    schema = SCHEMAS[(obj["apiVersion"], obj["kind"])]
    return validate(schema, apply_defaults(schema, obj))


@pytest.mark.parametrize("example", EXAMPLE_DIRS)
def test_example_objects_are_valid(example: str) -> None:
    objects = render(EXAMPLES / example)
    assert objects
    for obj in objects:
        if obj["apiVersion"].startswith("lbspeaker.io/"):
            assert validate_custom(obj) == [], (obj["kind"], obj["metadata"]["name"])
            parse_object(obj)
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_crd_validation_is_not_vacuous() -> None:
    bad = {
        "apiVersion": "lbspeaker.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "x"},
        "spec": {"myASN": 64513, "peerAddress": "172.18.0.1"},  # neither peerASN nor dynamicASN
    }
    assert validate_custom(bad)


def test_kind_example_tells_the_story() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in render(EXAMPLES / "kind")}
    pool = objs[("IPAddressPool", "kind")]
    assert pool["spec"]["addresses"] == ["172.18.255.200-172.18.255.250"]
    assert objs[("L2Advertisement", "kind")]["spec"]["ipAddressPools"] == ["kind"]
    svc = objs[("Service", "web")]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["metadata"]["annotations"]["lbspeaker.io/loadBalancerIPs"] == "172.18.255.200"
    pod_labels = objs[("Deployment", "web")]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert "/host" in objs[("ConfigMap", "host-app")]["data"]["host.py"]
    readme = (EXAMPLES / "kind" / "README.md").read_text()
    assert "docker run --rm --network kind curlimages/curl -s 172.18.255.200/host" in readme
    config = yaml.safe_load((EXAMPLES / "kind" / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert "172.18.0.0/16" in (EXAMPLES / "kind" / "kind-config.yaml").read_text()


def test_the_kind_app_answers_host(tmp_path: Path) -> None:
    """Run the example's /host server for real (it is plain Python) and ask it."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    objs = {(o["kind"], o["metadata"]["name"]): o for o in render(EXAMPLES / "kind")}
    script = objs[("ConfigMap", "host-app")]["data"]["host.py"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = script.replace('("", 8080)', f'("127.0.0.1", {port})')
    (tmp_path / "host.py").write_text(script)
    env = {**os.environ, "NODE_NAME": "kind-worker", "POD_IP": "10.244.1.5"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "host.py")], env=env)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/host", timeout=2).read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert body == "NODE: kind-worker, POD IP: 10.244.1.5, CLIENT IP: 127.0.0.1\n"
    finally:
        proc.terminate()
        proc.wait(5)


def test_shared_ip_example() -> None:
    svcs = [o for o in render(EXAMPLES / "shared-ip") if o["kind"] == "Service"]
    keys = {s["metadata"]["annotations"]["lbspeaker.io/allow-shared-ip"] for s in svcs}
    ips = {s["metadata"]["annotations"]["lbspeaker.io/loadBalancerIPs"] for s in svcs}
    assert len(svcs) == 2 and len(keys) == 1 and len(ips) == 1
    ports = [(p["port"], p["protocol"]) for s in svcs for p in s["spec"]["ports"]]
    assert len(ports) == len(set(ports))


def test_etp_local_example() -> None:
    (svc,) = render(EXAMPLES / "etp-local")
    assert svc["spec"]["externalTrafficPolicy"] == "Local"


def test_bgp_example_matches_its_frr_config() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in render(EXAMPLES / "bgp")}
    peer = objs[("BGPPeer", "router")]["spec"]
    frr = (EXAMPLES / "bgp" / "frr.conf").read_text()
    assert f"router bgp {peer['peerASN']}" in frr
    assert f"remote-as {peer['myASN']}" in frr
    assert f"bgp router-id {peer['peerAddress']}" in frr
    adv = objs[("BGPAdvertisement", "bgp")]["spec"]
    aliases = {c["name"] for c in objs[("Community", "well-known")]["spec"]["communities"]}
    assert set(adv["communities"]) <= aliases
    assert adv["peers"] == ["router"]


def test_ipvs_strictarp_example() -> None:
    cm = yaml.safe_load((EXAMPLES / "ipvs-strictarp" / "kube-proxy-strictarp.yaml").read_text())
    kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    from lbspeaker.speaker import strictarp

    assert strictarp.check(cm).ok and strictarp.check(cm).mode == "ipvs"
    (ds,) = [o for o in render(EXAMPLES / "ipvs-strictarp") if o["kind"] == "DaemonSet"]
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--enforce-strict-arp" in args
    from lbspeaker.speaker.main import build_parser

    build_parser().parse_args([a.replace("$(NODE_NAME)", "n").replace("$(POD_NAMESPACE)", "x") for a in args])


# -- Dockerfile ---------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions per stage, continuation lines joined, comments dropped; `${ARG}` in FROM
    replaced by the default of an ARG declared before the first FROM (what `docker build` uses)."""
    text = (REPO / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    global_args: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        if instr.upper() == "ARG" and not stages:
            name, _, default = rest.strip().partition("=")
            global_args[name] = default
            continue
        if instr.upper() == "FROM":
            stages.append([])
            rest = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], rest)
        stages[-1].append((instr.upper(), rest.strip()))
    return stages


def test_dockerfile_base_is_a_build_argument() -> None:
    """Every stage is FROM the BASE argument, so `./dev image` can swap in a local base."""
    text = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${BASE}" for f in froms), froms


def test_dockerfile_runs_as_numeric_non_root() -> None:
    final = dockerfile_stages()[-1]
    assert final[0] == ("FROM", "python:3.11-slim")
    users = [rest for instr, rest in final if instr == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_dockerfile_programs_exist() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    text = (REPO / "Dockerfile").read_text()
    used = set(re.findall(r"\b(lbspeaker-[a-z]+|lbctl)\b", text)) - {"lbspeaker-system"}
    assert {"lbspeaker-controller", "lbspeaker-speaker"} <= used
    assert used <= set(scripts), used - set(scripts)
    cmd = [rest for instr, rest in dockerfile_stages()[-1] if instr == "CMD"]
    assert cmd and json_list(cmd[-1])[0] in scripts


def json_list(text: str) -> list[str]:
    import json

    value = json.loads(text)
    assert isinstance(value, list)
    return value


def test_dockerfile_copies_what_exists_and_dockerignore_lets_it_through() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for stage in dockerfile_stages():
        for instr, rest in stage:
            if instr != "COPY" or rest.startswith("--from"):
                continue
            *sources, _dest = rest.split()
            for src in sources:
                assert (REPO / src).exists(), src
                assert src.rstrip("/") in allowed, f"{src} is excluded by .dockerignore"
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("exabgp") for d in deps), "ExaBGP must come with the package"


@pytest.mark.parametrize("example", EXAMPLE_DIRS)
def test_same_as_kubectl_kustomize(example: str) -> None:
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the renderer alone is used")
    proc = subprocess.run([kubectl, "kustomize", str(EXAMPLES / example)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr

    def ident(o: dict[str, Any]) -> tuple[str, str, str]:
        return (o["kind"], o["metadata"].get("namespace") or "", o["metadata"]["name"])

    theirs = {ident(o): o for o in yaml.safe_load_all(proc.stdout) if o}
    ours = {ident(o): o for o in render(EXAMPLES / example)}
    assert theirs == ours


@pytest.mark.parametrize("doc", ["README.md", "manifests/examples/kind/README.md"])
def test_kind_quickstart_pulls_nothing_unpublished(doc: str) -> None:
    """Build, `kind load`, apply the local-image overlay: in that order, and said plainly."""
    text = (REPO / doc).read_text()
    steps = ["docker build -t lbspeaker:dev .", "kind load docker-image lbspeaker:dev",
             "kubectl apply -k manifests/overlays/local-image/"]
    positions = [text.find(s) for s in steps]
    assert -1 not in positions and positions == sorted(positions), positions
    assert "kubectl apply -k manifests/ " not in text and "kubectl apply -k manifests/\n" not in text
    assert "No image is published yet" in text or "no image is published yet" in text

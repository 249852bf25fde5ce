"""The lab API server as a process (`lbspeaker-lab apiserver`) and serving inside a network namespace."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from lab.apiserver import LabApiServer, listen_socket_in_netns
from tests.helpers import wait_for

pytestmark = pytest.mark.component
REPO = Path(__file__).resolve().parents[2]


def test_cli_foreground_prints_url_writes_kubeconfig_and_stops_on_sigterm(tmp_path: Path) -> None:
    kc = tmp_path / "kc"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "apiserver", "--port", "0", "--kubeconfig-out", str(kc)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("lab API server listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        assert yaml.safe_load(kc.read_text())["clusters"][0]["cluster"]["server"] == url
        with urllib.request.urlopen(url + "/api/v1/namespaces/default", timeout=5) as resp:
            assert json.loads(resp.read())["metadata"]["name"] == "default"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _can_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.mark.skipif(not _can_netns(), reason="needs root and iproute2")
def test_serves_inside_a_network_namespace() -> None:
    ns = f"lbt-c-{secrets.token_hex(3)}"
    home = os.readlink("/proc/thread-self/ns/net")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        sock = listen_socket_in_netns(ns, "127.0.0.1", 6443)
        server = LabApiServer(extra_sockets=[sock])
        server.start()
        try:
            probe = (
                "import urllib.request,json;"
                "print(json.loads(urllib.request.urlopen('http://127.0.0.1:6443/version',timeout=5).read())"
                "['major'])"
            )
            out = wait_for(
                lambda: subprocess.run(
                    ["ip", "netns", "exec", ns, sys.executable, "-c", probe],
                    capture_output=True,
                    text=True,
                    timeout=20,
                ).stdout.strip(),
                timeout=20,
            )
            assert out == "1"
            # the host-side listener still works and the calling thread never left its namespace
            with urllib.request.urlopen(server.url + "/version", timeout=5) as resp:
                assert json.loads(resp.read())["major"] == "1"
            assert os.readlink("/proc/thread-self/ns/net") == home
        finally:
            server.stop()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_netns_listen_spec_parsing() -> None:
    from lab.apiserver.command import parse_netns_listen

    assert parse_netns_listen("kind-control-plane=172.18.0.2:6443") == (
        "kind-control-plane",
        "172.18.0.2",
        6443,
    )
    assert parse_netns_listen("n=[fc00::2]:6443") == ("n", "fc00::2", 6443)
    with pytest.raises(Exception, match="NETNS=HOST:PORT"):
        parse_netns_listen("nope")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_apply_get_patch_delete(apiserver: LabApiServer, tmp_path: Path) -> None:
    """kubectl needs OpenAPI v3 (to leave validation to the server) and Tables for its columns."""
    env = {**os.environ, "KUBECONFIG": str(apiserver.write_kubeconfig(tmp_path / "kc"))}

    def kubectl(*args: str) -> str:
        proc = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    kubectl("create", "service", "loadbalancer", "web", "--tcp=80:8080")
    header, row = kubectl("get", "svc", "web").splitlines()
    assert header.split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert row.split()[:4] == ["web", "LoadBalancer", row.split()[2], "<pending>"]
    kubectl(
        "patch",
        "svc",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"loadBalancer":{"ingress":[{"ip":"172.18.255.200"}]}}}',
    )
    assert "172.18.255.200" in kubectl("get", "svc", "web")
    if (REPO / "manifests" / "crds" / "kustomization.yaml").exists():
        assert "created" in kubectl("apply", "-k", str(REPO / "manifests" / "crds"))
        assert "unchanged" in kubectl("apply", "-k", str(REPO / "manifests" / "crds"))
    kubectl("delete", "svc", "web")
    assert (
        "No resources found"
        in subprocess.run(
            ["kubectl", "get", "svc"], env=env, capture_output=True, text=True, timeout=60
        ).stderr
    )

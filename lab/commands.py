"""`lbspeaker-lab up | down | exec | status`: bring the namespace lab up and down.

Each subcommand is exposed to `lab.cli` as a module-like object `lab.commands.<name>`
(with `add_arguments(parser)` and `run(args)`), registered in `sys.modules` when this
module is imported, so all four share one file and one set of helpers.

`up` is idempotent: it records each namespace before creating it and each process
right after starting it (see `lab.state`), skips processes that are still alive, and
re-applies addresses and routes with `replace`. `down` ends every recorded process by
PID (SIGTERM, then SIGKILL), ends any process still inside a lab namespace (by PID,
found through the namespace), and deletes the namespaces; it works after a crash
half-way through `up` and when nothing is there.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from lab import containers, readiness
from lab import netns as nsops
from lab import router as rtr
from lab import topology as topo
from lab.conflicts import APPLY_ATTEMPTS as APPLY_ATTEMPTS  # re-exported: the bound of apply()
from lab.conflicts import retry_on_conflict
from lab.files import write_atomic
from lab.state import (
    LabState,
    ProcessRecord,
    claim_lab,
    default_state_dir,
    end_processes,
    other_lab_owner,
    release_lab,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = REPO_ROOT / "manifests" / "crds"
SYSTEM_NAMESPACE = "lbspeaker-system"
NODES_APISERVER_PORT = 6443
EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
CONTROL_PLANE_ROLE = "node-role.kubernetes.io/control-plane"


def _log(msg: str) -> None:
    """Progress on stderr, so stdout stays the summary."""
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"state directory (default: ${'{'}LBSPEAKER_LAB_STATE_DIR{'}'} or {default_state_dir()})",
    )


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir else default_state_dir()


def _bool(value: str) -> bool:
    """argparse type for `true|false`."""
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError("expected true or false")


def _script(name: str) -> str | None:
    """A console script of this install (the venv's bin first, then PATH)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def _runnable_script(name: str) -> str | None:
    """A console script whose entry-point module exists in this tree (scripts can be declared
    in pyproject.toml before their module lands)."""
    path = _script(name)
    if path is None:
        return None
    eps = importlib.metadata.entry_points(group="console_scripts", name=name)
    if any(not _module_exists(ep.module) for ep in eps):
        return None
    return path


def _module_exists(name: str) -> bool:
    """Whether a module can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# -- processes ------------------------------------------------------------------------------------


def start_process(
    state: LabState,
    name: str,
    argv: list[str],
    netns: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[ProcessRecord, bool]:
    """Start a background process (unless its recorded one still runs); log to the state dir.

    Returns (record, started). The process gets its own session so it outlives `up` and
    a terminal's SIGHUP, and its PID is recorded at once.
    """
    existing = state.process(name)
    if existing is not None and existing.alive():
        if existing.in_current_netns():
            return existing, False
        _log(f"{name} runs in a namespace that was re-created: restarting it")
        end_processes([existing], grace=3.0)
    state.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = state.log_dir / f"{name}.log"
    full_env = dict(os.environ)
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    with open(log_path, "ab") as log:
        log.write(f"--- {datetime.now(UTC).isoformat()} {' '.join(argv)}\n".encode())
        log.flush()
        proc = nsops.popen_in(
            netns,
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=full_env,
            cwd=str(REPO_ROOT),
        )
    rec = state.add_process(name, proc.pid, nsops.ns_prefix(netns) + argv, netns, str(log_path))
    return rec, True


def _log_tail(path: str | None, lines: int = 15) -> str:
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def _stop_named(state: LabState, names: list[str]) -> None:
    recs = [r for r in state.processes if r.name in names]
    end_processes(recs, grace=3.0)
    for r in recs:
        state.remove_process(r.name)


# -- router ---------------------------------------------------------------------------------------


def ensure_router(
    state: LabState, kind: str, lab: topo.LabPlan, password: str | None = None, bgp_mode: str = "ebgp",
    bfd: bool = False,
) -> list[str]:
    """Write the router config and run its daemons in the router namespace (restart on change).

    A changed `bgp_mode` changes the rendered config, so the router restarts with the new AS.
    """
    paths = rtr.RouterPaths(rtr.runtime_dir(state.dir))
    state.data["router_dir"] = str(paths.root)
    state.save()
    all_names = ["router-zebra", "router-bfdd", "router-bgpd", "router-bird"]
    if kind == "none":
        _stop_named(state, all_names)
        return []
    if not rtr.available(kind):
        raise SystemExit(
            f"router {kind!r} is not installed (Debian package {'frr' if kind == 'frr' else 'bird2'})"
        )
    wanted = rtr.router_processes(kind, paths, bfd)
    wanted_names = [n for n, _ in wanted]
    _stop_named(state, [n for n in all_names if n not in wanted_names])
    rendered = rtr.render(kind, lab, password, bgp_mode, bfd)
    conf = paths.frr_conf if kind == "frr" else paths.bird_conf
    running = all(
        (rec := state.process(n)) is not None and rec.alive() and rec.in_current_netns() for n in wanted_names
    )
    if running and conf.exists() and conf.read_text() == rendered:
        return wanted_names
    if running:
        _log(f"router config changed: restarting {kind}")
    _stop_named(state, wanted_names)
    for stale in ("zserv.api", "bgpd.vty", "zebra.vty", "bfdd.vty", "bfdd.sock", "bird.ctl"):
        with contextlib.suppress(FileNotFoundError):
            (paths.root / stale).unlink()
    rtr.write_config(kind, lab, paths, password, bgp_mode, bfd)
    for name, argv in wanted:
        rec, _ = start_process(state, name, argv, netns=topo.ROUTER)
        if name == "router-zebra" and not rtr.wait_zebra(paths):
            raise SystemExit(f"zebra did not start:\n{_log_tail(rec.log)}")
    if not rtr.wait_ready(kind, paths):
        tails = "".join(_log_tail(str(state.log_dir / f"{n}.log")) for n in wanted_names)
        raise SystemExit(f"{kind} did not open its control socket:\n{tails}")
    return wanted_names


# -- API server and cluster objects ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status < 500:
                    return True
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def write_kubeconfig(path: Path, server: str, name: str = "lbspeaker-lab") -> None:
    """A token-less kubeconfig for the lab API server (plain http, like kind's docker network)."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    write_atomic(path, yaml.safe_dump(cfg, sort_keys=False))


def write_nodes_kubeconfig(host_kubeconfig: Path, path: Path, server: str) -> None:
    """The host kubeconfig (same credentials) pointing at the API server's node-side address."""
    cfg = yaml.safe_load(host_kubeconfig.read_text())
    for cluster in cfg.get("clusters", []):
        cluster.setdefault("cluster", {})["server"] = server
    write_atomic(path, yaml.safe_dump(cfg, sort_keys=False))


def ensure_apiserver(
    state: LabState, args: argparse.Namespace, recreated: list[str]
) -> tuple[Path | None, Path | None]:
    """Start the lab API server (or adopt --kubeconfig); returns (host kubeconfig, nodes kubeconfig)."""
    if args.kubeconfig:
        kc = Path(args.kubeconfig).resolve()
        state.data["apiserver"] = {"external": True, "kubeconfig": str(kc)}
        state.save()
        # A real API server must be reachable from the node namespaces on its own; we
        # hand the speakers the same kubeconfig.
        return kc, kc
    if not _module_exists("lab.apiserver.command"):
        _log("lab API server not available (lab.apiserver.command missing): skipping the API steps")
        return None, None
    kubeconfig = state.dir / "kubeconfig"
    nodes_kubeconfig = state.dir / "kubeconfig-nodes"
    cp = topo.node_ipv4(0)
    rec = state.process("apiserver")
    info = state.data.get("apiserver") or {}
    if rec is not None and rec.alive() and topo.CONTROL_PLANE in recreated:
        # Its node-side socket lived in the old control-plane namespace: restart (objects are lost,
        # `up` re-registers the cluster ones).
        _log("control-plane namespace was re-created: restarting the lab API server")
        end_processes([rec], grace=3.0)
    if rec is None or not rec.alive() or not info.get("port"):
        port = _free_port()
        kubeconfig.unlink(missing_ok=True)  # the server writes a fresh one (with its token)
        argv = [
            sys.executable,
            "-m",
            "lab.cli",
            "apiserver",
            "--port",
            str(port),
            "--kubeconfig-out",
            str(kubeconfig),
            "--listen-netns",
            f"{topo.CONTROL_PLANE}={cp}:{NODES_APISERVER_PORT}",
        ]
        rec, _ = start_process(state, "apiserver", argv)
        state.data["apiserver"] = {"external": False, "port": port, "url": f"http://127.0.0.1:{port}"}
        state.save()
    port = int(state.data["apiserver"]["port"])
    if not _wait_http(f"http://127.0.0.1:{port}/version", 20, rec.alive):
        raise SystemExit(f"lab API server did not come up:\n{_log_tail(rec.log)}")
    deadline = time.monotonic() + 5
    while not kubeconfig.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not kubeconfig.exists():
        write_kubeconfig(kubeconfig, f"http://127.0.0.1:{port}")
    write_nodes_kubeconfig(kubeconfig, nodes_kubeconfig, f"http://{cp}:{NODES_APISERVER_PORT}")
    return kubeconfig, nodes_kubeconfig


class KubeError(Exception):
    """A non-2xx answer (status kept so callers can tolerate 404/409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Kube:
    """Minimal JSON-dict REST over the official client's ApiClient (auth/TLS from kubeconfig)."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import config

        self.api = config.new_client_from_config(config_file=str(kubeconfig))

    def request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        """Send one request; returns the decoded JSON body. Raises KubeError on non-2xx."""
        headers = {"Accept": "application/json", "Content-Type": content_type or "application/json"}
        m, url, hdrs, payload, _ = self.api.param_serialize(
            method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        resp = self.api.call_api(m, url, header_params=hdrs, body=payload, _request_timeout=15)
        resp.read()
        data = resp.data
        if not 200 <= resp.status < 300:
            raise KubeError(resp.status, (data or b"").decode(errors="replace")[:500])
        return json.loads(data) if data else None

    def apply(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create, or replace keeping the server's resourceVersion (create-or-replace)."""
        name = obj["metadata"]["name"]
        try:
            return dict(self.request("POST", collection, obj))
        except KubeError as e:
            if e.status != 409:
                raise
        obj = json.loads(json.dumps(obj))

        def replace() -> dict[str, Any]:
            current = self.request("GET", f"{collection}/{name}")
            obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return dict(self.request("PUT", f"{collection}/{name}", obj))

        # the node agents write the objects' status meanwhile: re-read on 409
        return retry_on_conflict(replace, lambda exc: isinstance(exc, KubeError) and exc.status == 409)

    def merge(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create, or merge-patch into what is there (labels and annotations others set stay)."""
        try:
            return dict(self.request("POST", collection, obj))
        except KubeError as e:
            if e.status != 409:
                raise
        path = f"{collection}/{obj['metadata']['name']}"
        return dict(self.request("PATCH", path, obj, content_type="application/merge-patch+json"))

    def put_status(self, path: str, obj: dict[str, Any]) -> None:
        """Write status through the subresource where the server has one (kube-apiserver does)."""
        try:
            current = self.request("GET", path)
            current["status"] = obj["status"]
            self.request("PUT", f"{path}/status", current)
        except KubeError as e:
            if e.status not in (404, 405):
                raise


def _crd_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    if not CRD_DIR.is_dir():
        return docs
    for f in sorted(CRD_DIR.glob("*.yaml")) + sorted(CRD_DIR.glob("*.yml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def node_object(node: topo.NodePlan) -> dict[str, Any]:
    """The Node a kind kubelet registers: addresses, Ready, podCIDR, kind's labels and taint."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    }
    spec: dict[str, Any] = {
        "podCIDR": node.pod_cidr,
        "podCIDRs": [node.pod_cidr] + ([node.pod_cidr_v6] if node.pod_cidr_v6 else []),
        "providerID": f"kind://lab/kind/{node.name}",
    }
    if node.control_plane:
        labels[CONTROL_PLANE_ROLE] = ""
        labels[EXCLUDE_LB_LABEL] = ""
        spec["taints"] = [{"key": CONTROL_PLANE_ROLE, "effect": "NoSchedule"}]
    addresses = [{"type": "InternalIP", "address": node.ipv4}]
    if node.ipv6:
        addresses.append({"type": "InternalIP", "address": node.ipv6})
    addresses.append({"type": "Hostname", "address": node.name})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels},
        "spec": spec,
        "status": {
            "addresses": addresses,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status (lbspeaker lab)",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "nodeInfo": {
                "kubeletVersion": "v1.31.0-lbspeaker-lab",
                "kubeProxyVersion": "v1.31.0-lbspeaker-lab",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "lab://netns",
                "osImage": "lbspeaker lab",
                "kernelVersion": os.uname().release,
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def kube_proxy_config(mode: str, strict_arp: bool) -> str:
    """kube-proxy's config.conf as kubeadm writes it (only the fields that matter here)."""
    cfg = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": mode,
        "clusterCIDR": topo.POD_SUBNET_V4,
        "ipvs": {"strictARP": strict_arp, "scheduler": ""},
        "iptables": {"masqueradeAll": False},
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def namespace_objects() -> list[dict[str, Any]]:
    """kube-system, and lbspeaker's Namespace as the rendered manifests have it (with its labels)."""
    bare = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}
    ours = [
        o for o in containers.render_manifests()
        if o.get("kind") == "Namespace" and o["metadata"]["name"] == SYSTEM_NAMESPACE
    ]
    fallback = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}}
    return [bare, *(ours or [fallback])]


def bootstrap_cluster(kubeconfig: Path, lab: topo.LabPlan) -> None:
    """CRDs, namespaces, Nodes and the kube-proxy ConfigMap, all over the API."""
    kube = Kube(kubeconfig)
    crds = _crd_documents()
    for crd in crds:
        kube.apply("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    # Merged, never replaced: the manifests' Namespace carries the Pod Security labels, and on a
    # real API server `kubectl apply -k manifests/` may have created it first.
    for ns in namespace_objects():
        kube.merge("/api/v1/namespaces", ns)
    for node in lab.nodes:
        obj = node_object(node)
        kube.apply("/api/v1/nodes", obj)
        kube.put_status(f"/api/v1/nodes/{node.name}", obj)
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"app": "kube-proxy"}},
        "data": {"config.conf": kube_proxy_config(lab.kube_proxy_mode, lab.strict_arp)},
    }
    kube.apply("/api/v1/namespaces/kube-system/configmaps", cm)
    _wait_crds_served(kube, crds)


def _wait_crds_served(kube: Kube, crds: list[dict[str, Any]], timeout: float = 10.0) -> None:
    """A real API server serves a CRD's resources a moment after create; wait for that."""
    deadline = time.monotonic() + timeout
    for crd in crds:
        spec = crd["spec"]
        version = next(
            (v["name"] for v in spec["versions"] if v.get("served", True)), spec["versions"][0]["name"]
        )
        path = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}"
        while True:
            try:
                kube.request("GET", path)
                break
            except KubeError:
                if time.monotonic() > deadline:
                    _log(f"warning: {path} not served yet")
                    break
                time.sleep(0.1)


# -- up -------------------------------------------------------------------------------------------


def _up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=3, help="number of worker nodes (default 3)")
    parser.add_argument("--router", choices=rtr.ROUTER_KINDS, default="frr", help="BGP router (default frr)")
    parser.add_argument("--kube-proxy-mode", choices=topo.KUBE_PROXY_MODES, default="iptables")
    parser.add_argument("--strict-arp", type=_bool, default=False, metavar="true|false")
    parser.add_argument(
        "--bgp-password", default=None, help="TCP MD5 password the router requires on every node session"
    )
    parser.add_argument(
        "--bgp-mode",
        choices=topo.BGP_MODES,
        default="ebgp",
        help=(
            f"how the router peers with the nodes: ebgp (default; router AS {topo.ROUTER_ASN}, nodes "
            f"AS {topo.NODE_ASN}) or ibgp (router in the nodes' AS {topo.NODE_ASN}, so LOCAL_PREF "
            "from BGPAdvertisement.localPref reaches it; BGPPeers then use myASN = peerASN = "
            f"{topo.NODE_ASN})"
        ),
    )
    parser.add_argument(
        "--ipv6", action="store_true", help="dual-stack: fc00:f853:ccd:e793::/64 on the bridge"
    )
    parser.add_argument(
        "--bfd",
        action="store_true",
        help=(
            f"the router runs BFD to every node ({rtr.BFD_INTERVAL_MS} ms x {rtr.BFD_MULTIPLIER}, "
            "FRR bfdd or BIRD's bfd protocol) and its BGP sessions follow it"
        ),
    )
    parser.add_argument("--kubeconfig", help="use this API server instead of starting the lab API server")
    parser.add_argument("--no-controller", action="store_true", help="do not start lbspeaker-controller")
    parser.add_argument(
        "--no-speakers", action="store_true", help="do not start lbspeaker-speaker on the nodes"
    )
    parser.add_argument("--no-agents", action="store_true", help="do not start the lab agents (kubelet etc.)")
    parser.add_argument(
        "--image",
        default=None,
        help=(
            "run the controller and the speakers from this container image with podman, as the rendered "
            "manifests/ say (command, args, env, user, capabilities, read-only root); build it with "
            "`sudo ./dev image` (lbspeaker:dev). Default: processes from the working tree"
        ),
    )
    parser.add_argument(
        "--wait-ready",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help=(
            "wait at most this long for the controller and every speaker to answer their readinessProbe "
            "(GET /readyz), as `kubectl rollout status` would; 0: do not wait (default 60)"
        ),
    )
    _add_state_dir(parser)


def _refuse_other_lab(state_dir: Path, verb: str) -> bool:
    """Print why and return True when another state dir's lab owns the (fixed) lab namespaces."""
    other = claim_lab(state_dir) if verb == "up" else other_lab_owner(state_dir)
    if other is None:
        return False
    print(
        f"lab: a lab started with --state-dir {other} is running; this command uses {state_dir}.\n"
        f"  Use `lbspeaker-lab {verb} --state-dir {other}`"
        + (f", or `lbspeaker-lab down --state-dir {other}` first." if verb == "up" else "."),
        file=sys.stderr,
    )
    return True


def _run_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    if _refuse_other_lab(_state_dir(args), "up"):
        return 1
    state = LabState(_state_dir(args))
    state.dir.mkdir(parents=True, exist_ok=True)
    lab = topo.plan(args.workers, args.ipv6, args.kube_proxy_mode, args.strict_arp)
    state.data["config"] = {
        "workers": args.workers,
        "router": args.router,
        "kube_proxy_mode": args.kube_proxy_mode,
        "strict_arp": args.strict_arp,
        "ipv6": args.ipv6,
        "kubeconfig": args.kubeconfig,
        "bgp_password": bool(args.bgp_password),
        "bgp_mode": args.bgp_mode,
        "bfd": args.bfd,
        "image": args.image,
    }
    state.data["topology"] = lab.to_dict()
    state.save()
    timings: dict[str, float] = {}

    def mark(step: str, since: float) -> float:
        now = time.monotonic()
        timings[step] = round(now - since, 3)
        return now

    t = t0
    created = topo.apply(lab, state.add_namespace)
    t = mark("topology", t)
    router_procs = ensure_router(state, args.router, lab, args.bgp_password, args.bgp_mode, args.bfd)
    t = mark("router", t)
    kubeconfig, nodes_kubeconfig = ensure_apiserver(state, args, created)
    t = mark("apiserver", t)
    started: list[str] = []
    not_ready: dict[str, str] = {}
    if kubeconfig is not None and nodes_kubeconfig is not None:
        bootstrap_cluster(kubeconfig, lab)
        t = mark("cluster objects", t)
        if not args.image:
            containers.down(state)  # a previous `up --image`'s containers make way for the processes
        controller = _runnable_script("lbspeaker-controller")
        if not args.no_controller and controller and not args.image:
            rec = state.process("controller")
            metrics = (state.data.get("controller") or {}).get("metrics_addr")
            if rec is None or not rec.alive() or not metrics:
                # loopback only, on a free port: never on the host's interfaces, no clash with tests
                metrics = f"127.0.0.1:{_free_port()}"
            argv = [controller, "--kubeconfig", str(kubeconfig), "--metrics-addr", metrics]
            _, new = start_process(state, "controller", argv)
            state.data["controller"] = {"metrics_addr": metrics}
            state.save()
            started += ["controller"] if new else []
        if not args.no_agents and _module_exists("lab.agents.__main__"):
            argv = [sys.executable, "-m", "lab.agents", "--kubeconfig", str(kubeconfig)]
            argv += ["--state-dir", str(state.dir)]
            _, new = start_process(state, "agents", argv)
            started += ["agents"] if new else []
        speaker = _runnable_script("lbspeaker-speaker")
        if args.image:
            nodes = [(n.name, n.control_plane) for n in lab.nodes]
            started += containers.up(state, args.image, nodes, Kube(kubeconfig), nodes_kubeconfig,
                                     controller=not args.no_controller, speakers=not args.no_speakers)
        elif not args.no_speakers and speaker:
            for node in lab.nodes:
                # ExaBGP's working files under the lab's state dir, so `down` removes them with the rest
                argv = [speaker, "--node-name", node.name, "--kubeconfig", str(nodes_kubeconfig),
                        "--run-dir", str(state.dir / "run")]
                _, new = start_process(state, f"speaker-{node.name}", argv, netns=node.name)
                started += [f"speaker-{node.name}"] if new else []
        t = mark("processes", t)
        if args.wait_ready > 0:
            _, not_ready = readiness.wait_ready(state.processes, args.wait_ready)
            t = mark("ready", t)
    elapsed = time.monotonic() - t0
    state.data["up_seconds"] = round(elapsed, 3)
    state.data["up_timings"] = timings
    state.save()
    print(f"lab up in {elapsed:.1f}s ({', '.join(f'{k} {v:.2f}s' for k, v in timings.items())})")
    print(f"  state dir:  {state.dir}")
    print(
        f"  router:     {args.router} AS {topo.router_asn(args.bgp_mode)} ({args.bgp_mode})"
        f" at {topo.ROUTER_IP_V4}"
        f" ({', '.join(router_procs) or '-'})"
    )
    for node in lab.nodes:
        v6 = f" {node.ipv6}" if node.ipv6 else ""
        print(f"  node:       {node.name:<20} {node.ipv4}{v6}  pods {node.pod_cidr}  mac {node.mac}")
    print(f"  client:     {topo.CLIENT_IP_V4}   ext-client: {topo.EXT_CLIENT_IP_V4} (via router)")
    if started:
        print(f"  started:    {', '.join(started)}")
    for name, why in sorted(not_ready.items()):
        print(f"  NOT READY:  {name} after {args.wait_ready:.0f}s: {' | '.join(why.splitlines()) or '-'}"
              f" (its log: {state.log_dir / (name + '.log')})")
    if kubeconfig:
        print(f"  kubeconfig: {kubeconfig}")
        print(f"  export KUBECONFIG={kubeconfig}")
    return 0


# -- down -----------------------------------------------------------------------------------------


def _pids_in_netns(name: str) -> list[int]:
    proc = nsops.run_in(None, ["ip", "netns", "pids", name], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _end_netns_processes(names: list[str], grace: float = 3.0) -> int:
    """End (by PID) anything still running inside lab namespaces: crash leftovers, pod servers."""
    pids = sorted({pid for n in names if nsops.netns_exists(n) for pid in _pids_in_netns(n)})
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    recs = [ProcessRecord("netns-leftover", p, None, [], None, None) for p in pids]
    while time.monotonic() < deadline and any(r.alive() for r in recs):
        time.sleep(0.05)
    for r in recs:
        if r.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.pid, signal.SIGKILL)
    return len(pids)


def _netns_delete_order(name: str) -> int:
    """Pods first, then everything else, the bridge namespace last."""
    if name.startswith(topo.POD_NETNS_PREFIX):
        return 0
    return 2 if name == topo.BRIDGE_NETNS else 1


def _down_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-logs", action="store_true", help="keep the state dir's logs/ for debugging")
    _add_state_dir(parser)


def _run_down(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    if _refuse_other_lab(_state_dir(args), "down"):
        return 1
    state = LabState(_state_dir(args))
    removed = containers.down(state) if state.data.get("containers") else 0
    records = list(reversed(state.processes))
    killed = end_processes(records, grace=5.0)
    for r in records:
        if r.name in ("router-zebra", "router-bgpd"):
            # FRR keeps a per-PID crash-log dir; it only removes it on a clean exit.
            shutil.rmtree(f"/var/tmp/frr/{r.name.removeprefix('router-')}.{r.pid}", ignore_errors=True)
    namespaces = set(state.namespaces) | {n for n in nsops.list_netns() if topo.is_lab_netns(n)}
    leftovers = _end_netns_processes(sorted(namespaces))
    errors: list[str] = []
    for name in sorted(namespaces, key=lambda n: (_netns_delete_order(n), n)):
        try:
            nsops.delete_netns(name)
        except (nsops.NetnsError, subprocess.SubprocessError) as e:
            errors.append(str(e))
    _remove_state(state, keep_logs=args.keep_logs)
    release_lab(state.dir)
    elapsed = time.monotonic() - t0
    print(
        f"lab down in {elapsed:.1f}s: {len(records)} recorded processes ({len(killed)} needed SIGKILL), "
        f"{leftovers} leftover in namespaces, {len(namespaces)} namespaces removed"
        + (f", {removed} containers removed" if removed else "")
    )
    for err in errors:
        print(f"  error: {err}", file=sys.stderr)
    return 1 if errors else 0


def _remove_state(state: LabState, keep_logs: bool) -> None:
    """Remove what the lab wrote (never the state dir's unknown contents)."""
    shutil.rmtree(rtr.runtime_dir(state.dir), ignore_errors=True)
    if not state.dir.exists():
        return
    for name in ("state.json", "kubeconfig", "kubeconfig-nodes"):
        with contextlib.suppress(FileNotFoundError):
            (state.dir / name).unlink()
    for sub in ("router", "agents", "run", "pods") + (() if keep_logs else ("logs",)):
        shutil.rmtree(state.dir / sub, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(rtr.RUNTIME_ROOT)
    for tmp in state.dir.glob(".state.*.json"):
        tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        state.dir.rmdir()


# -- exec -----------------------------------------------------------------------------------------


def _exec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", help="client, router, ext-client or a node (kind-control-plane, kind-worker, ...)"
    )
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    _add_state_dir(parser)


def _run_exec(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if "--" in cmd:
        # Options given after NAME but before `--` (REMAINDER swallows them): only --state-dir.
        pre, cmd = cmd[: cmd.index("--")], cmd[cmd.index("--") + 1 :]
        if pre and not (len(pre) == 2 and pre[0] == "--state-dir"):
            print(f"unexpected arguments before --: {' '.join(pre)}", file=sys.stderr)
            return 2
    if not cmd:
        cmd = [os.environ.get("SHELL", "/bin/sh")]
    if not topo.is_lab_netns(args.name) or not nsops.netns_exists(args.name):
        print(f"no lab namespace {args.name!r} (is the lab up?)", file=sys.stderr)
        return 2
    ip = shutil.which("ip") or "/usr/sbin/ip"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(ip, [ip, "netns", "exec", args.name, *cmd])
    return 127  # not reached


# -- status ---------------------------------------------------------------------------------------


def _addresses(name: str) -> str:
    proc = nsops.run_in(None, ["ip", "-n", name, "-j", "addr", "show"], check=False)
    try:
        links = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        return "?"
    out = []
    for link in links:
        if link.get("ifname") == "lo":
            continue
        for a in link.get("addr_info", []):
            if a.get("scope") == "global":
                out.append(f"{link['ifname']}:{a['local']}/{a['prefixlen']}")
    return " ".join(out) or "-"


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    _add_state_dir(parser)


def _run_status(args: argparse.Namespace) -> int:
    state = LabState(_state_dir(args))
    present = nsops.list_netns()
    names = list(dict.fromkeys(state.namespaces + [n for n in present if topo.is_lab_netns(n)]))
    procs = state.processes
    router_kind = (state.data.get("config") or {}).get("router", "none")
    neighbors: dict[str, str] = {}
    neighbor_error = ""
    if router_kind in ("frr", "bird") and topo.ROUTER in present:
        try:
            neighbors = rtr.bgp_neighbors(router_kind, rtr.RouterPaths(rtr.runtime_dir(state.dir)))
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            neighbor_error = str(e)
    if args.json:
        out = {
            "state_dir": str(state.dir),
            "namespaces": {
                n: {"exists": n in present, "addresses": _addresses(n) if n in present else ""} for n in names
            },
            "processes": [{**p.to_dict(), "alive": p.alive()} for p in procs],
            "bgp_neighbors": neighbors,
            "apiserver": state.data.get("apiserver"),
        }
        print(json.dumps(out, indent=2))
        return 0
    if not state.exists() and not names:
        print("lab is down")
        return 0
    print(f"state dir: {state.dir}")
    print(f"\n{'NAMESPACE':<22} {'STATE':<8} ADDRESSES")
    for n in names:
        print(f"{n:<22} {'up' if n in present else 'missing':<8} {_addresses(n) if n in present else ''}")
    print(f"\n{'PROCESS':<28} {'PID':>7} {'STATE':<6} {'NETNS':<20} LOG")
    for p in procs:
        print(
            f"{p.name:<28} {p.pid:>7} {'alive' if p.alive() else 'dead':<6} "
            f"{p.netns or '(host)':<20} {p.log or ''}"
        )
    if router_kind in ("frr", "bird"):
        mode = (state.data.get("config") or {}).get("bgp_mode", "ebgp")
        print(f"\nBGP NEIGHBORS of router ({router_kind}, {mode}, AS {topo.router_asn(mode)})")
        node_by_ip = {}
        for node in (state.data.get("topology") or {}).get("nodes", []):
            node_by_ip[node["ipv4"]] = node["name"]
            if node.get("ipv6"):
                node_by_ip[node["ipv6"]] = node["name"]
        for addr, st in sorted(neighbors.items()):
            print(f"  {addr:<28} {node_by_ip.get(addr, ''):<20} {st}")
        if neighbor_error:
            print(f"  ({neighbor_error})")
    api = state.data.get("apiserver") or {}
    if api:
        print(
            f"\napiserver: {api.get('url') or api.get('kubeconfig')}  kubeconfig: {state.dir / 'kubeconfig'}"
        )
    return 0


# -- registration as lab.commands.<name> ------------------------------------------------------------


def _register(name: str, doc: str, add_arguments: Callable[..., None], run: Callable[..., int]) -> None:
    mod = types.ModuleType(f"{__name__}.{name}", doc)
    mod.add_arguments = add_arguments  # type: ignore[attr-defined]
    mod.run = run  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod


_register("up", "bring the lab up (idempotent)", _up_arguments, _run_up)
_register("down", "remove every lab namespace and process", _down_arguments, _run_down)
_register("exec", "run a command in a lab namespace", _exec_arguments, _run_exec)
_register("status", "what runs where", _status_arguments, _run_status)

# Public aliases for tests and other tools.
run_up = _run_up
run_down = _run_down
run_status = _run_status

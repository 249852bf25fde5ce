"""`lbspeaker-lab up --image IMAGE`: the controller and the speakers run from the image, with podman.

Each container gets what the RENDERED manifests (`manifests/`, through lbspeaker's kustomize
renderer) give its pod, so the lab runs what a cluster would: command and args (with `$(VAR)`
expanded from the container's env, as the kubelet does), env with its fieldRefs resolved, user
and groups, capabilities, read-only root filesystem, no privilege escalation, emptyDir volumes
(as tmpfs) and a ServiceAccount token at the usual path. A `hostNetwork` pod (the speaker) joins
its node's network namespace; the controller, a pod-network pod in a cluster, runs in the
control-plane node's namespace, where it reaches the API server at the node-side address.

Credentials: the container gets the pod's ServiceAccount directory
(/var/run/secrets/kubernetes.io/serviceaccount: token, namespace, and ca.crt when the API
server has a CA) and the in-cluster environment (KUBERNETES_SERVICE_HOST/PORT). An https API
server (`--kubeconfig` of a real cluster) is reached the in-cluster way, with a TokenRequest
token for the pod's ServiceAccount. The lab API server speaks plain http, which in-cluster
config cannot (the client builds https://HOST:PORT), so there the container also gets a
kubeconfig naming that token FILE and `--kubeconfig` after the manifest's args.

The pure half (`container_plan`) turns a rendered pod template into the `podman run` argv;
the rest starts, inspects and removes containers by their ID, never by a name pattern.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab.state import LabState, end_processes
from lbspeaker.lbctl import kustomize

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFESTS_DIR = REPO_ROOT / "manifests"
# crun fails on this kernel's hybrid cgroups; raising rlimits is not permitted here.
PODMAN = ["podman", "--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
LAB_SECRETS_DIR = "/var/run/secrets/lbspeaker-lab"
LAB_KUBECONFIG = f"{LAB_SECRETS_DIR}/kubeconfig"
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|k|M|G)?$")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


class ManifestError(ValueError):
    """The rendered manifests ask for something the lab cannot give a container."""


@dataclass(frozen=True)
class PodContext:
    """What the API server and kubelet would fill in for one pod."""

    pod_name: str
    namespace: str
    node_name: str
    netns: str
    api_host: str  # the API server as the pod reaches it (the in-cluster environment)
    api_port: int


@dataclass(frozen=True)
class ContainerPlan:
    """One container to run: its podman name, the lab's process name for it (`controller`,
    `speaker-NODE`: the names the working-tree processes have), the `podman run` argv."""

    name: str
    record: str
    argv: list[str]
    service_account: str | None
    netns: str
    namespace: str
    secrets_dir: Path


# -- pure: rendered manifests -> podman run -------------------------------------------------------


def workload(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The rendered Deployment/DaemonSet `name`."""
    for obj in objects:
        if obj.get("kind") == kind and (obj.get("metadata") or {}).get("name") == name:
            return obj
    raise ManifestError(f"the rendered manifests have no {kind} {name!r}")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: a known variable is replaced, `$$` is a literal `$`,
    an unknown reference stays as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, value)


def _field_ref(path: str, ctx: PodContext, service_account: str | None) -> str:
    values = {
        "metadata.name": ctx.pod_name,
        "metadata.namespace": ctx.namespace,
        "spec.nodeName": ctx.node_name,
        "spec.serviceAccountName": service_account or "default",
    }
    if path not in values:
        raise ManifestError(f"fieldRef {path!r} is not one the lab fills in ({', '.join(values)})")
    return values[path]


def container_env(container: dict[str, Any], ctx: PodContext, service_account: str | None) -> dict[str, str]:
    """The container's environment as the kubelet sets it: the in-cluster variables, then its own
    `env` in order (each may refer to the ones before it with `$(VAR)`)."""
    env = {
        "KUBERNETES_SERVICE_HOST": ctx.api_host,
        "KUBERNETES_SERVICE_PORT": str(ctx.api_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(ctx.api_port),
    }
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            env[name] = expand(str(item["value"]), env)
        elif "fieldRef" in (item.get("valueFrom") or {}):
            env[name] = _field_ref(item["valueFrom"]["fieldRef"]["fieldPath"], ctx, service_account)
        else:
            raise ManifestError(f"env {name}: only value and fieldRef are supported by the lab")
    return env


def _bytes(quantity: str) -> int:
    m = _QUANTITY.match(str(quantity))
    if not m:
        raise ManifestError(f"cannot read the quantity {quantity!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def container_plan(
    workload_obj: dict[str, Any],
    container_name: str,
    ctx: PodContext,
    image: str,
    secrets_dir: Path,
    log_path: Path,
    extra_args: list[str] | None = None,
    record: str | None = None,
) -> ContainerPlan:
    """The `podman run` argv for one container of a workload's pod template.

    `secrets_dir` holds `serviceaccount/` (mounted at the usual path) and, for an http API
    server, `kubeconfig`; `extra_args` go after the manifest's args (the lab's `--kubeconfig`).
    """
    pod = ((workload_obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    matches = [c for c in pod.get("containers") or [] if c.get("name") == container_name]
    if not matches:
        raise ManifestError(f"{workload_obj['metadata']['name']} has no container {container_name!r}")
    c = matches[0]
    pod_sc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    service_account = pod.get("serviceAccountName")
    env = container_env(c, ctx, service_account)
    name = f"lbspeaker-lab-{ctx.pod_name}"
    argv = ["run", "--detach", "--rm", "--pull", "never", "--name", name, *ULIMITS]
    hostname = ctx.node_name if pod.get("hostNetwork") else ctx.pod_name
    argv += [
        "--network",
        f"ns:/run/netns/{ctx.netns}",
        "--hostname",
        hostname,
        # /etc/hosts names the host, as on a node (kind's lists the node; Debian writes 127.0.1.1)
        # and in a pod (the kubelet adds the pod's name): without it, ExaBGP's import-time
        # socket.getfqdn() asks DNS, which a lab namespace cannot reach: 5 s per ExaBGP start.
        "--add-host",
        f"{hostname}:127.0.1.1",
    ]
    argv += ["--log-driver", "k8s-file", "--log-opt", f"path={log_path}"]
    argv += ["--stop-timeout", str(pod.get("terminationGracePeriodSeconds", 30))]
    # identity: the container's securityContext wins over the pod's, as in Kubernetes
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and uid in (None, 0):
        raise ManifestError(f"{container_name}: runAsNonRoot needs a non-zero runAsUser the lab can check")
    if uid is not None:
        argv += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
    if pod_sc.get("fsGroup") is not None:
        argv += ["--group-add", str(pod_sc["fsGroup"])]
    for g in pod_sc.get("supplementalGroups") or []:
        argv += ["--group-add", str(g)]
    if sc.get("privileged"):
        argv.append("--privileged")
    caps = sc.get("capabilities") or {}
    for cap in caps.get("drop") or []:
        argv += ["--cap-drop", "all" if str(cap).upper() == "ALL" else str(cap)]
    if caps.get("add"):
        argv += ["--cap-add", ",".join(str(x) for x in caps["add"])]
    if sc.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        argv += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        raise ManifestError(f"{container_name}: seccompProfile {seccomp!r} is not supported by the lab")
    if sc.get("readOnlyRootFilesystem"):
        # only the pod's volumes are writable, not podman's default tmpfs on /tmp, /run, /var/tmp
        argv += ["--read-only", "--read-only-tmpfs=false"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in c.get("volumeMounts") or []:
        vol = volumes.get(mount["name"])
        if vol is None or "emptyDir" not in vol:
            raise ManifestError(
                f"{container_name}: volume {mount['name']!r}: only emptyDir volumes are supported"
            )
        size = (vol.get("emptyDir") or {}).get("sizeLimit")
        opts = f"type=tmpfs,destination={mount['mountPath']},tmpfs-mode=1777"
        argv += ["--mount", opts + (f",tmpfs-size={_bytes(size)}" if size else "")]
    if pod.get("automountServiceAccountToken", True):
        argv += ["--volume", f"{secrets_dir / 'serviceaccount'}:{SA_DIR}:ro"]
    if extra_args:
        argv += ["--volume", f"{secrets_dir}/kubeconfig:{LAB_KUBECONFIG}:ro"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    if c.get("workingDir"):
        argv += ["--workdir", c["workingDir"]]
    command = [expand(str(x), env) for x in c.get("command") or []]
    args = [expand(str(x), env) for x in c.get("args") or []] + list(extra_args or [])
    if command:
        argv += ["--entrypoint", json.dumps(command)]
    argv += [image, *args]
    return ContainerPlan(
        name=name,
        record=record or ctx.pod_name,
        argv=argv,
        service_account=service_account,
        netns=ctx.netns,
        namespace=ctx.namespace,
        secrets_dir=secrets_dir,
    )


def render_manifests(directory: Path = MANIFESTS_DIR) -> list[dict[str, Any]]:
    """What `kubectl apply -k manifests/` would apply (lbspeaker's own renderer)."""
    return kustomize.render(directory)


def lab_kubeconfig(server: str, ca_file: str | None) -> dict[str, Any]:
    """A kubeconfig that reads the ServiceAccount token from its file, as in-cluster config does."""
    cluster: dict[str, Any] = {"server": server}
    if ca_file:
        cluster["certificate-authority"] = ca_file
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": cluster}],
        "users": [{"name": "serviceaccount", "user": {"tokenFile": f"{SA_DIR}/token"}}],
        "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "serviceaccount"}}],
        "current-context": "in-cluster",
    }


def api_endpoint(server: str) -> tuple[str, int, bool]:
    """(host, port, https) of an API server URL."""
    u = urllib.parse.urlsplit(server)
    https = u.scheme == "https"
    return u.hostname or "", u.port or (443 if https else 80), https


# -- podman ---------------------------------------------------------------------------------------


def podman_available() -> str | None:
    """Why podman cannot run the image here, or None."""
    if shutil.which("podman") is None or shutil.which("runc") is None:
        return "podman and runc are not installed (`sudo ./dev image` installs them)"
    return None


def podman(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"podman {' '.join(args[:2])} failed: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def image_exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


def inspect(container_id: str) -> dict[str, Any] | None:
    """podman's view of one container (None once it is gone)."""
    proc = podman("container", "inspect", container_id, check=False)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout or "[]")
    return dict(data[0]) if data else None


def run(plan: ContainerPlan) -> tuple[str, int]:
    """Start the container; returns (container ID, PID of its first process)."""
    stale = inspect(plan.name)
    if stale is not None:  # a leftover of a crashed lab under the exact name this lab uses
        remove(str(stale["Id"]))
    cid = podman(*plan.argv, timeout=120).stdout.strip()
    info = inspect(cid) or {}
    pid = int((info.get("State") or {}).get("Pid") or 0)
    if not pid:
        logs = podman("logs", cid, check=False).stdout[-2000:]
        raise RuntimeError(f"container {plan.name} did not start:\n{logs}")
    return cid, pid


def remove(container_id: str, grace: int = 5) -> None:
    """Stop (SIGTERM, then SIGKILL after `grace` s) and remove one container, by ID."""
    podman("rm", "--force", "--time", str(grace), container_id, check=False, timeout=grace + 60)


def write_secrets(
    directory: Path, namespace: str, token: str, ca_pem: bytes | None, kubeconfig: dict[str, Any] | None
) -> None:
    """The pod's ServiceAccount directory (and the lab's kubeconfig), readable by the container's user."""
    sa = directory / "serviceaccount"
    sa.mkdir(parents=True, exist_ok=True)
    (sa / "token").write_text(token)
    (sa / "namespace").write_text(namespace)
    if ca_pem:
        (sa / "ca.crt").write_bytes(ca_pem)
    if kubeconfig is not None:
        (directory / "kubeconfig").write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
    for p in [directory, sa, *sa.iterdir(), *directory.glob("kubeconfig")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


# -- the lab's controller and speakers from the image ---------------------------------------------


def _token(kube: Any, namespace: str, service_account: str, fallback: str) -> str:
    """A TokenRequest token for the ServiceAccount, as the kubelet projects it; an API server
    without the subresource (the lab's) gets the kubeconfig's own token."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 86400},
    }
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
    try:
        return str(kube.request("POST", path, body)["status"]["token"])
    except Exception as e:  # the lab API server has no TokenRequest (404)
        if getattr(e, "status", None) not in (404, 405):
            raise
        return fallback


def _cluster(kubeconfig: dict[str, Any]) -> tuple[str, bytes | None, str]:
    """(server, CA PEM, user token) of a kubeconfig's current context."""
    import base64

    ctx_name = kubeconfig.get("current-context")
    ctx = next((c["context"] for c in kubeconfig.get("contexts") or [] if c["name"] == ctx_name), None)
    ctx = ctx or (kubeconfig.get("contexts") or [{"context": {}}])[0]["context"]
    cluster = (
        next(c["cluster"] for c in kubeconfig["clusters"] if c["name"] == ctx.get("cluster"))
        if ctx.get("cluster")
        else kubeconfig["clusters"][0]["cluster"]
    )
    user = next(
        (u.get("user") or {} for u in kubeconfig.get("users") or [] if u["name"] == ctx.get("user")), {}
    )
    ca: bytes | None = None
    if cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"])
    elif cluster.get("certificate-authority"):
        ca = Path(cluster["certificate-authority"]).read_bytes()
    return str(cluster["server"]), ca, str(user.get("token") or "lab-token")


def plan_lab_containers(
    objects: list[dict[str, Any]],
    image: str,
    nodes: list[tuple[str, bool]],
    server: str,
    state_dir: Path,
    log_dir: Path,
    controller: bool = True,
    speakers: bool = True,
) -> list[ContainerPlan]:
    """Pure: the controller (in the first control-plane node's namespace) and one speaker per node.

    `nodes` is [(name, control_plane)]; `server` is the API server as the nodes reach it.
    """
    host, port, https = api_endpoint(server)
    extra = [] if https else [f"--kubeconfig={LAB_KUBECONFIG}"]
    plans = []
    cp = next((n for n, is_cp in nodes if is_cp), nodes[0][0])
    if controller:
        dep = workload(objects, "Deployment", "controller")
        ns = dep["metadata"]["namespace"]
        ctx = PodContext("controller-0", ns, cp, cp, host, port)
        plans.append(
            container_plan(
                dep,
                "controller",
                ctx,
                image,
                state_dir / "pods" / ctx.pod_name,
                log_dir / "controller.log",
                extra,
                "controller",
            )
        )
    if speakers:
        ds = workload(objects, "DaemonSet", "speaker")
        ns = ds["metadata"]["namespace"]
        for node, _ in nodes:
            ctx = PodContext(f"speaker-{node}", ns, node, node, host, port)
            plans.append(
                container_plan(
                    ds,
                    "speaker",
                    ctx,
                    image,
                    state_dir / "pods" / ctx.pod_name,
                    log_dir / f"speaker-{node}.log",
                    extra,
                    f"speaker-{node}",
                )
            )
    return plans


def write_pod_secrets(
    plan: ContainerPlan, kube: Any, nodes_kubeconfig: dict[str, Any], namespace: str
) -> None:
    """Token, namespace and CA for one container (and, for an http server, its kubeconfig)."""
    server, ca, fallback = _cluster(nodes_kubeconfig)
    token = _token(kube, namespace, plan.service_account or "default", fallback)
    https = api_endpoint(server)[2]
    kubeconfig = None if https else lab_kubeconfig(server, f"{SA_DIR}/ca.crt" if ca else None)
    write_secrets(plan.secrets_dir, namespace, token, ca, kubeconfig)


def up(
    state: LabState,
    image: str,
    nodes: list[tuple[str, bool]],
    kube: Any,
    nodes_kubeconfig: Path,
    controller: bool = True,
    speakers: bool = True,
) -> list[str]:
    """Run the controller and the speakers from `image` (idempotent: a running container of the
    same image in the current namespace is kept); returns the names started."""
    why = podman_available()
    if why:
        raise SystemExit(f"lab: --image needs podman: {why}")
    if not image_exists(image):
        raise SystemExit(
            f"lab: image {image!r} is not in podman's local store: build it with `sudo ./dev image`"
        )
    objects = render_manifests()
    for sa in (o for o in objects if o.get("kind") == "ServiceAccount"):  # for their TokenRequests
        kube.merge(f"/api/v1/namespaces/{sa['metadata']['namespace']}/serviceaccounts", sa)
    kc = yaml.safe_load(nodes_kubeconfig.read_text())
    server = _cluster(kc)[0]
    plans = plan_lab_containers(objects, image, nodes, server, state.dir, state.log_dir, controller, speakers)
    containers: dict[str, Any] = state.data.setdefault("containers", {})
    started = []
    for plan in plans:
        known = containers.get(plan.record)
        rec = state.process(plan.record)
        if (
            known
            and known.get("argv") == plan.argv
            and rec is not None
            and rec.alive()
            and rec.in_current_netns()
        ):
            continue
        if known:
            remove(known["id"])
        if rec is not None and not known:  # the working tree's process of that name
            end_processes([rec], grace=3.0)
        state.log_dir.mkdir(parents=True, exist_ok=True)
        write_pod_secrets(plan, kube, kc, plan.namespace)
        cid, pid = run(plan)
        containers[plan.record] = {"id": cid, "name": plan.name, "image": image, "argv": plan.argv}
        state.add_process(
            plan.record, pid, [*PODMAN, *plan.argv], plan.netns, str(state.log_dir / f"{plan.record}.log")
        )
        started.append(plan.record)
    return started


def down(state: LabState, names: list[str] | None = None) -> int:
    """Remove the lab's containers (all, or those recorded under `names`) by their IDs."""
    containers: dict[str, Any] = state.data.get("containers") or {}
    gone = [n for n in containers if names is None or n in names]
    for name in gone:
        remove(containers[name]["id"])
        containers.pop(name)
        state.remove_process(name)
    state.save()
    return len(gone)

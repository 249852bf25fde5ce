"""The kubelet (and scheduler) stand-in: Pod objects become pod namespaces with a real HTTP server.

For every Pod bound to a lab node (a Node whose network namespace exists) it creates
netns `lbpod-<uid8>`, a veth pair (`eth0` in the pod, `veth<uid8>` in the node), and
starts `lab.agents.podserver` in the pod on each TCP containerPort (8080 when the pod
declares none). Pods without `spec.nodeName` are first bound round-robin to schedulable
workers (no untolerated NoSchedule/NoExecute taint), through the `pods/binding`
subresource like a real scheduler, or a merge patch of `spec.nodeName` where the API
server has no binding subresource.

Addressing is Calico-like and needs no bridge: the pod has `<ip>/32` on eth0 and a
default route via the node's gateway `10.244.N.1`, which the node holds (as /32) on
every pod veth; the node routes `<ip>/32` to that veth. The gateway is a real local
address on the receiving interface, so ARP works under `arp_ignore=1` (strictARP) too.
Pod IPs are the next free address in 10.244.N.0/24 from .2, and kept across restarts.
When the Node also has an IPv6 podCIDR (an `--ipv6` lab) the pod is dual-stack: the
next free address of that /64 as /128, default route via `fe80::1` on the veth.

Status (`phase: Running`, podIP(s), hostIP(s), conditions, containerStatuses) is written
through `pods/<name>/status` whenever it differs from what the kubelet sees.

**Readiness switch:** annotate a Pod with `lab.lbspeaker.io/ready: "false"` to flip its
Ready/ContainersReady conditions to False (its endpoints turn not-ready, so kube-proxy
stops sending it traffic and ETP Local nodes lose their local endpoint) without killing
it; remove the annotation (or set `"true"`) to make it ready again:

    kubectl annotate pod web-0 lab.lbspeaker.io/ready=false --overwrite

A Pod deleted through the API has its process ended by PID and its namespace removed;
with a graceful deletion (deletionTimestamp set) the kubelet then finishes the delete
with gracePeriodSeconds=0, as a real kubelet does. A podserver that dies on its own is
restarted (restartCount goes up). On restart the kubelet re-adopts running pods from
`<state-dir>/agents/agents.json` (PID + kernel start time guard against recycled PIDs),
so pods keep their IPs and processes. `lbspeaker-lab down` ends every process
inside lab namespaces (pod servers included) and deletes `lbpod-*`; `teardown()` here
does the same from agents.json alone. (Recording pods in the lab's `state.json` is
optional, `--record-lab-state`: `up` rewrites that file from memory, so two writers race.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab import netns as nsops
from lab.agents.kubeapi import ApiError, Informer, KubeApi, Trigger
from lab.agents.nodes import (
    NodeInfo,
    container_ports,
    is_schedulable,
    node_info,
    node_ready,
    readiness_wanted,
    taints_once_ready,
)
from lab.files import write_atomic
from lab.state import LabState, proc_start_time, proc_state

log = logging.getLogger(__name__)

POD_NETNS_PREFIX = "lbpod-"
AGENTS_DIR = "agents"  # under the state dir; `lbspeaker-lab down` removes it
AGENTS_FILE = "agents.json"
DEFAULT_PORT = 8080
GATEWAY6 = "fe80::1"


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodRecord:
    """One pod the kubelet runs: enough to re-adopt it after a restart and to end it by PID."""

    uid: str
    namespace: str
    name: str
    node: str
    netns: str
    veth: str
    ip: str
    ports: list[int]
    ip6: str = ""
    pid: int = 0
    start_time: int | None = None
    started_at: str = ""
    restarts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def alive(self) -> bool:
        """Process exists, is not a zombie and is the same process we started (PID not recycled)."""
        if not self.pid:
            return False
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(self.pid, os.WNOHANG)
        st = proc_start_time(self.pid)
        if st is None or (self.start_time is not None and st != self.start_time):
            return False
        return proc_state(self.pid) not in (None, "Z", "X")


def pod_netns_name(uid: str, prefix: str = POD_NETNS_PREFIX) -> str:
    """`lbpod-` + the first 8 characters of the Pod's uid (`lbspeaker-lab down` removes every `lbpod-*`)."""
    return prefix + uid.replace("-", "")[:8]


def pod_veth_name(uid: str) -> str:
    """Node-side veth name; 12 characters, within IFNAMSIZ."""
    return "veth" + uid.replace("-", "")[:8]


def pick_ip(pod_cidr: str, used: set[str], wanted: str | None = None) -> str:
    """`wanted` if free and inside the CIDR, else the lowest free address from .2 (.1 is the gateway)."""
    net = ipaddress.ip_network(pod_cidr)
    if wanted:
        try:
            addr = ipaddress.ip_address(wanted)
        except ValueError:
            addr = None
        if addr is not None and addr in net and wanted not in used:
            host = int(addr) - int(net.network_address)
            if 2 <= host < min(net.num_addresses - 1, 1 << 16):
                return str(addr)
    for host in range(2, min(net.num_addresses - 1, 1 << 16)):
        ip = str(net.network_address + host)
        if ip not in used:
            return ip
    raise RuntimeError(f"pod CIDR {pod_cidr} is full")


def pod_status_ips(pod: dict[str, Any]) -> list[str]:
    """podIPs (or podIP) from a Pod's status."""
    st = pod.get("status") or {}
    ips = [p.get("ip") or "" for p in st.get("podIPs") or []]
    return [i for i in ips if i] or ([st["podIP"]] if st.get("podIP") else [])


def tcp_ports(pod: dict[str, Any]) -> list[int]:
    """TCP containerPorts to serve HTTP on (deduplicated), DEFAULT_PORT when none are declared."""
    ports: list[int] = []
    for p in container_ports(pod):
        if (p.get("protocol") or "TCP") == "TCP" and p.get("containerPort"):
            port = int(p["containerPort"])
            if port not in ports:
                ports.append(port)
    return ports or [DEFAULT_PORT]


def desired_status(pod: dict[str, Any], rec: PodRecord, node: NodeInfo, running: bool) -> dict[str, Any]:
    """The status the kubelet reports for a pod it runs (pure; times come from the record/pod)."""
    ready = running and readiness_wanted(pod)
    old = pod.get("status") or {}
    old_conds = {c.get("type"): c for c in old.get("conditions") or []}

    def cond(ctype: str, value: bool) -> dict[str, Any]:
        status = "True" if value else "False"
        prev = old_conds.get(ctype)
        ltt = prev.get("lastTransitionTime") if prev and prev.get("status") == status else None
        return {"type": ctype, "status": status, "lastTransitionTime": ltt or now_rfc3339()}

    containers = []
    for c in (pod.get("spec") or {}).get("containers") or [{"name": "app", "image": "lab/podserver"}]:
        state: dict[str, Any] = (
            {"running": {"startedAt": rec.started_at}}
            if running
            else {"waiting": {"reason": "ContainerCreating"}}
        )
        containers.append(
            {
                "name": c.get("name") or "app",
                "image": c.get("image") or "lab/podserver",
                "imageID": "lab://podserver",
                "containerID": f"lab://{rec.pid}",
                "ready": ready,
                "started": running,
                "restartCount": rec.restarts,
                "state": state,
            }
        )
    return {
        "phase": "Running",
        "hostIP": node.ip,
        "hostIPs": [{"ip": node.ip}] + ([{"ip": node.ip6}] if node.ip6 else []),
        "podIP": rec.ip,
        "podIPs": [{"ip": rec.ip}] + ([{"ip": rec.ip6}] if rec.ip6 else []),
        "startTime": old.get("startTime") or rec.started_at or now_rfc3339(),
        "conditions": [
            cond("PodReadyToStartContainers", True),
            cond("Initialized", True),
            cond("Ready", ready),
            cond("ContainersReady", ready),
            cond("PodScheduled", True),
        ],
        "containerStatuses": containers,
    }


def status_differs(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether a status patch is needed (ignores timestamps, so steady state writes nothing)."""
    if any(current.get(k) != desired.get(k) for k in ("phase", "podIP", "hostIP")):
        return True
    if (current.get("podIPs") or []) != desired["podIPs"]:
        return True
    cur_c = {c.get("type"): c.get("status") for c in current.get("conditions") or []}
    if any(cur_c.get(c["type"]) != c["status"] for c in desired["conditions"]):
        return True
    cur_cs = {c.get("name"): c for c in current.get("containerStatuses") or []}
    for c in desired["containerStatuses"]:
        cc = cur_cs.get(c["name"])
        if not cc or any(cc.get(k) != c[k] for k in ("ready", "started", "restartCount", "containerID")):
            return True
    return False


class AgentsFile:
    """`agents.json` in the state dir: the kubelet's own record of the pods it runs."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / AGENTS_DIR / AGENTS_FILE

    def load(self) -> dict[str, PodRecord]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        out = {}
        for uid, rec in (data.get("pods") or {}).items():
            with contextlib.suppress(TypeError):
                out[uid] = PodRecord(**rec)
        return out

    def save(self, pods: dict[str, PodRecord]) -> None:
        doc = {"version": 1, "pods": {u: asdict(r) for u, r in pods.items()}}
        write_atomic(self.path, json.dumps(doc, indent=2, sort_keys=True) + "\n", mode=0o644)


def end_pid(pid: int, start_time: int | None, grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after `grace`, a process that still is the one recorded."""

    def same() -> bool:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        st = proc_start_time(pid)
        return (
            st is not None and (start_time is None or st == start_time) and proc_state(pid) not in ("Z", "X")
        )

    if not pid or not same():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and same():
        time.sleep(0.02)
    if same():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and same():
            time.sleep(0.02)


def pids_in_netns(name: str) -> list[int]:
    """PIDs of processes inside a network namespace (`ip netns pids`)."""
    out = nsops.run_in(None, ["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]


def teardown(state_dir: Path | str) -> None:
    """End every pod process recorded in agents.json and remove the pod namespaces (for `down`)."""
    f = AgentsFile(Path(state_dir))
    for rec in f.load().values():
        end_pid(rec.pid, rec.start_time)
        for pid in pids_in_netns(rec.netns) if nsops.netns_exists(rec.netns) else []:
            end_pid(pid, None)
        with contextlib.suppress(nsops.NetnsError):
            nsops.delete_netns(rec.netns)
    with contextlib.suppress(FileNotFoundError):
        f.path.unlink()


class Kubelet:
    """Runs the pods of every lab node from one process in the root namespace."""

    def __init__(
        self,
        api: KubeApi,
        pods: Informer,
        nodes: Informer,
        state_dir: Path,
        only_nodes: set[str] | None = None,
        record_in_lab_state: bool = False,
        pod_netns_prefix: str = POD_NETNS_PREFIX,
    ) -> None:
        self.api = api
        self.pods = pods
        self.nodes = nodes
        self.state_dir = Path(state_dir)
        self.only_nodes = only_nodes
        self.record_in_lab_state = record_in_lab_state
        self.pod_netns_prefix = pod_netns_prefix
        self.file = AgentsFile(self.state_dir)
        self.records: dict[str, PodRecord] = self.file.load()
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.trigger = Trigger()
        pods.add_listener(self.trigger)
        nodes.add_listener(self.trigger)
        self._rr = 0
        self._binding_supported = True
        self.log_dir = self.state_dir / "logs"

    # -- node view ---------------------------------------------------------------------------------
    def lab_nodes(self) -> dict[str, tuple[NodeInfo, dict[str, Any]]]:
        """Nodes this kubelet serves: lab-shaped Node objects whose namespace exists."""
        out = {}
        for n in self.nodes.items():
            info = node_info(n)
            if info is None or (self.only_nodes is not None and info.name not in self.only_nodes):
                continue
            if nsops.netns_exists(info.name):
                out[info.name] = (info, n)
        return out

    # -- main loop ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Reconcile on every change (debounced) and every few seconds (to notice dead processes)."""
        self.pods.synced.wait()
        self.nodes.synced.wait()
        while not stop.is_set():
            try:
                self.reconcile()
            except Exception:
                log.exception("kubelet reconcile failed")
            self.trigger.wait(2.0)

    def reconcile(self) -> None:
        nodes = self.lab_nodes()
        self.lift_not_ready_taints(nodes)
        pods = self.pods.items()
        self._schedule(pods, nodes)
        seen: set[str] = set()
        changed = False
        started: list[str] = []
        to_report: list[tuple[dict[str, Any], NodeInfo]] = []
        for pod in pods:
            md = pod.get("metadata") or {}
            uid = md.get("uid") or ""
            node_name = (pod.get("spec") or {}).get("nodeName")
            if not uid or node_name not in nodes:
                continue
            seen.add(uid)
            phase = (pod.get("status") or {}).get("phase")
            if md.get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
                if uid in self.records:
                    self._stop_pod(uid)
                    changed = True
                if md.get("deletionTimestamp"):
                    self._finish_delete(pod)
                continue
            info = nodes[node_name][0]
            try:
                if self._ensure_pod(pod, info):
                    changed = True
                    started.append(uid)
                to_report.append((pod, info))
            except Exception as e:
                log.warning("pod %s/%s: %s", md.get("namespace"), md.get("name"), e)
        # Pods start in parallel; report once their servers listen (or after 15 s at most).
        self._wait_listening(started, timeout=15.0)
        for pod, info in to_report:
            try:
                self._report(pod, info)
            except Exception as e:
                log.warning("pod status %s: %s", pod["metadata"].get("name"), e)
        for uid in list(self.records):
            if uid not in seen:
                self._stop_pod(uid)
                changed = True
        if changed:
            self.file.save(self.records)

    # -- node lifecycle ----------------------------------------------------------------------------
    def lift_not_ready_taints(self, nodes: dict[str, tuple[NodeInfo, dict[str, Any]]]) -> None:
        """Play the node lifecycle controller: a Ready node loses the not-ready taint.

        The patch carries the resourceVersion it read, so a concurrent edit of the taints is never
        overwritten (409: the next reconcile reads the new version). The scheduler below sees the
        taint gone at once.
        """
        for name, (info, node) in list(nodes.items()):
            taints = taints_once_ready(node)
            if taints is None:
                continue
            rv = (node.get("metadata") or {}).get("resourceVersion")
            try:
                updated = self.api.merge_patch(
                    f"/api/v1/nodes/{name}", {"metadata": {"resourceVersion": rv}, "spec": {"taints": taints}}
                )
            except ApiError as e:
                log.warning("node %s: lifting the not-ready taint: %s", name, e)
                continue
            log.info("node %s is Ready: lifted the node.kubernetes.io/not-ready taint", name)
            nodes[name] = (info, updated)

    # -- scheduling --------------------------------------------------------------------------------
    def _schedule(
        self, pods: list[dict[str, Any]], nodes: dict[str, tuple[NodeInfo, dict[str, Any]]]
    ) -> None:
        pending = [
            p
            for p in pods
            if not (p.get("spec") or {}).get("nodeName")
            and not (p.get("metadata") or {}).get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") in (None, "", "Pending")
        ]
        if not pending:
            return
        ordered = sorted(nodes.values(), key=lambda x: x[0].index)
        for pod in pending:
            candidates = [info.name for info, n in ordered if node_ready(n) and is_schedulable(n, pod)]
            if not candidates:
                continue
            target = candidates[self._rr % len(candidates)]
            self._rr += 1
            self._bind(pod, target)

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        md = pod["metadata"]
        ns, name = md.get("namespace") or "default", md["name"]
        base = f"/api/v1/namespaces/{ns}/pods/{name}"
        if self._binding_supported:
            body = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": ns, "uid": md.get("uid")},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }
            try:
                self.api.create(base + "/binding", body)
                log.info("bound %s/%s to %s", ns, name, node)
                return
            except ApiError as e:
                if e.status not in (404, 405, 501):
                    log.warning("binding %s/%s: %s", ns, name, e)
                    return
        try:
            self.api.merge_patch(base, {"spec": {"nodeName": node}})
            self._binding_supported = False  # this API server has no pods/binding: patch from now on
            log.info("placed %s/%s on %s (spec.nodeName patch)", ns, name, node)
        except ApiError as e:
            log.warning("placing %s/%s: %s", ns, name, e)

    # -- pod lifecycle -----------------------------------------------------------------------------
    def _ensure_pod(self, pod: dict[str, Any], node: NodeInfo) -> bool:
        """Make the pod's namespace, veth, addresses and process exist; True if anything changed."""
        md = pod["metadata"]
        uid = md["uid"]
        rec = self.records.get(uid)
        if rec is not None and rec.node != node.name:  # re-bound elsewhere (only via a real API edit)
            self._stop_pod(uid)
            rec = None
        # Steady state costs a stat and a /proc read per pod, no subprocess (2 shared cores).
        if rec is not None and nsops.netns_exists(rec.netns) and rec.alive():
            return False
        if rec is not None and nsops.netns_exists(rec.netns) and nsops.link_exists(rec.netns, "eth0"):
            # The "container" died (or the agents restarted and it is gone): restart it.
            rec.restarts += 1
            log.info("restarting pod %s/%s (restart %d)", rec.namespace, rec.name, rec.restarts)
            self._start_process(rec)
            self._record_process(rec)
            return True
        others = [
            p
            for p in self.pods.items()
            if (p.get("spec") or {}).get("nodeName") == node.name
            and (p.get("metadata") or {}).get("uid") != uid
        ]
        mine = [r for u, r in self.records.items() if r.node == node.name and u != uid]
        used = {r.ip for r in mine} | {r.ip6 for r in mine if r.ip6}
        used |= {ip for p in others for ip in pod_status_ips(p)}
        status_ips = pod_status_ips(pod)
        wanted = rec.ip if rec else next((i for i in status_ips if ":" not in i), None)
        ip = pick_ip(node.pod_cidr, used, wanted)
        ip6 = ""
        if node.pod_cidr6:
            wanted6 = rec.ip6 if rec and rec.ip6 else next((i for i in status_ips if ":" in i), None)
            ip6 = pick_ip(node.pod_cidr6, used, wanted6)
        if rec is not None:
            end_pid(rec.pid, rec.start_time)
        rec = PodRecord(
            uid=uid,
            namespace=md.get("namespace") or "default",
            name=md["name"],
            node=node.name,
            netns=pod_netns_name(uid, self.pod_netns_prefix),
            veth=pod_veth_name(uid),
            ip=ip,
            ip6=ip6,
            ports=tcp_ports(pod),
            restarts=rec.restarts if rec else 0,
        )
        self.records[uid] = rec
        self.file.save(self.records)  # record the namespace before creating it (crash safety)
        self._plumb(rec, node)
        self._start_process(rec)
        self._record_process(rec)
        log.info(
            "started pod %s/%s on %s at %s ports %s",
            rec.namespace,
            rec.name,
            node.name,
            " ".join(filter(None, [ip, ip6])),
            rec.ports,
        )
        return True

    def _plumb(self, rec: PodRecord, node: NodeInfo) -> None:
        nsops.create_netns(rec.netns)
        nsops.add_veth(node.name, rec.veth, rec.netns, "eth0")
        pod_cmds = [
            f"addr replace {rec.ip}/32 dev eth0",
            f"route replace {node.gateway} dev eth0 scope link",
            f"route replace default via {node.gateway} dev eth0",
        ]
        node_cmds = [
            f"addr replace {node.gateway}/32 dev {rec.veth}",
            f"route replace {rec.ip}/32 dev {rec.veth} scope link src {node.ip}",
        ]
        if rec.ip6:
            # IPv6 the same way, with a link-local gateway (fe80::1 on every pod veth, no DAD wait).
            pod_cmds += [
                f"addr replace {rec.ip6}/128 dev eth0 nodad",
                f"route replace ::/0 via {GATEWAY6} dev eth0",
            ]
            node_cmds += [
                f"addr replace {GATEWAY6}/64 dev {rec.veth} nodad",
                f"route replace {rec.ip6}/128 dev {rec.veth}" + (f" src {node.ip6}" if node.ip6 else ""),
            ]
        nsops.ip_batch(rec.netns, pod_cmds)
        nsops.ip_batch(node.name, node_cmds)

    def _start_process(self, rec: PodRecord) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ready_file = self._ready_file(rec.uid)
        ready_file.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            ready_file.unlink()
        # Nothing else may hold the pod's ports: end leftovers (e.g. a server whose PID was never
        # recorded because the agents were killed mid-start).
        for pid in pids_in_netns(rec.netns):
            end_pid(pid, None)
        argv = [
            sys.executable,
            "-m",
            "lab.agents.podserver",
            "--node",
            rec.node,
            "--pod-ip",
            rec.ip,
            "--pod-name",
            f"{rec.namespace}/{rec.name}",
            "--pod-uid",
            rec.uid,
            "--ready-file",
            str(ready_file),
            *[str(p) for p in rec.ports],
        ]
        logf = open(self.log_dir / f"pod-{rec.namespace}-{rec.name}.log", "ab")  # noqa: SIM115
        try:
            proc = nsops.popen_in(
                rec.netns,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the agents' SIGTERM; `down` ends it by PID
            )
        finally:
            logf.close()
        self.children[proc.pid] = proc
        rec.pid = proc.pid
        rec.start_time = proc_start_time(proc.pid)
        rec.started_at = now_rfc3339()
        self.file.save(self.records)  # a PID is recorded the moment it exists

    def _ready_file(self, uid: str) -> Path:
        return self.state_dir / AGENTS_DIR / "ready" / uid

    def _wait_listening(self, uids: list[str], timeout: float) -> None:
        """Wait until every started pod's server wrote its ready file (or died, or timeout)."""
        deadline = time.monotonic() + timeout
        pending = [u for u in uids if u in self.records]
        while pending and time.monotonic() < deadline:
            pending = [
                u
                for u in pending
                if u in self.records and not self._ready_file(u).exists() and self.records[u].alive()
            ]
            if pending:
                time.sleep(0.02)
        for u in pending:
            rec = self.records[u]
            log.warning("pod %s/%s: server not listening after %.0fs", rec.namespace, rec.name, timeout)

    def _record_process(self, rec: PodRecord) -> None:
        """Put the pod process into the lab's state.json so `down` ends it (best effort)."""
        if not self.record_in_lab_state:
            return
        try:
            st = LabState(self.state_dir)
            st.add_process(
                f"pod/{rec.namespace}/{rec.name}", rec.pid, ["lab.agents.podserver", rec.uid], rec.netns, None
            )
        except Exception as e:
            log.debug("recording pod process in state.json: %s", e)

    def _stop_pod(self, uid: str) -> None:
        rec = self.records.pop(uid, None)
        if rec is None:
            return
        end_pid(rec.pid, rec.start_time)
        self.children.pop(rec.pid, None)
        with contextlib.suppress(nsops.NetnsError):
            nsops.delete_netns(rec.netns)
        with contextlib.suppress(FileNotFoundError):
            self._ready_file(uid).unlink()
        if self.record_in_lab_state:
            with contextlib.suppress(Exception):
                LabState(self.state_dir).remove_process(f"pod/{rec.namespace}/{rec.name}")
        log.info("stopped pod %s/%s", rec.namespace, rec.name)

    def _finish_delete(self, pod: dict[str, Any]) -> None:
        md = pod["metadata"]
        path = f"/api/v1/namespaces/{md.get('namespace') or 'default'}/pods/{md['name']}"
        try:
            self.api.request(
                "DELETE",
                path,
                body={
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": md.get("uid")},
                },
            )
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("finishing delete of %s: %s", path, e)

    def _report(self, pod: dict[str, Any], node: NodeInfo) -> None:
        rec = self.records[pod["metadata"]["uid"]]
        want = desired_status(pod, rec, node, rec.alive() and self._ready_file(rec.uid).exists())
        if not status_differs(pod.get("status") or {}, want):
            return
        md = pod["metadata"]
        path = f"/api/v1/namespaces/{md.get('namespace') or 'default'}/pods/{md['name']}/status"
        try:
            self.api.merge_patch(path, {"status": want})
        except ApiError as e:
            if e.status != 404:
                log.warning("pod status %s: %s", path, e)

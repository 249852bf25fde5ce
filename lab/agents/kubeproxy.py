"""The kube-proxy stand-in: applies `lab.agents.nftrender` output in every node namespace.

One process serves all lab nodes (a Node object whose network namespace exists). On
every change of Services, EndpointSlices, Nodes or the `kube-system/kube-proxy`
ConfigMap (debounced), it re-reads only the Services whose object or EndpointSlices changed
(`nftrender.PortIndex`), updates each node's table with the changed ServicePorts only
(`nftrender.NodeTable`) and, like kube-proxy's nftables mode, sends one `nft -f` transaction
with only that difference: new and changed chains, map element deletes/adds, removal of
chains nothing references any more. A reconcile costs what changed, not the number of
Services (at 10,000 Services a whole render took about 0.8 s of CPU).
The first apply on a node, a missing table at the periodic resync, a change of the fixed
part (node IPs) or a failed incremental transaction instead load the whole table (deleted
and recreated in one transaction, so there is never a moment without rules; established
flows keep their conntrack entries either way).

IPVS mode (`mode: ipvs` in the ConfigMap's `config.conf`): like kube-proxy, every
clusterIP and LoadBalancer IP is bound (/32, /128) to a `kube-ipvs0` interface on every
node, left administratively down. The addresses are local, so -- unless
`arp_ignore=1`/`arp_announce=2` -- each node's kernel answers ARP for every LB IP: the
failure strictARP exists for. With `ipvs.strictARP: true` the stand-in sets those two
sysctls on the node (`net.ipv4.conf.all.*`), exactly what kube-proxy does; it never
resets them (nor does kube-proxy). Forwarding itself stays nftables DNAT in every mode.
kube-ipvs0 is a `dummy` link; kernels without the dummy driver get an `ifb` link,
which is just as NOARP and just as local for ARP purposes.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Any

from lab import netns as nsops
from lab.agents.kubeapi import Informer, Trigger
from lab.agents.nftrender import (
    TABLE,
    Fragment,
    FragmentKey,
    NodeTable,
    PortIndex,
    ServicePort,
    base,
    fragment,
    full_text,
    parse_kube_proxy_config,
    vip_addresses,
)
from lab.agents.nodes import NodeInfo, node_info, node_ips

log = logging.getLogger(__name__)

IPVS_IFACE = "kube-ipvs0"
STRICT_ARP_SYSCTLS = {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"}


class KubeProxy:
    """Programs every lab node; remembers the ruleset last applied per node to send only changes."""

    def __init__(
        self,
        services: Informer,
        slices: Informer,
        nodes: Informer,
        configmaps: Informer,
        only_nodes: set[str] | None = None,
        cluster_cidr: str = "10.244.0.0/16",
        cluster_cidr6: str | None = "fd00:10:244::/48",
    ) -> None:
        self.services = services
        self.slices = slices
        self.nodes = nodes
        self.configmaps = configmaps
        self.only_nodes = only_nodes
        self.cluster_cidr = cluster_cidr
        self.cluster_cidr6 = cluster_cidr6
        self.index = PortIndex()
        self.tables: dict[str, NodeTable] = {}
        self.in_sync: set[str] = set()  # nodes whose kernel table is the NodeTable (last apply worked)
        self.full_loads = 0  # how many whole-table loads (first, resync, recovery): for tests/benches
        self.vips: dict[str, set[str]] = {}
        self.sysctls_done: set[str] = set()
        self.ipvs_off: set[str] = set()  # nodes known to have no kube-ipvs0
        self.trigger = Trigger()
        for inf in (services, slices, nodes, configmaps):
            inf.add_listener(self.trigger)

    def mode(self) -> tuple[str, bool]:
        return parse_kube_proxy_config(self.configmaps.get("kube-system", "kube-proxy"))

    def lab_nodes(self) -> list[tuple[NodeInfo, dict[str, Any]]]:
        out = []
        for n in self.nodes.items():
            info = node_info(n)
            if info is None or (self.only_nodes is not None and info.name not in self.only_nodes):
                continue
            if nsops.netns_exists(info.name):
                out.append((info, n))
        return sorted(out, key=lambda x: x[0].index)

    def run(self, stop: threading.Event) -> None:
        for inf in (self.services, self.slices, self.nodes, self.configmaps):
            inf.synced.wait()
        resync = True
        while not stop.is_set():
            try:
                self.reconcile(verify=resync)
            except Exception:
                log.exception("kube-proxy reconcile failed")
            # The periodic resync also re-applies a ruleset someone flushed or a lost kube-ipvs0.
            resync = not self.trigger.wait(15.0, debounce=0.1)

    def reconcile(self, verify: bool = True) -> None:
        """Apply what changed to every node; `verify` also checks the kernel (else trusts `in_sync`)."""
        mode, strict_arp = self.mode()
        changed = self.index.update(self.services.items(), self.slices.items())
        vips = set(vip_addresses(self.index.ports())) if mode == "ipvs" else set()
        shared: dict[FragmentKey, Fragment] = {}  # one fragment per port for all nodes but ETP Local
        nodes = self.lab_nodes()
        for name in set(self.tables) - {info.name for info, _ in nodes}:
            # gone (or its namespace is): it misses changes from now on, so it starts over if back
            del self.tables[name]
            self.in_sync.discard(name)
        for done, (info, node) in enumerate(nodes):
            try:
                self._reconcile_node(info, node, changed, shared, verify)
                self._sync_ipvs(info.name, mode == "ipvs", vips)
                if mode == "ipvs" and strict_arp and info.name not in self.sysctls_done:
                    nsops.set_sysctls(info.name, STRICT_ARP_SYSCTLS)
                    self.sysctls_done.add(info.name)
                elif not (mode == "ipvs" and strict_arp):
                    self.sysctls_done.discard(info.name)
            except Exception:
                # `changed` is consumed: this node and those after it start over next time
                for later, _ in nodes[done:]:
                    self.tables.pop(later.name, None)
                    self.in_sync.discard(later.name)
                raise

    def _reconcile_node(
        self,
        info: NodeInfo,
        node: dict[str, Any],
        changed: dict[str, ServicePort | None],
        shared: dict[FragmentKey, Fragment],
        verify: bool,
    ) -> None:
        """Bring one node's NodeTable up to date with `changed` and send the result to its kernel."""
        v6 = [ip for ip in node_ips(node) if ":" in ip]
        has6 = bool(v6)

        def frag(sp: ServicePort) -> Fragment:
            return fragment(sp, info.name, has6, self.cluster_cidr, self.cluster_cidr6, shared)

        table = self.tables.get(info.name)
        node_base = base(info.ip, v6[0] if v6 else None)
        if table is None or table.base != node_base:  # first sight of the node, or its IPs moved
            table = self.tables[info.name] = NodeTable(node_base)
            table.update({sp.key: frag(sp) for sp in self.index.ports()}, delta=False)
            self.in_sync.discard(info.name)
            delta = None
        else:
            delta = table.update({k: frag(sp) if sp is not None else None for k, sp in changed.items()})
        self._apply(info.name, table, delta, verify)
        if verify:
            self.vips.pop(info.name, None)
            self.ipvs_off.discard(info.name)

    def _apply(self, node: str, table: NodeTable, delta: str | None, verify: bool) -> None:
        """Send `delta`; if the kernel table is not known to match, or that fails, the whole table."""
        n_ports = len(self.index.by_key)
        if node in self.in_sync and verify and not self._table_present(node):
            self.in_sync.discard(node)  # flushed or lost: rebuild it
        if node in self.in_sync and delta is not None:
            if delta == "":
                return
            try:
                nsops.run_in(node, ["nft", "-f", "-"], input=delta)
                log.info("kube-proxy: updated %s (%d service ports)", node, n_ports)
                return
            except nsops.NetnsError as e:
                log.warning("kube-proxy: incremental nft on %s failed, loading the whole table: %s", node, e)
        self.in_sync.discard(node)
        try:
            nsops.run_in(node, ["nft", "-f", "-"], input=full_text(table.ruleset(), node))
            self.in_sync.add(node)
            self.full_loads += 1
            log.info("kube-proxy: applied %d service ports on %s", n_ports, node)
        except nsops.NetnsError as e:
            log.error("kube-proxy: nft on %s failed: %s", node, e)

    def _table_present(self, node: str) -> bool:
        return nsops.run_in(node, ["nft", "list", "table", "inet", TABLE], check=False).returncode == 0

    def _sync_ipvs(self, node: str, enabled: bool, vips: set[str]) -> None:
        """Bind exactly `vips` to kube-ipvs0 (IPVS mode) or remove the interface (other modes)."""
        if not enabled:
            if node not in self.ipvs_off:
                if nsops.link_exists(node, IPVS_IFACE):
                    nsops.run_in(node, ["ip", "link", "del", IPVS_IFACE], check=False)
                self.vips.pop(node, None)
                self.ipvs_off.add(node)
            return
        self.ipvs_off.discard(node)
        have = self.vips.get(node)
        if have is None:  # first time, after a restart, or on resync: look at the kernel
            if not nsops.link_exists(node, IPVS_IFACE):
                # kube-proxy uses a dummy link; kernels without the dummy driver get an ifb one.
                made = nsops.run_in(node, ["ip", "link", "add", IPVS_IFACE, "type", "dummy"], check=False)
                if made.returncode != 0:
                    nsops.run_in(node, ["ip", "link", "add", IPVS_IFACE, "type", "ifb"])
                have = set()
            else:
                out = nsops.run_in(node, ["ip", "-o", "addr", "show", "dev", IPVS_IFACE], check=False).stdout
                have = {ln.split()[3].split("/")[0] for ln in out.splitlines() if len(ln.split()) > 3}
        cmds = []
        for ip in sorted(vips - have):
            plen = 128 if ipaddress.ip_address(ip).version == 6 else 32
            cmds.append(f"addr replace {ip}/{plen} dev {IPVS_IFACE}")
        for ip in sorted(have - vips):
            plen = 128 if ipaddress.ip_address(ip).version == 6 else 32
            cmds.append(f"addr del {ip}/{plen} dev {IPVS_IFACE}")
        if cmds:
            nsops.ip_batch(node, cmds, check=False)
            log.info("kube-proxy: %s on %s now holds %d addresses", IPVS_IFACE, node, len(vips))
        self.vips[node] = set(vips)

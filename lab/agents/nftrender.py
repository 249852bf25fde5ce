"""Pure kube-proxy logic: Services + EndpointSlices -> one node's nftables ruleset (text).

The shape follows kube-proxy's own nftables mode, reduced to what the lab needs:

* `services` (nat, prerouting + output) matches `clusterIP:port` -> `svc_*`,
  LoadBalancer ingress `ip:port` -> `ext_*` (ETP Cluster) or `local_*` (ETP Local),
  and, last, `fib daddr type local` + nodePort -> the same external chain.
* `svc_*` spreads new connections with `numgen random mod N vmap` over per-endpoint
  chains `ep_*`, which DNAT (and mark hairpin traffic for masquerade). conntrack
  keeps every established flow on its endpoint; only new flows see rule changes.
* ETP Cluster (`ext_*`): traffic not from a pod is marked and SNATed to the node's IP
  in postrouting -- kube-proxy masquerades all external Cluster traffic, which is
  what makes the reply come back through this node when the endpoint is elsewhere.
* ETP Local (`local_*`): only this node's endpoints, source address untouched; pod and
  node-originated traffic short-circuits to the cluster-wide chain (as kube-proxy);
  no local endpoint: external traffic is dropped.
* A service port with no usable endpoint at all is rejected (filter input/forward/output,
  where the destination is still the frontend address because no DNAT happened).

Endpoint choice is kube-proxy's: ready endpoints, or -- if none is ready -- the
serving+terminating ones. Everything is sorted so equal input renders equal text,
which lets the adapter skip `nft -f` when nothing changed.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

TABLE = "lbspeaker_kubeproxy"
MASQ_MARK = 0x4000
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str | None = None
    ready: bool = True
    serving: bool = True
    terminating: bool = False


@dataclass(frozen=True)
class ServicePort:
    """One (service, port) with everything kube-proxy needs to program it."""

    namespace: str
    name: str
    port_name: str
    protocol: str
    port: int
    node_port: int | None = None
    cluster_ips: tuple[str, ...] = ()
    lb_ips: tuple[str, ...] = ()
    external_local: bool = False
    endpoints: tuple[Endpoint, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port_name or self.port}/{self.protocol}"


def _family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def service_ports(services: list[dict[str, Any]], slices: list[dict[str, Any]]) -> list[ServicePort]:
    """Join Services with their EndpointSlices into ServicePorts (pure; sorted by key)."""
    by_svc: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in slices:
        md = s.get("metadata") or {}
        svc = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc:
            by_svc.setdefault((md.get("namespace") or "default", svc), []).append(s)
    out: list[ServicePort] = []
    for svc in services:
        md = svc.get("metadata") or {}
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            continue
        ns = md.get("namespace") or "default"
        cluster_ips = tuple(
            ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"
        )
        # External frontends: LoadBalancer ingress IPs (not those with ipMode Proxy, which a
        # real kube-proxy leaves to the load balancer) and spec.externalIPs.
        lb_ips: tuple[str, ...] = ()
        if spec.get("type") == "LoadBalancer":
            lb_ips = tuple(
                i["ip"]
                for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                if i.get("ip") and i.get("ipMode") != "Proxy"
            )
        lb_ips += tuple(ip for ip in spec.get("externalIPs") or [] if ip not in lb_ips)
        local = spec.get("externalTrafficPolicy") == "Local" and (
            spec.get("type") in ("LoadBalancer", "NodePort") or bool(spec.get("externalIPs"))
        )
        for sp in spec.get("ports") or []:
            protocol = sp.get("protocol") or "TCP"
            pname = sp.get("name") or ""
            eps: dict[str, Endpoint] = {}
            for sl in by_svc.get((ns, md.get("name") or ""), []):
                port = None
                for p in sl.get("ports") or []:
                    if (p.get("name") or "") == pname and (p.get("protocol") or "TCP") == protocol:
                        port = p.get("port")
                if port is None:
                    continue
                for e in sl.get("endpoints") or []:
                    c = e.get("conditions") or {}
                    ready = c.get("ready") is not False  # nil means ready (API semantics)
                    serving = c.get("serving") if c.get("serving") is not None else ready
                    for ip in (e.get("addresses") or [])[:1]:
                        eps.setdefault(
                            ip,
                            Endpoint(
                                ip,
                                int(port),
                                e.get("nodeName"),
                                ready,
                                bool(serving),
                                bool(c.get("terminating")),
                            ),
                        )
            node_port = sp.get("nodePort") if spec.get("type") in ("LoadBalancer", "NodePort") else None
            out.append(
                ServicePort(
                    namespace=ns,
                    name=md.get("name") or "",
                    port_name=pname,
                    protocol=protocol,
                    port=int(sp["port"]),
                    node_port=int(node_port) if node_port else None,
                    cluster_ips=cluster_ips,
                    lb_ips=lb_ips,
                    external_local=local,
                    endpoints=tuple(sorted(eps.values(), key=lambda e: e.ip)),
                )
            )
    out.sort(key=lambda s: s.key)
    return out


def usable(endpoints: list[Endpoint] | tuple[Endpoint, ...]) -> list[Endpoint]:
    """kube-proxy's choice: ready endpoints, else serving-and-terminating ones."""
    ready = [e for e in endpoints if e.ready]
    if ready:
        return ready
    return [e for e in endpoints if e.serving and e.terminating]


def _h(*parts: object) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:12]


def _af(ip: str) -> str:
    return "ip6" if _family(ip) == 6 else "ip"


def _addr_port(ip: str) -> str:
    return f"[{ip}]" if _family(ip) == 6 else ip


def render(
    ports: list[ServicePort],
    node: str,
    node_ip: str,
    cluster_cidr: str = "10.244.0.0/16",
    node_ip6: str | None = None,
    cluster_cidr6: str | None = None,
) -> str:
    """The complete `nft -f` input for one node: flush-and-replace of table inet lbspeaker_kubeproxy."""
    chains: dict[str, list[str]] = {}
    services: list[str] = []
    nodeports: list[str] = []
    no_endpoints: list[str] = []
    mark = f"0x{MASQ_MARK:x}"

    def pod_src(fam: int) -> str | None:
        if fam == 6:
            return f"ip6 saddr {cluster_cidr6}" if cluster_cidr6 else None
        return f"ip saddr {cluster_cidr}"

    for sp in ports:
        proto = sp.protocol.lower()
        sid = _h(sp.key)
        comment = f'comment "{sp.key}"'
        for fam in (4, 6):
            fam_eps = [e for e in sp.endpoints if _family(e.ip) == fam]
            all_eps = usable(fam_eps)
            local_eps = usable([e for e in fam_eps if e.node == node])
            fid = f"{sid}_{fam}"
            fam_frontends = [ip for ip in sp.cluster_ips + sp.lb_ips if _family(ip) == fam]
            if not fam_frontends and not (sp.node_port and (fam == 4 or node_ip6)):
                continue
            # -- endpoint and service chains --------------------------------------------------------
            if all_eps:
                vm = []
                for i, e in enumerate(all_eps):
                    ep_chain = f"ep_{_h(sp.key, e.ip, e.port)}"
                    chains[ep_chain] = [
                        f"{_af(e.ip)} saddr {e.ip} jump mark-for-masquerade",
                        f"meta l4proto {proto} dnat {_af(e.ip)} to {_addr_port(e.ip)}:{e.port}",
                    ]
                    vm.append(f"{i} : goto {ep_chain}")
                chains[f"svc_{fid}"] = [f"numgen random mod {len(all_eps)} vmap {{ {', '.join(vm)} }}"]
            src = pod_src(fam)
            if all_eps and not sp.external_local:
                ext = [f"{src} goto svc_{fid}"] if src else []
                ext += ["jump mark-for-masquerade", f"goto svc_{fid}"]
                chains[f"ext_{fid}"] = ext
            if sp.external_local and local_eps:
                vm = []
                for i, e in enumerate(local_eps):
                    vm.append(f"{i} : goto ep_{_h(sp.key, e.ip, e.port)}")
                lines = [f"{src} goto svc_{fid}"] if src else []
                lines += [
                    "fib saddr type local jump mark-for-masquerade",
                    f"fib saddr type local goto svc_{fid}",
                    f"numgen random mod {len(local_eps)} vmap {{ {', '.join(vm)} }}",
                ]
                chains[f"local_{fid}"] = lines
            elif sp.external_local and all_eps:
                # No local endpoint: pods and the node itself still reach the cluster-wide chain;
                # anything else falls through un-NATed and the filter chain drops it.
                lines = [f"{src} goto svc_{fid}"] if src else []
                lines += [
                    "fib saddr type local jump mark-for-masquerade",
                    f"fib saddr type local goto svc_{fid}",
                ]
                chains[f"local_{fid}"] = lines
            external_target = f"local_{fid}" if sp.external_local else f"ext_{fid}"
            af = "ip6" if fam == 6 else "ip"
            # -- frontends --------------------------------------------------------------------------
            for ip in sorted(i for i in sp.cluster_ips if _family(i) == fam):
                if all_eps:
                    if src:
                        chains.setdefault(
                            f"clu_{fid}",
                            [f"{src} goto svc_{fid}", "jump mark-for-masquerade", f"goto svc_{fid}"],
                        )
                        services.append(f"{af} daddr {ip} {proto} dport {sp.port} goto clu_{fid} {comment}")
                    else:
                        services.append(f"{af} daddr {ip} {proto} dport {sp.port} goto svc_{fid} {comment}")
                else:
                    no_endpoints.append(f"{af} daddr {ip} {proto} dport {sp.port} reject {comment}")
            externals = [
                f"{af} daddr {ip} {proto} dport {sp.port}"
                for ip in sorted(i for i in sp.lb_ips if _family(i) == fam)
            ]
            if sp.node_port and (fam == 4 or node_ip6):
                loopback = "::1" if fam == 6 else "127.0.0.0/8"
                np_match = f"fib daddr type local {af} daddr != {loopback} {proto} dport {sp.node_port}"
            else:
                np_match = None
            for m in externals:
                if not all_eps:
                    no_endpoints.append(f"{m} reject {comment}")
                else:
                    services.append(f"{m} goto {external_target} {comment}")
                    if sp.external_local and not local_eps:
                        no_endpoints.append(f"{m} drop {comment}")
            if np_match:
                if not all_eps:
                    no_endpoints.append(f"{np_match} reject {comment}")
                else:
                    nodeports.append(f"{np_match} goto {external_target} {comment}")
                    if sp.external_local and not local_eps:
                        no_endpoints.append(f"{np_match} drop {comment}")

    snat = [f"meta nfproto ipv4 snat ip to {node_ip}"]
    if node_ip6:
        snat.append(f"meta nfproto ipv6 snat ip6 to {node_ip6}")
    out = [
        f"# kube-proxy stand-in for node {node} (generated by lab.agents; do not edit)",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "\tchain nat-prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        "\t\tjump services",
        "\t}",
        "\tchain nat-output {",
        "\t\ttype nat hook output priority -100; policy accept;",
        "\t\tjump services",
        "\t}",
        "\tchain nat-postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f"\t\tmeta mark & {mark} == 0 return",
        f"\t\tmeta mark set meta mark ^ {mark}",
        *[f"\t\t{s}" for s in snat],
        "\t}",
        "\tchain mark-for-masquerade {",
        f"\t\tmeta mark set meta mark | {mark}",
        "\t}",
        "\tchain filter-input {",
        "\t\ttype filter hook input priority filter - 5; policy accept;",
        "\t\tct state new jump no-endpoints",
        "\t}",
        "\tchain filter-forward {",
        "\t\ttype filter hook forward priority filter - 5; policy accept;",
        "\t\tct state new jump no-endpoints",
        "\t}",
        "\tchain filter-output {",
        "\t\ttype filter hook output priority filter - 5; policy accept;",
        "\t\tct state new jump no-endpoints",
        "\t}",
        "\tchain no-endpoints {",
        *[f"\t\t{r}" for r in no_endpoints],
        "\t}",
        "\tchain services {",
        *[f"\t\t{r}" for r in services + nodeports],
        "\t}",
    ]
    for name in sorted(chains):
        out.append(f"\tchain {name} {{")
        out.extend(f"\t\t{r}" for r in chains[name])
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


def vip_addresses(ports: list[ServicePort]) -> list[str]:
    """Addresses kube-proxy's IPVS mode binds to kube-ipvs0: every clusterIP and LoadBalancer IP."""
    addrs = {ip for sp in ports for ip in sp.cluster_ips + sp.lb_ips}
    return sorted(addrs, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))


def parse_kube_proxy_config(configmap: dict[str, Any] | None) -> tuple[str, bool]:
    """(mode, strictARP) from the `kube-system/kube-proxy` ConfigMap (`config.conf` YAML)."""
    import yaml

    if not configmap:
        return ("iptables", False)
    text = (configmap.get("data") or {}).get("config.conf") or ""
    try:
        conf = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return ("iptables", False)
    if not isinstance(conf, dict):
        return ("iptables", False)
    mode = str(conf.get("mode") or "iptables") or "iptables"
    strict = bool(((conf.get("ipvs") or {}).get("strictARP")) is True)
    return (mode, strict)

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
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

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
    by_svc = slices_by_service(slices)
    out = [sp for svc in services for sp in ports_of_service(svc, by_svc.get(service_key(svc), ()))]
    out.sort(key=lambda s: s.key)
    return out


ServiceKey = tuple[str, str]


def service_key(svc: dict[str, Any]) -> ServiceKey:
    md = svc.get("metadata") or {}
    return (md.get("namespace") or "default", md.get("name") or "")


def slices_by_service(slices: list[dict[str, Any]]) -> dict[ServiceKey, list[dict[str, Any]]]:
    """EndpointSlices grouped by the Service their label names, in the order given."""
    by_svc: dict[ServiceKey, list[dict[str, Any]]] = {}
    for s in slices:
        md = s.get("metadata") or {}
        svc = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc:
            by_svc.setdefault((md.get("namespace") or "default", svc), []).append(s)
    return by_svc


def ports_of_service(
    svc: dict[str, Any], slices: list[dict[str, Any]] | tuple[dict[str, Any], ...]
) -> list[ServicePort]:
    """One Service's ServicePorts, from its own EndpointSlices (pure; in spec order)."""
    out: list[ServicePort] = []
    md = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return out
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
        for sl in slices:
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


# Dispatch maps (kube-proxy's nftables mode): frontend -> verdict, looked up once per packet.
SERVICE_IPS = {4: "service-ips4", 6: "service-ips6"}
SERVICE_NODEPORTS = {4: "service-nodeports4", 6: "service-nodeports6"}
NO_EP_IPS = {4: "no-endpoint-services4", 6: "no-endpoint-services6"}
NO_EP_NODEPORTS = {4: "no-endpoint-nodeports4", 6: "no-endpoint-nodeports6"}
MAP_TYPES = {
    **{m: "ipv4_addr . inet_proto . inet_service" for m in (SERVICE_IPS[4], NO_EP_IPS[4])},
    **{m: "ipv6_addr . inet_proto . inet_service" for m in (SERVICE_IPS[6], NO_EP_IPS[6])},
    **{m: "inet_proto . inet_service" for m in (*SERVICE_NODEPORTS.values(), *NO_EP_NODEPORTS.values())},
}
REJECT_CHAIN = "reject-chain"


@dataclass(frozen=True)
class Fragment:
    """What one ServicePort contributes to one node: its chains and its map elements, in order."""

    chains: tuple[tuple[str, tuple[str, ...]], ...]
    elements: tuple[tuple[str, str, str], ...]  # (map, key, verdict)
    comment: str


@dataclass
class Ruleset:
    """One node's table as data: the fixed part (text), service chains and map elements."""

    base: str
    chains: dict[str, tuple[str, ...]]
    elements: dict[tuple[str, str], tuple[str, str]]  # (map, key) -> (verdict, comment)


FragmentKey = tuple[ServicePort, str | None, bool, str, str | None]


def _fragment(
    sp: ServicePort, node: str, has_ip6: bool, cluster_cidr: str, cluster_cidr6: str | None
) -> Fragment:
    chains: dict[str, tuple[str, ...]] = {}
    elements: list[tuple[str, str, str]] = []
    proto = sp.protocol.lower()
    sid = _h(sp.key)
    for fam in (4, 6):
        fam_eps = [e for e in sp.endpoints if _family(e.ip) == fam]
        all_eps = usable(fam_eps)
        local_eps = usable([e for e in fam_eps if e.node == node])
        fid = f"{sid}_{fam}"
        cluster_ips = sorted(str(ipaddress.ip_address(i)) for i in sp.cluster_ips if _family(i) == fam)
        lb_ips = sorted(str(ipaddress.ip_address(i)) for i in sp.lb_ips if _family(i) == fam)
        node_port = sp.node_port if sp.node_port and (fam == 4 or has_ip6) else None
        if not cluster_ips and not lb_ips and not node_port:
            continue
        src = (
            (f"ip6 saddr {cluster_cidr6}" if cluster_cidr6 else None)
            if fam == 6
            else f"ip saddr {cluster_cidr}"
        )

        def ep_chain(e: Endpoint) -> str:
            name = f"ep_{_h(sp.key, e.ip, e.port)}"
            chains[name] = (
                f"{_af(e.ip)} saddr {e.ip} jump mark-for-masquerade",
                f"meta l4proto {proto} dnat {_af(e.ip)} to {_addr_port(e.ip)}:{e.port}",
            )
            return name

        # -- endpoint and service chains --------------------------------------------------------------
        if all_eps:
            vm = [f"{i} : goto {ep_chain(e)}" for i, e in enumerate(all_eps)]
            chains[f"svc_{fid}"] = (f"numgen random mod {len(all_eps)} vmap {{ {', '.join(vm)} }}",)
        if all_eps and not sp.external_local:
            ext = [f"{src} goto svc_{fid}"] if src else []
            chains[f"ext_{fid}"] = (*ext, "jump mark-for-masquerade", f"goto svc_{fid}")
        if sp.external_local and all_eps:
            # Pods and the node itself reach the cluster-wide chain; other traffic only local
            # endpoints -- with none, it falls through un-NATed and the filter chain drops it.
            lines = [f"{src} goto svc_{fid}"] if src else []
            lines += ["fib saddr type local jump mark-for-masquerade", f"fib saddr type local goto svc_{fid}"]
            if local_eps:
                # (a local serving-terminating endpoint may be missing from all_eps: give it its chain)
                vm = [f"{i} : goto {ep_chain(e)}" for i, e in enumerate(local_eps)]
                lines.append(f"numgen random mod {len(local_eps)} vmap {{ {', '.join(vm)} }}")
            chains[f"local_{fid}"] = tuple(lines)
        external_target = f"goto local_{fid}" if sp.external_local else f"goto ext_{fid}"
        # -- frontends: map elements ----------------------------------------------------------------------
        for ip in cluster_ips:
            key = f"{ip} . {proto} . {sp.port}"
            if not all_eps:
                elements.append((NO_EP_IPS[fam], key, f"goto {REJECT_CHAIN}"))
            elif src:
                chains[f"clu_{fid}"] = (
                    f"{src} goto svc_{fid}",
                    "jump mark-for-masquerade",
                    f"goto svc_{fid}",
                )
                elements.append((SERVICE_IPS[fam], key, f"goto clu_{fid}"))
            else:
                elements.append((SERVICE_IPS[fam], key, f"goto svc_{fid}"))
        targets = [(SERVICE_IPS[fam], NO_EP_IPS[fam], f"{ip} . {proto} . {sp.port}") for ip in lb_ips]
        if node_port:
            targets.append((SERVICE_NODEPORTS[fam], NO_EP_NODEPORTS[fam], f"{proto} . {node_port}"))
        for dispatch, no_ep, key in targets:
            if not all_eps:
                elements.append((no_ep, key, f"goto {REJECT_CHAIN}"))
                continue
            elements.append((dispatch, key, external_target))
            if sp.external_local and not local_eps:
                elements.append((no_ep, key, "drop"))
    return Fragment(tuple(chains.items()), tuple(elements), f"{sp.key}")


def build(
    ports: list[ServicePort],
    node: str,
    node_ip: str,
    cluster_cidr: str = "10.244.0.0/16",
    node_ip6: str | None = None,
    cluster_cidr6: str | None = None,
) -> Ruleset:
    """One node's whole ruleset as data, from `ports` sorted by key: the reference that
    `NodeTable` keeps equal to, one ServicePort at a time."""
    chains: dict[str, tuple[str, ...]] = {}
    elements: dict[tuple[str, str], tuple[str, str]] = {}
    for sp in ports:
        frag = _fragment(sp, node, node_ip6 is not None, cluster_cidr, cluster_cidr6)
        chains.update(frag.chains)
        for m, key, verdict in frag.elements:
            # the first Service (by key) to claim a frontend wins, as the first rule did
            elements.setdefault((m, key), (verdict, frag.comment))
    return Ruleset(base(node_ip, node_ip6), chains, elements)


class PortIndex:
    """Services + EndpointSlices -> ServicePorts, re-reading only the Services whose object or
    slices changed since the last `update`. Objects are compared by identity: an informer
    replaces the dict of every object an event names, and the index holds the old ones, so an
    unchanged identity is an unchanged object."""

    def __init__(self) -> None:
        self._seen: dict[ServiceKey, tuple[dict[str, Any], tuple[dict[str, Any], ...]]] = {}
        self._keys: dict[ServiceKey, tuple[str, ...]] = {}
        self.by_key: dict[str, ServicePort] = {}

    def update(
        self, services: list[dict[str, Any]], slices: list[dict[str, Any]]
    ) -> dict[str, ServicePort | None]:
        """Take the informers' current lists; return {ServicePort key: new port, or None if gone}."""
        by_svc = slices_by_service(slices)
        changed: dict[str, ServicePort | None] = {}
        current: set[ServiceKey] = set()
        for svc in services:
            sk = service_key(svc)
            current.add(sk)
            sls = tuple(by_svc.get(sk, ()))
            seen = self._seen.get(sk)
            if seen is not None and seen[0] is svc and len(seen[1]) == len(sls) and all(
                a is b for a, b in zip(seen[1], sls, strict=True)
            ):
                continue
            try:
                ports = ports_of_service(svc, sls)
            except (KeyError, ValueError, TypeError) as e:  # as kube-proxy, skip what it cannot read
                log.warning("kube-proxy: ignoring Service %s/%s: %r", *sk, e)
                ports = []
            self._seen[sk] = (svc, sls)
            self._replace(sk, ports, changed)
        for sk in [k for k in self._seen if k not in current]:
            del self._seen[sk]
            self._replace(sk, [], changed)
        return changed

    def _replace(
        self, sk: ServiceKey, ports: list[ServicePort], changed: dict[str, ServicePort | None]
    ) -> None:
        new = {sp.key: sp for sp in ports}
        for key in self._keys.pop(sk, ()):
            if key not in new:
                self.by_key.pop(key, None)
                changed[key] = None
        for key, sp in new.items():
            if self.by_key.get(key) != sp:
                self.by_key[key] = sp
                changed[key] = sp
        if new:
            self._keys[sk] = tuple(new)

    def ports(self) -> list[ServicePort]:
        """Every ServicePort, sorted by key (what `service_ports` returns for the same lists)."""
        return sorted(self.by_key.values(), key=lambda sp: sp.key)


class NodeTable:
    """One node's ruleset, kept equal to `build` of the current ports by applying the changed
    fragments only; `update` returns the `nft -f` delta of exactly those changes. Chain names
    are per ServicePort; a map element claimed by several ports goes to the lowest key."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._frags: dict[str, Fragment] = {}
        self._claims: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
        self.chains: dict[str, tuple[str, ...]] = {}
        self.elements: dict[tuple[str, str], tuple[str, str]] = {}

    def update(self, changed: dict[str, Fragment | None], delta: bool = True) -> str:
        """Replace (or, for None, remove) the fragments of the given ServicePort keys; return the
        delta, or "" without computing it if `delta` is False (a table about to be loaded whole)."""
        old = {key: self._frags.get(key) for key in changed}
        frags = [f for f in (*old.values(), *changed.values()) if f is not None]
        names = {n for f in frags for n, _ in f.chains}
        elems = {(m, k) for f in frags for m, k, _ in f.elements}
        before = self._part(names, elems) if delta else None
        for key, frag in old.items():
            if frag is None:
                continue
            del self._frags[key]
            for n, _ in frag.chains:
                self.chains.pop(n, None)
            for m, k, _ in frag.elements:
                self._claims.get((m, k), {}).pop(key, None)
        for key, frag in changed.items():
            if frag is None:
                continue
            self._frags[key] = frag
            self.chains.update(frag.chains)
            for m, k, verdict in frag.elements:
                self._claims.setdefault((m, k), {}).setdefault(key, (verdict, frag.comment))
        for e in elems:
            claims = self._claims.get(e)
            if claims:
                self.elements[e] = claims[min(claims)]
            else:
                self._claims.pop(e, None)
                self.elements.pop(e, None)
        return (delta_text(before, self._part(names, elems)) or "") if before is not None else ""

    def _part(self, names: set[str], elems: set[tuple[str, str]]) -> Ruleset:
        """The named chains and elements as they are now (absent ones left out)."""
        return Ruleset(
            self.base,
            {n: self.chains[n] for n in names if n in self.chains},
            {e: self.elements[e] for e in elems if e in self.elements},
        )

    def ruleset(self) -> Ruleset:
        """The whole table now (a copy), for a full load."""
        return Ruleset(self.base, dict(self.chains), dict(self.elements))


def fragment(
    sp: ServicePort, node: str, has_ip6: bool, cluster_cidr: str, cluster_cidr6: str | None,
    cache: dict[FragmentKey, Fragment],
) -> Fragment:
    """`sp`'s fragment on `node`, shared through `cache` by every node it does not depend on
    (only ETP Local ports depend on the node)."""
    k: FragmentKey = (sp, node if sp.external_local else None, has_ip6, cluster_cidr, cluster_cidr6)
    frag = cache.get(k)
    if frag is None:
        frag = cache[k] = _fragment(sp, node, has_ip6, cluster_cidr, cluster_cidr6)
    return frag


def base(node_ip: str, node_ip6: str | None) -> str:
    """The fixed chains (hooks, masquerade, dispatch through the maps) of one node."""
    mark = f"0x{MASQ_MARK:x}"
    snat = [f"meta nfproto ipv4 snat ip to {node_ip}"]
    if node_ip6:
        snat.append(f"meta nfproto ipv6 snat ip6 to {node_ip6}")

    def dispatch(ips: dict[int, str], nodeports: dict[int, str]) -> list[str]:
        return [
            f"\t\tip daddr . meta l4proto . th dport vmap @{ips[4]}",
            f"\t\tip6 daddr . meta l4proto . th dport vmap @{ips[6]}",
            f"\t\tfib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{nodeports[4]}",
            f"\t\tfib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @{nodeports[6]}",
        ]

    out: list[str] = []
    for name, hook in (
        ("nat-prerouting", "nat hook prerouting priority dstnat"),
        ("nat-output", "nat hook output priority -100"),
    ):
        out += [f"\tchain {name} {{", f"\t\ttype {hook}; policy accept;", "\t\tjump services", "\t}"]
    out += [
        "\tchain nat-postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f"\t\tmeta mark & {mark} == 0 return",
        f"\t\tmeta mark set meta mark ^ {mark}",
        *[f"\t\t{s}" for s in snat],
        "\t}",
        "\tchain mark-for-masquerade {",
        f"\t\tmeta mark set meta mark | {mark}",
        "\t}",
    ]
    for hook in ("input", "forward", "output"):
        out += [
            f"\tchain filter-{hook} {{",
            f"\t\ttype filter hook {hook} priority filter - 5; policy accept;",
            "\t\tct state new jump no-endpoints",
            "\t}",
        ]
    out += [f"\tchain {REJECT_CHAIN} {{", "\t\treject", "\t}"]
    out += ["\tchain no-endpoints {", *dispatch(NO_EP_IPS, NO_EP_NODEPORTS), "\t}"]
    out += ["\tchain services {", *dispatch(SERVICE_IPS, SERVICE_NODEPORTS), "\t}"]
    return "\n".join(out)


def _elem(key: str, verdict: str, comment: str) -> str:
    return f'{key} comment "{comment}" : {verdict}'


def full_text(rs: Ruleset, node: str) -> str:
    """Flush-and-replace of the whole table in one transaction (first apply, resync, recovery)."""
    by_map: dict[str, list[str]] = {m: [] for m in MAP_TYPES}
    for (m, key), (verdict, comment) in sorted(rs.elements.items()):
        by_map[m].append(_elem(key, verdict, comment))
    out = [
        f"# kube-proxy stand-in for node {node} (generated by lab.agents; do not edit)",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
    ]
    # maps before the chains whose rules look them up; service chains before the maps naming them
    for name in sorted(rs.chains):
        out.append(f"\tchain {name} {{")
        out.extend(f"\t\t{r}" for r in rs.chains[name])
        out.append("\t}")
    for m, typ in MAP_TYPES.items():
        out += [f"\tmap {m} {{", f"\t\ttype {typ} : verdict"]
        if by_map[m]:
            out.append("\t\telements = {")
            out.extend(f"\t\t\t{e}," for e in by_map[m])
            out.append("\t\t}")
        out.append("\t}")
    out.append(rs.base)
    out.append("}")
    return "\n".join(out) + "\n"


def delta_text(old: Ruleset, new: Ruleset) -> str | None:
    """One `nft -f` transaction taking the table from `old` to `new`: "" if they are equal, None
    if only a full replace can do it (the fixed part changed). Order: declare new chains, (re)fill
    new and changed ones, delete then add map elements, and last flush and delete the chains
    nothing references any more."""
    if old.base != new.base:
        return None
    t = f"inet {TABLE}"
    added = [n for n in new.chains if n not in old.chains]
    changed = [n for n, r in new.chains.items() if n in old.chains and old.chains[n] != r]
    removed = sorted(n for n in old.chains if n not in new.chains)
    gone = sorted(k for k, v in old.elements.items() if new.elements.get(k) != v)
    fresh = sorted(k for k, v in new.elements.items() if old.elements.get(k) != v)
    out = [f"add chain {t} {n}" for n in sorted(added)]
    for n in sorted(changed):
        out.append(f"flush chain {t} {n}")
    for n in sorted(added + changed):
        out.extend(f"add rule {t} {n} {r}" for r in new.chains[n])
    for m in MAP_TYPES:
        keys = [key for mm, key in gone if mm == m]
        if keys:
            out.append(f"delete element {t} {m} {{ {', '.join(keys)} }}")
    for m in MAP_TYPES:
        elems = [_elem(key, *new.elements[(mm, key)]) for mm, key in fresh if mm == m]
        if elems:
            out.append(f"add element {t} {m} {{ {', '.join(elems)} }}")
    out += [f"flush chain {t} {n}" for n in removed]
    out += [f"delete chain {t} {n}" for n in removed]
    return "\n".join(out) + "\n" if out else ""


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

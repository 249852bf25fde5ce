"""kube-proxy stand-in: pure rendering of Services + EndpointSlices into one node's nftables text."""

from __future__ import annotations

from typing import Any

from lab.agents.nftrender import (
    Endpoint,
    ServicePort,
    build,
    full_text,
    parse_kube_proxy_config,
    service_ports,
    usable,
    vip_addresses,
)


def render(ports: list[ServicePort], node: str, node_ip: str) -> str:
    """The complete `nft -f` input for one node (what the kube-proxy stand-in loads first)."""
    return full_text(build(ports, node, node_ip), node)


def svc(
    name: str,
    *,
    etp: str = "Cluster",
    lb: str | None = None,
    cip: str = "10.96.0.10",
    node_port: int | None = 30080,
    selector: dict[str, str] | None = None,
    typ: str = "LoadBalancer",
    port_name: str = "http",
) -> dict[str, Any]:
    port: dict[str, Any] = {"name": port_name, "port": 80, "targetPort": 8080, "protocol": "TCP"}
    if node_port:
        port["nodePort"] = node_port
    return {
        "metadata": {"namespace": "default", "name": name, "uid": f"uid-{name}"},
        "spec": {
            "type": typ,
            "clusterIP": cip,
            "clusterIPs": [cip],
            "externalTrafficPolicy": etp,
            "ports": [port],
            "selector": selector or {"app": name},
        },
        "status": {"loadBalancer": {"ingress": [{"ip": lb}] if lb else []}},
    }


def ep(
    ip: str, node: str, ready: bool = True, serving: bool | None = None, terminating: bool = False
) -> dict:
    return {
        "addresses": [ip],
        "nodeName": node,
        "conditions": {
            "ready": ready,
            "serving": ready if serving is None else serving,
            "terminating": terminating,
        },
    }


def eps_slice(service: str, *endpoints: dict, port_name: str = "http") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "default",
            "name": f"{service}-abc",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": 8080, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


def rules_for(text: str, chain: str) -> list[str]:
    """Body lines of one chain in rendered text."""
    lines = text.splitlines()
    start = lines.index(f"\tchain {chain} {{")
    out = []
    for line in lines[start + 1 :]:
        if line == "\t}":
            break
        out.append(line.strip())
    return out


def elements_of(text: str, *maps: str) -> list[str]:
    """Elements (`key comment "..." : verdict`) of the given maps in rendered text, map by map."""
    lines = text.splitlines()
    out = []
    for m in maps:
        start = lines.index(f"\tmap {m} {{")
        for line in lines[start + 1 :]:
            if line == "\t}":
                break
            if line.startswith("\t\t\t"):
                out.append(line.strip().rstrip(","))
    return out


def dispatch(text: str) -> list[str]:
    """What the `services` chain looks up, in its order: frontend addresses, then nodePorts."""
    assert rules_for(text, "services") == [
        f"{af} daddr . meta l4proto . th dport vmap @service-ips{f}" for af, f in (("ip", 4), ("ip6", 6))
    ] + [
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports4",
        "fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @service-nodeports6",
    ]
    return elements_of(text, "service-ips4", "service-ips6", "service-nodeports4", "service-nodeports6")


def no_endpoints(text: str) -> list[str]:
    """What the filter chains' `no-endpoints` looks up (reject / drop), in its order."""
    assert rules_for(text, "no-endpoints") == [
        r.replace("@service-", "@no-endpoint-services-")
        .replace("services-ips", "services")
        .replace("services-nodeports", "nodeports")
        for r in rules_for(text, "services")
    ]
    assert rules_for(text, "reject-chain") == ["reject"]
    return elements_of(
        text,
        "no-endpoint-services4",
        "no-endpoint-services6",
        "no-endpoint-nodeports4",
        "no-endpoint-nodeports6",
    )


def chain_names(text: str, prefix: str) -> list[str]:
    return [ln.split()[1] for ln in text.splitlines() if ln.startswith(f"\tchain {prefix}")]


W1, W2 = "kind-worker", "kind-worker2"


def test_service_ports_join_by_port_name_and_protocol() -> None:
    ports = service_ports(
        [svc("web", lb="172.18.255.200")], [eps_slice("web", ep("10.244.2.2", W2), ep("10.244.1.2", W1))]
    )
    assert len(ports) == 1
    sp = ports[0]
    assert (sp.port, sp.node_port, sp.lb_ips, sp.cluster_ips) == (
        80,
        30080,
        ("172.18.255.200",),
        ("10.96.0.10",),
    )
    assert [e.ip for e in sp.endpoints] == ["10.244.1.2", "10.244.2.2"]
    assert all(e.port == 8080 for e in sp.endpoints)
    # a slice port with another name does not feed this service port
    other = service_ports([svc("web")], [eps_slice("web", ep("10.244.1.2", W1), port_name="metrics")])
    assert other[0].endpoints == ()


def test_cluster_policy_spreads_over_all_endpoints_and_masquerades() -> None:
    ports = service_ports(
        [svc("web", lb="172.18.255.200")], [eps_slice("web", ep("10.244.1.2", W1), ep("10.244.2.2", W2))]
    )
    text = render(ports, W1, "172.18.0.3")
    services = dispatch(text)
    lb_rule = next(r for r in services if "172.18.255.200" in r)
    ext = lb_rule.split("goto ")[1].split()[0]
    assert ext.startswith("ext_")
    body = rules_for(text, ext)
    assert body[0].startswith("ip saddr 10.244.0.0/16 goto svc_")  # pods are not masqueraded
    assert "jump mark-for-masquerade" in body
    svc_chain = body[-1].split()[-1]
    (vmap,) = rules_for(text, svc_chain)
    assert vmap.startswith("numgen random mod 2 vmap {")
    dnats = [r for c in chain_names(text, "ep_") for r in rules_for(text, c) if "dnat" in r]
    assert sorted(dnats) == [
        "meta l4proto tcp dnat ip to 10.244.1.2:8080",
        "meta l4proto tcp dnat ip to 10.244.2.2:8080",
    ]
    assert "meta nfproto ipv4 snat ip to 172.18.0.3" in rules_for(text, "nat-postrouting")
    # nodePort comes after every address-specific lookup (dispatch() checks the chain's order)
    assert services[-1].startswith("tcp . 30080 ") and services[-1].endswith(f": goto {ext}")


def test_local_policy_uses_only_local_endpoints_without_masquerade() -> None:
    ports = service_ports(
        [svc("web", etp="Local", lb="172.18.255.200")],
        [eps_slice("web", ep("10.244.1.2", W1), ep("10.244.1.3", W1), ep("10.244.2.2", W2))],
    )
    text = render(ports, W1, "172.18.0.3")
    lb_rule = next(r for r in dispatch(text) if "172.18.255.200" in r)
    local = lb_rule.split("goto ")[1].split()[0]
    assert local.startswith("local_")
    body = rules_for(text, local)
    # non-pod, non-node traffic: only the vmap over the two local endpoints, never marked
    assert body[-1].startswith("numgen random mod 2 vmap {")
    assert all("mark-for-masquerade" not in r or "fib saddr type local" in r for r in body)
    targets = body[-1].split("goto ")[1:]
    dnat_ips = sorted(rules_for(text, t.split()[0].rstrip(",}"))[1].split()[-1] for t in targets)
    assert dnat_ips == ["10.244.1.2:8080", "10.244.1.3:8080"]
    assert no_endpoints(text) == []


def test_local_policy_without_local_endpoint_drops_external_traffic() -> None:
    ports = service_ports(
        [svc("web", etp="Local", lb="172.18.255.200")], [eps_slice("web", ep("10.244.2.2", W2))]
    )
    text = render(ports, W1, "172.18.0.3")
    drops = no_endpoints(text)
    assert any(r.startswith("172.18.255.200 . tcp . 80 ") and r.endswith(": drop") for r in drops)
    assert any(r.startswith("tcp . 30080 ") and r.endswith(": drop") for r in drops)
    # the clusterIP is not dropped: pods and nodes reach the cluster-wide chain
    assert not any("10.96.0.10" in r for r in drops)
    # on the node that has the endpoint nothing is dropped
    assert no_endpoints(render(ports, W2, "172.18.0.4")) == []


def test_no_endpoints_at_all_rejects() -> None:
    text = render(service_ports([svc("web", lb="172.18.255.200")], []), W1, "172.18.0.3")
    rej = no_endpoints(text)
    assert any("172.18.255.200" in r and r.endswith(": goto reject-chain") for r in rej)
    assert any("10.96.0.10" in r and r.endswith(": goto reject-chain") for r in rej)
    assert not any("172.18.255.200" in r for r in dispatch(text))


def test_unready_endpoints_are_skipped_and_terminating_fallback() -> None:
    eps = [
        Endpoint("10.244.1.2", 8080, W1, ready=False, serving=False),
        Endpoint("10.244.2.2", 8080, W2, ready=True),
    ]
    assert [e.ip for e in usable(eps)] == ["10.244.2.2"]
    term = [
        Endpoint("10.244.1.2", 8080, W1, ready=False, serving=True, terminating=True),
        Endpoint("10.244.2.2", 8080, W2, ready=False, serving=False),
    ]
    assert [e.ip for e in usable(term)] == ["10.244.1.2"]
    ports = service_ports(
        [svc("web", lb="172.18.255.200")],
        [eps_slice("web", ep("10.244.1.2", W1, ready=False), ep("10.244.2.2", W2))],
    )
    text = render(ports, W1, "172.18.0.3")
    assert "10.244.1.2:8080" not in text and "10.244.2.2:8080" in text


def test_render_is_deterministic_and_clusterip_only_services_have_no_external_rules() -> None:
    services = [svc("a", lb="172.18.255.201"), svc("b", typ="ClusterIP", node_port=None, cip="10.96.0.20")]
    slices = [eps_slice("a", ep("10.244.1.2", W1)), eps_slice("b", ep("10.244.2.5", W2))]
    one = render(service_ports(services, slices), W1, "172.18.0.3")
    two = render(service_ports(list(reversed(services)), list(reversed(slices))), W1, "172.18.0.3")
    assert one == two
    b_rules = [r for r in dispatch(one) if "default/b:" in r]
    assert len(b_rules) == 1 and "10.96.0.20" in b_rules[0]
    # the table is replaced atomically: create-if-missing, delete, define, in one file
    head = one.splitlines()[1:4]
    assert head == [
        "table inet lbspeaker_kubeproxy",
        "delete table inet lbspeaker_kubeproxy",
        "table inet lbspeaker_kubeproxy {",
    ]


def test_vips_and_config() -> None:
    ports = service_ports([svc("a", lb="172.18.255.201"), svc("b", cip="10.96.0.20")], [])
    assert vip_addresses(ports) == ["10.96.0.10", "10.96.0.20", "172.18.255.201"]
    cm = {
        "data": {
            "config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
            "mode: ipvs\nipvs:\n  strictARP: true\n"
        }
    }
    assert parse_kube_proxy_config(cm) == ("ipvs", True)
    assert parse_kube_proxy_config({"data": {"config.conf": "mode: ipvs\n"}}) == ("ipvs", False)
    assert parse_kube_proxy_config({"data": {"config.conf": 'mode: ""\n'}}) == ("iptables", False)
    assert parse_kube_proxy_config(None) == ("iptables", False)


def test_external_ips_and_proxy_ip_mode() -> None:
    s = svc("web", lb="172.18.255.200")
    s["status"]["loadBalancer"]["ingress"].append({"ip": "172.18.255.210", "ipMode": "Proxy"})
    s["spec"]["externalIPs"] = ["192.0.2.10"]
    (sp,) = service_ports([s], [])
    assert sp.lb_ips == ("172.18.255.200", "192.0.2.10")
    c = svc("c", typ="ClusterIP", node_port=None, etp="Local")
    c["spec"]["externalIPs"] = ["192.0.2.11"]
    (cp,) = service_ports([c], [])
    assert cp.external_local and cp.lb_ips == ("192.0.2.11",)

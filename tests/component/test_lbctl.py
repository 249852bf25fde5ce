"""lbctl against the lab API server: migrated MetalLB objects are accepted, and status/pools/check
tell the truth about hand-made cluster states (a killed speaker, IPVS without strictARP, a
BGP session down, a Service without endpoints, a pool covering a node address)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lbspeaker.kube import resources as R
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.rest import ApiError, Rest
from lbspeaker.lbctl.cli import main
from lbspeaker.lbctl.migrate import convert_text
from tests.unit.test_lbctl_migrate import CRDS, LEGACY

pytestmark = pytest.mark.component

NS = "lbspeaker-system"


@pytest.fixture
def rest(apiserver_with_crds: Any, tmp_path: Path) -> Rest:
    kubeconfig = apiserver_with_crds.write_kubeconfig(tmp_path / "kubeconfig")
    client = Rest(load_api_client(str(kubeconfig)))
    client.kubeconfig = str(kubeconfig)  # type: ignore[attr-defined]
    for ns in (NS, "kube-system", "default"):
        try:
            client.create(R.NAMESPACES, {"metadata": {"name": ns}})
        except ApiError as exc:
            if not exc.already_exists:
                raise
    return client


def resource_for(obj: dict[str, Any]) -> R.Resource:
    res = R.by_kind(obj["kind"])
    assert res is not None
    return res


def contains(big: Any, small: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(contains, big, small))
    return bool(big == small)


@pytest.mark.parametrize("source", ["crds", "legacy"])
def test_migrated_objects_are_accepted(rest: Rest, source: str) -> None:
    result = convert_text(CRDS if source == "crds" else LEGACY)
    assert result.objects
    for obj in result.objects:
        created = rest.create(resource_for(obj), obj)
        assert created["metadata"]["namespace"] == NS
        # Nothing pruned (every field is known); the server only adds defaults.
        assert contains(created["spec"], obj["spec"]), (obj["metadata"]["name"], created["spec"])


def now_minus(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease(node: str, age_s: float, holder: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": f"speaker-{node}", "namespace": NS},
        "spec": {
            "holderIdentity": node if holder is None else holder,
            "leaseDurationSeconds": 10,
            "renewTime": now_minus(age_s),
            "acquireTime": now_minus(age_s + 100),
        },
    }


def node(name: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def service(name: str, ip: str | None, pool: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default",
                     "annotations": {"lbspeaker.io/ip-allocated-from-pool": pool} if pool else {}},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]},
    }


def endpointslice(svc: str, node_name: str, ready: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{svc}-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": node_name, "conditions": {"ready": ready}}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }


def set_ingress(rest: Rest, name: str, ip: str) -> None:
    svc = rest.get(R.SERVICES, name, "default")
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}
    rest.replace_status(R.SERVICES, svc)


def l2status(svc: str, node_name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"l2-{svc}-{node_name}", "namespace": NS},
        "spec": {},
    }


@pytest.fixture
def cluster(rest: Rest) -> Rest:
    """Three nodes; kind-worker2's speaker was killed (stale Lease); IPVS without strictARP; web is
    announced by kind-worker; api has an IP but no ready endpoint; nope has no IP; a BGP peer is
    Established on one node and Active on another; the pool covers kind-worker's address."""
    for name, ip in (("kind-control-plane", "172.18.0.2"), ("kind-worker", "172.18.0.3"),
                     ("kind-worker2", "172.18.0.4")):
        rest.create(R.NODES, node(name, ip))
    rest.create(R.LEASES, lease("kind-control-plane", 1))
    rest.create(R.LEASES, lease("kind-worker", 1))
    rest.create(R.LEASES, lease("kind-worker2", 60))  # SIGKILLed a minute ago
    rest.create(R.CONFIGMAPS, {
        "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
        "data": {"config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                                "mode: ipvs\nipvs:\n  strictARP: false\n"},
    })
    rest.create(R.IPADDRESSPOOLS, {
        "metadata": {"name": "kind", "namespace": NS},
        "spec": {"addresses": ["172.18.255.200-172.18.255.250"]},
    })
    rest.create(R.IPADDRESSPOOLS, {
        "metadata": {"name": "bad", "namespace": NS},
        "spec": {"addresses": ["172.18.0.3/32"], "autoAssign": False},
    })
    rest.create(R.L2ADVERTISEMENTS, {"metadata": {"name": "l2", "namespace": NS},
                                     "spec": {"ipAddressPools": ["kind"]}})
    rest.create(R.L2ADVERTISEMENTS, {
        "metadata": {"name": "nowhere", "namespace": NS},
        "spec": {"nodeSelectors": [{"matchLabels": {"rack": "r99"}}]},
    })
    rest.create(R.BGPPEERS, {"metadata": {"name": "router", "namespace": NS},
                             "spec": {"myASN": 64512, "peerASN": 64500, "peerAddress": "172.18.0.1"}})
    peer = rest.get(R.BGPPEERS, "router", NS)
    peer["status"] = {"sessions": [
        {"node": "kind-worker", "state": "Established"},
        {"node": "kind-control-plane", "state": "Active", "reason": "connection refused"},
    ]}
    rest.replace_status(R.BGPPEERS, peer)
    for name in ("web", "api", "nope"):
        rest.create(R.SERVICES, service(name, None, "kind" if name != "nope" else None))
    set_ingress(rest, "web", "172.18.255.200")
    set_ingress(rest, "api", "172.18.255.201")
    rest.create(R.ENDPOINTSLICES, endpointslice("web", "kind-worker", True))
    rest.create(R.ENDPOINTSLICES, endpointslice("api", "kind-worker", False))
    st = rest.create(R.SERVICEL2STATUSES, l2status("web", "kind-worker"))
    st["status"] = {"node": "kind-worker", "serviceName": "web", "serviceNamespace": "default",
                    "interfaces": [{"name": "eth0"}]}
    rest.replace_status(R.SERVICEL2STATUSES, st)
    rest.create(R.EVENTS, {
        "metadata": {"name": "nope.1", "namespace": "default"},
        "involvedObject": {"kind": "Service", "name": "nope", "namespace": "default", "apiVersion": "v1"},
        "reason": "AllocationFailed", "message": "no available IPs in any pool", "type": "Warning",
    })
    return rest


def run(rest: Rest, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--kubeconfig", rest.kubeconfig, *args], out, err)  # type: ignore[attr-defined]
    return code, out.getvalue(), err.getvalue()


def test_status(cluster: Rest) -> None:
    code, out, _ = run(cluster, "status")
    assert code == 0
    lines = {line.split()[1]: line for line in out.splitlines()[1:]}
    assert "172.18.255.200" in lines["web"] and "kind-worker" in lines["web"] and " L2 " in lines["web"]
    assert "no ready endpoint" in lines["api"]
    assert "no IP: no available IPs in any pool" in lines["nope"]
    code, out, _ = run(cluster, "-o", "json", "status")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["web"] == {
        "namespace": "default", "name": "web", "ips": ["172.18.255.200"], "pool": "kind", "mode": "L2",
        "announcedBy": ["kind-worker"], "problems": [],
    }
    assert rows["api"]["problems"] == ["no ready endpoint"]


def test_pools(cluster: Rest) -> None:
    code, out, _ = run(cluster, "-o", "yaml", "pools")
    import yaml

    rows = {r["name"]: r for r in yaml.safe_load(out)}
    assert rows["kind"]["assigned"] == 2 and rows["kind"]["available"] == 49
    assert rows["bad"]["autoAssign"] is False
    code, out, _ = run(cluster, "pools")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["NAME", "ADDRESSES", "AUTO-ASSIGN"]


def test_check_finds_the_failure_cases(cluster: Rest) -> None:
    code, out, _ = run(cluster, "-o", "json", "check")
    assert code == 1
    found = {(p["check"], p["object"]) for p in json.loads(out)}
    assert ("strictARP", "ConfigMap kube-system/kube-proxy") in found
    assert ("speaker", "node kind-worker2") in found
    assert ("speaker", "node kind-worker") not in found
    assert ("bgp-session", "BGPPeer router") in found
    assert ("service-no-endpoint", "Service default/api") in found
    assert ("pool-covers-node", "IPAddressPool bad") in found
    assert ("advertisement-no-node", "L2Advertisement nowhere") in found
    assert ("advertisement-no-node", "L2Advertisement l2") not in found
    messages = " ".join(p["message"] for p in json.loads(out))
    assert "connection refused" in messages and "stale" in messages
    code, out, _ = run(cluster, "check")
    assert code == 1 and "strictARP" in out


def test_check_clean_cluster(rest: Rest) -> None:
    rest.create(R.NODES, node("kind-worker", "172.18.0.3"))
    rest.create(R.LEASES, lease("kind-worker", 1))
    rest.create(R.IPADDRESSPOOLS, {"metadata": {"name": "kind", "namespace": NS},
                                   "spec": {"addresses": ["172.18.255.200-172.18.255.250"]}})
    code, out, _ = run(rest, "check")
    assert code == 0, out
    assert "No problems found" in out


def test_unreachable_server(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    out, err = io.StringIO(), io.StringIO()
    assert main(["--kubeconfig", str(kubeconfig), "status"], out, err) == 2
    assert err.getvalue().startswith("lbctl: ")


# -- RBAC: lbctl with a token that may not read (issue 13 #7) -------------------------------------

CLUSTERROLES = R.Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False)
CLUSTERROLEBINDINGS = R.Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False
)


def lbctl_as(server: Any, tmp_path: Path, user: str, *args: str) -> tuple[int, str, str]:
    token = f"{user}-token"
    server.add_user(token, user)
    kubeconfig = server.write_kubeconfig(tmp_path / f"kc-{user}", token=token)
    out, err = io.StringIO(), io.StringIO()
    code = main(["--kubeconfig", str(kubeconfig), *args], out, err)
    return code, out.getvalue(), err.getvalue()


def bind_cluster_role(rest: Rest, user: str, rules: list[dict[str, Any]] | None = None) -> None:
    """Bind lbspeaker:lbctl as the manifests define it (or a ClusterRole with `rules`) to `user`."""
    import yaml

    role = yaml.safe_load((Path(__file__).parents[2] / "manifests/base/rbac-lbctl.yaml").read_text())
    if rules is not None:
        role = {"metadata": {"name": f"{user}-role"}, "rules": rules}
    rest.create(CLUSTERROLES, role)
    rest.create(CLUSTERROLEBINDINGS, {
        "metadata": {"name": f"lbctl-{user}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role["metadata"]["name"]},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}],
    })


@pytest.mark.parametrize("command", ["check", "status", "pools"])
def test_no_permissions_is_an_error_that_names_the_role(
    cluster: Rest, apiserver_with_crds: Any, tmp_path: Path, command: str
) -> None:
    """Was: `lbctl check` with no permissions printed "No problems found." and exited 0."""
    code, out, err = lbctl_as(apiserver_with_crds, tmp_path, "nobody", command)
    assert code == 2 and out == ""
    assert 'services is forbidden: User "nobody" cannot list resource "services" in API group "" ' \
           "at the cluster scope" in err
    assert 'ipaddresspools.lbspeaker.io is forbidden: User "nobody" cannot list resource "ipaddresspools" ' \
           'in API group "lbspeaker.io" in the namespace "lbspeaker-system"' in err
    assert 'configmaps "kube-proxy" is forbidden' in err
    assert "--clusterrole=lbspeaker:lbctl" in err and "No problems" not in err


def test_the_lbctl_role_is_enough(cluster: Rest, apiserver_with_crds: Any, tmp_path: Path) -> None:
    bind_cluster_role(cluster, "alice")
    for command in ("status", "pools"):
        code, _, err = lbctl_as(apiserver_with_crds, tmp_path, "alice", command)
        assert code == 0 and err == ""
    code, out, err = lbctl_as(apiserver_with_crds, tmp_path, "alice", "-o", "json", "check")
    assert code == 1 and err == ""
    admin = run(cluster, "-o", "json", "check")
    found = {(p["check"], p["object"]) for p in json.loads(out)}
    assert found == {(p["check"], p["object"]) for p in json.loads(admin[1])}  # sees what an admin sees


def test_a_partial_denial_names_only_what_was_denied(
    cluster: Rest, apiserver_with_crds: Any, tmp_path: Path
) -> None:
    import yaml

    role = yaml.safe_load((Path(__file__).parents[2] / "manifests/base/rbac-lbctl.yaml").read_text())
    rules = [dict(r, resources=[x for x in r["resources"] if x != "events"]) for r in role["rules"]]
    bind_cluster_role(cluster, "bob", rules)
    code, out, err = lbctl_as(apiserver_with_crds, tmp_path, "bob", "check")
    assert code == 2 and out == ""
    assert "refused 1 of the reads" in err and 'cannot list resource "events"' in err

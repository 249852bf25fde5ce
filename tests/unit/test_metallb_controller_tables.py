"""MetalLB's controller test tables, ported to our controller (issue 10).

Source: ``controller/controller_test.go`` of metallb/metallb (main after v0.16.1):

* TestControllerMutation: one Service through ``SetBalancer`` against twelve pools, checked for the
  Service status it writes (``want``) and for a Warning event (``wantErr``) -> :func:`test_mutation`;
* TestControllerConfig, TestControllerDualStackConfig: a Service before any pool, then a pool, then
  the pool deleted under it -> :func:`test_config_sequence`;
* TestDeleteRecyclesIP: a one-address pool, a second Service waits, gets the IP once the first is
  deleted -> :func:`test_delete_recycles_ip`.

What runs here is our controller's own decision, ``ServiceReconciler.sync_service`` (which calls
``_converge_service``), on a `Controller` whose watch caches are listed from a recording fake REST
(`FakeRest`): the pools and the Service are listed into the caches, ``restore()`` starts the term
(as after a start or a failover), then the Service is reconciled. What MetalLB's ``testK8S``
records maps onto ours so:

* ``want`` nil: no status write at all; ``want`` with a status: the last status written, its
  ingress IPs in order (ours also carry ``ipMode: VIP`` and the ``ip-allocated-from-pool``
  annotation, which MetalLB's fake client does not record); ``want`` without a status: a write
  that clears the ingress;
* ``wantErr`` (MetalLB's ``Errorf``): a Warning Event on the Service, during restore or reconcile.

MetalLB runs every row of TestControllerMutation 100 times, shuffled, on one controller, so each
row's answer may not depend on the rows before it; here each row gets a fresh controller, once with
the Service there when the term starts ("restart": restore takes the IPs of its status) and once with
the Service arriving during the term ("running": nothing holds the IPs of its status), the two states
MetalLB's shuffled runs leave its controller in (see `MODES`).

How MetalLB's inputs map onto ours (adaptations, not differences):

* MetalLB's Services have no name; here every one is ``default/test`` (or ``<namespace>/test``);
* the pools are IPAddressPool objects with MetalLB's fields (`POOLS`); MetalLB's ``pool5`` repeats
  the ranges of ``pool1`` and ``pool3``, which our overlap refusal rejects (the older pool keeps the
  addresses, the later one is refused: docs/metallb-compat.md "Overlapping pools"), so ``pool5``
  has ranges of its own (5.5.5.0/31, 5000::/127) and the rows whose answer came from it (a
  dual-stack Service: only pool5 has both families) expect its addresses;
* MetalLB reads a Service's IP families from ``spec.clusterIPs``; we read ``spec.ipFamilies`` and
  ``spec.ipFamilyPolicy``, which the API server always fills from the clusterIPs. `api_server`
  fills them the way it does: the families of the clusterIPs, RequireDualStack with two of them
  (MetalLB's dual-stack asks for both families), else SingleStack, and ``clusterIP`` from
  ``clusterIPs[0]`` (or ``clusterIPs`` from ``clusterIP``);
* the annotations are ours (``lbspeaker.io/...``); MetalLB's spellings are read too
  (`constants.annotation`).

Differences from MetalLB that remain are ``xfail(strict=True)`` rows whose reason says why;
docs/metallb-compat.md lists them too.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from _pytest.mark.structures import ParameterSet

from lbspeaker import facts as F
from lbspeaker.api import constants as C
from lbspeaker.controller.context import SVC
from lbspeaker.controller.reconciler import Controller, ControllerConfig
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.resources import IPADDRESSPOOLS, SERVICES, Resource
from tests.unit.test_metallb_allocator_tables import slug
from tests.unit.test_metallb_config_tables import pool, xfail

Obj = dict[str, Any]


# --- the harness -------------------------------------------------------------------------------------


class FakeRest:
    """Lists what it holds, stores status writes and annotation patches as the API server would, and
    records the status writes (MetalLB's ``testK8S.UpdateStatus``)."""

    def __init__(self, objects: Mapping[str, Sequence[Obj]]) -> None:
        self.objects: dict[str, dict[str, Obj]] = {
            plural: {F.key_of(o): copy.deepcopy(o) for o in items} for plural, items in objects.items()}
        self.status_writes: list[Obj] = []
        self.rv = 1

    def put(self, resource: Resource, obj: Obj) -> None:
        self.objects.setdefault(resource.plural, {})[F.key_of(obj)] = copy.deepcopy(obj)

    def remove(self, resource: Resource, key: str) -> None:
        self.objects.get(resource.plural, {}).pop(key, None)

    def list_all(self, resource: Resource, namespace: str | None = None, label_selector: str | None = None,
                 field_selector: str | None = None, page_size: int = 500) -> Obj:
        items = [copy.deepcopy(o) for o in self.objects.get(resource.plural, {}).values()
                 if namespace is None or (o.get("metadata") or {}).get("namespace") == namespace]
        return {"items": items, "metadata": {"resourceVersion": str(self.rv)}}

    def _bump(self, obj: Obj) -> Obj:
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        return obj

    def replace_status(self, resource: Resource, obj: Mapping[str, Any]) -> Obj:
        if resource is SERVICES:
            self.status_writes.append(copy.deepcopy(dict(obj.get("status") or {})))
        key = F.key_of(obj)
        stored = self.objects.setdefault(resource.plural, {}).get(key)
        if stored is not None:
            stored["status"] = copy.deepcopy(obj.get("status"))
            self._bump(stored)
        return copy.deepcopy(stored or dict(obj))

    def patch(self, resource: Resource, name: str, patch: Any, namespace: str | None = None,
              patch_type: str = "merge", subresource: str | None = None) -> Obj:
        stored = self.objects.get(resource.plural, {}).get(f"{namespace}/{name}" if namespace else name)
        if stored is None:
            return {}
        ann = stored.setdefault("metadata", {}).setdefault("annotations", {})
        for k, v in ((patch.get("metadata") or {}).get("annotations") or {}).items():
            if v is None:
                ann.pop(k, None)
            else:
                ann[k] = v
        return copy.deepcopy(self._bump(stored))


class Events(EventRecorder):
    """Keeps (type, reason, message) of every Event instead of writing it (MetalLB's Infof/Errorf)."""

    def __init__(self, rest: Any) -> None:
        super().__init__(rest, component="test", host="test")
        self.seen: list[tuple[str, str, str, str]] = []  # (object key, type, reason, message)

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.seen.append((F.key_of(obj), type_, reason, message))

    def warnings(self, key: str) -> list[str]:
        return [f"{reason}: {message}" for k, t, reason, message in self.seen if k == key and t == "Warning"]


class World:
    """One controller term over the objects of a `FakeRest`, driven by hand (no threads)."""

    def __init__(self, pools: Sequence[Obj], services: Sequence[Obj] = (),
                 rest: type[FakeRest] = FakeRest) -> None:
        self.rest = rest({IPADDRESSPOOLS.plural: pools, SERVICES.plural: services})
        self.ctl = Controller(self.rest, ControllerConfig(leader_elect=False))  # type: ignore[arg-type]
        self.events = Events(self.rest)
        self.ctl.ctx.events = self.events
        self.relist()
        self.ctl.service_part.restore()

    def relist(self) -> None:
        """What the watches would deliver: every cache as the fake API server holds it now."""
        for cache in self.ctl.ctx.caches.all():
            cache._list()

    def sync(self, key: str) -> None:
        self.relist()
        self.ctl.service_part.sync_service(key)

    def pools_changed(self) -> None:
        """A pool was added, changed or deleted: the controller's POOLS_KEY work, then the Services
        it queues."""
        self.relist()
        self.ctl.service_part.after_pools(self.ctl.pool_part.apply_pools())
        self.drain()

    def drain(self) -> None:
        """Reconcile every Service the controller queued (the other work items write pool status only)."""
        while (item := self.ctl.queue.get(timeout=0)) is not None:
            try:
                if item.startswith(SVC):
                    self.sync(item[len(SVC):])
            finally:
                self.ctl.queue.forget(item)
                self.ctl.queue.done(item)

    def status_ips(self, key: str) -> list[str]:
        return F.ingress_ips(self.rest.objects[SERVICES.plural].get(key) or {})


def written_ips(status: Mapping[str, Any]) -> list[str]:
    return [str(i["ip"]) for i in ((status.get("loadBalancer") or {}).get("ingress") or [])]


# --- MetalLB's objects -------------------------------------------------------------------------------

TEAM = {"matchLabels": {"team": "metallb"}}  # MetalLB's testSelector, "team=metallb"


def allocation(priority: int | None = None, namespaces: Sequence[str] = (),
               selectors: Sequence[Obj] = ()) -> Obj:
    out: Obj = {}
    if priority is not None:
        out["priority"] = priority
    if namespaces:
        out["namespaces"] = list(namespaces)
    if selectors:
        out["serviceSelectors"] = list(selectors)
    return out


POOLS = [
    pool("pool1", "1.2.3.0/31"),
    pool("pool2", "3.4.5.6/32", autoAssign=False),
    pool("pool3", "1000::/127"),
    pool("pool4", "2000::1/128", autoAssign=False),
    # MetalLB: 1.2.3.0/31 and 1000::/127, pool1's and pool3's addresses (see the module docstring)
    pool("pool5", "5.5.5.0/31", "5000::/127"),
    pool("pool6", "7.8.9.0/31", serviceAllocation=allocation(10, ["test-ns1"])),
    pool("pool7", "10.11.12.0/31", serviceAllocation=allocation(11, ["test-ns1"])),
    pool("pool8", "13.14.15.0/31", serviceAllocation=allocation(9, selectors=[TEAM])),
    pool("pool9", "16.17.18.0/31", serviceAllocation=allocation(namespaces=["test-ns2"])),
    pool("pool10", "19.20.21.0/31", serviceAllocation=allocation(8, selectors=[TEAM])),
    pool("pool11", "22.23.24.0/31", serviceAllocation=allocation(8, ["test-ns1"], [TEAM])),
    pool("pool12", "25.26.27.0/31", serviceAllocation=allocation(5, ["test-ns1"], [TEAM])),
]
for _i, _p in enumerate(POOLS):  # distinct ages, so that nothing depends on how equal ones order
    _p["metadata"]["creationTimestamp"] = f"2024-01-01T00:00:{_i:02d}Z"

LB_IPS = C.ANNOTATION_LOADBALANCER_IPS
ADDRESS_POOL = C.ANNOTATION_ADDRESS_POOL
JUNK = "please sir may I have an IP address thank you"


def api_server(spec: Obj) -> Obj:
    """The family fields kube-apiserver fills in from the clusterIPs (see the module docstring)."""
    out = dict(spec)
    ips = list(out.get("clusterIPs") or ([out["clusterIP"]] if out.get("clusterIP") else []))
    if not ips:
        return out  # MetalLB's "No ClusterIP": not something an API server stores
    out["clusterIP"], out["clusterIPs"] = ips[0], ips
    out["ipFamilies"] = [f"IPv{ipaddress.ip_address(ip).version}" for ip in ips]
    out["ipFamilyPolicy"] = "RequireDualStack" if len(ips) > 1 else "SingleStack"
    return out


def service(type_: str = "LoadBalancer", cluster_ips: Sequence[str] | None = ("1.2.3.4",),
            cluster_ip: str | None = None, lb_ip: str | None = None, etp: str | None = None,
            annotations: Mapping[str, str] | None = None, namespace: str = "default",
            labels: Mapping[str, str] | None = None, status: Sequence[str] | None = None,
            ingress: Sequence[Obj] | None = None, name: str = "test") -> Obj:
    """One of MetalLB's test Services, as the API server would store it."""
    spec: Obj = {"type": type_}
    if cluster_ips:
        spec["clusterIPs"] = list(cluster_ips)
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    if lb_ip is not None:
        spec["loadBalancerIP"] = lb_ip
    if etp is not None:
        spec["externalTrafficPolicy"] = etp
    meta: Obj = {"name": name, "namespace": namespace, "resourceVersion": "1",
                 "creationTimestamp": "2024-01-02T00:00:00Z"}
    if annotations:
        meta["annotations"] = dict(annotations)
    if labels:
        meta["labels"] = dict(labels)
    out: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": api_server(spec)}
    if ingress is None and status is not None:
        ingress = [{"ip": ip} for ip in status]
    if ingress is not None:
        out["status"] = {"loadBalancer": {"ingress": list(ingress)}}
    return out


# --- TestControllerMutation ----------------------------------------------------------------------------

# Each row runs in two ways, which MetalLB's shuffled runs on one controller cover too (the rows before
# a row may or may not have left the Service holding the IPs of its status):
#   "restart": the Service, status and all, exists when the term starts: restore() re-takes the IPs
#              its status names, then the Service is reconciled (a controller start or failover);
#   "running": the Service arrives during the term with the status given, which nothing holds (a
#              status written by someone else), and is reconciled.
MODES = ("restart", "running")
CLEARED: list[str] = []  # MetalLB's want without a status: the ingress is written empty


@dataclass(frozen=True)
class Row:
    """One row of TestControllerMutation: the Service (None: deleted), want, wantErr, known differences."""

    section: str
    desc: str
    svc: Obj | None
    want: list[str] | None = None  # the ingress IPs written last, None: no status write
    want_err: bool = False
    xfail: Mapping[str, str] = field(default_factory=dict)  # mode -> why lbspeaker differs

    @property
    def id(self) -> str:
        return f"{self.section}-{slug(self.desc)}"


NO_CLUSTER_IP = (
    "MetalLB leaves a LoadBalancer Service without spec.clusterIPs alone (it reads the IP family from "
    "them); lbspeaker reads spec.ipFamilies, and without them (or clusterIPs) asks for IPv4, so it "
    "allocates 1.2.3.0: kube-apiserver always sets clusterIPs and ipFamilies on a LoadBalancer Service "
    "(a headless one is refused), so only a test builds this Service (docs/metallb-compat.md)")
KEEPS_HELD = (
    "MetalLB clears the status and releases 1.2.3.1 as soon as the changed request (1.2.3.4, in no "
    "pool) cannot be met; lbspeaker keeps 1.2.3.1, which the Service holds (restored from its status), "
    "with an AllocationFailed Warning until the request can be met: an edit that cannot be carried out "
    "does not cut traffic (Allocator.allocate; docs/metallb-compat.md)")
KEEPS_OUTSIDE = (
    "MetalLB silently replaces a status IP that no pool covers with a new one (1.2.3.0); lbspeaker "
    "restores it and keeps it, with an IPOutsidePools Warning: at a restart such an IP is most likely "
    "one whose pool was deleted or shrunk while no controller ran, and that must not move traffic "
    "(docs/metallb-compat.md, 'A pool deleted under its Services')")
UNREADABLE_STATUS = (
    "MetalLB sends a Warning when it cannot read the IP families of the IPs in the status (three IPv4 "
    "addresses), then allocates anew; lbspeaker allocates anew too, with a Normal IPAllocated Event "
    "only, as for any status naming IPs the Service does not hold (MetalLB too replaces "
    "'invalid IP assigned' silently); at a restart the same status gets an IPConflict Warning from "
    "restore (docs/metallb-compat.md)")

BOTH = {mode: NO_CLUSTER_IP for mode in MODES}
DUAL = ("1.2.3.4", "3000::1")

MUTATION = [
    Row("single", "deleted balancer", None),
    Row("single", "simple non-LoadBalancer", service("ClusterIP")),
    Row("single", "simple LoadBalancer", service(), ["1.2.3.0"]),
    Row("single", "request specific IP", service(lb_ip="1.2.3.1"), ["1.2.3.1"]),
    Row("single", "request specific IP via custom annotation", service(annotations={LB_IPS: "1.2.3.1"}),
        ["1.2.3.1"]),
    Row("single", "request IP from both svc.spec.LoadBalancerIP and custom annotation",
        service(annotations={LB_IPS: "1.2.3.1"}, lb_ip="1.2.3.2"), want_err=True),
    Row("single", "request invalid IP", service(lb_ip=JUNK), want_err=True),
    Row("single", "incompatible ip and address pool annotations",
        service(annotations={LB_IPS: "1.2.3.1", ADDRESS_POOL: "pool2"}), want_err=True),
    Row("single", "request invalid IP via custom annotation", service(annotations={LB_IPS: JUNK}),
        want_err=True),
    Row("single", "request two IPs from same ip family via custom annotation",
        service(annotations={LB_IPS: "1.2.3.1,1.2.3.2"}), want_err=True),
    Row("single", "request infeasible IP", service(lb_ip="1.2.3.4", status=["1.2.3.1"]), CLEARED, True,
        xfail={"restart": KEEPS_HELD}),
    Row("single", "request IP from specific pool", service(annotations={ADDRESS_POOL: "pool1"}), ["1.2.3.0"]),
    Row("single", "switch to a different specific pool",
        service(annotations={ADDRESS_POOL: "pool2"}, status=["1.2.3.0"]), ["3.4.5.6"]),
    Row("single", "unknown pool requested", service(annotations={ADDRESS_POOL: "does-not-exist"}),
        want_err=True),
    Row("single", "invalid IP assigned", service(status=["2.3.4.5"]), ["1.2.3.0"],
        xfail={"restart": KEEPS_OUTSIDE}),
    Row("single", "invalid ingress state",
        service(ingress=[{"hostname": "foo.bar.local"}, {"ip": "10.10.10.10"}]), ["1.2.3.0"],
        xfail={"restart": KEEPS_OUTSIDE}),
    Row("single", "former LoadBalancer, now NodePort", service("NodePort", status=["1.2.3.0"]), CLEARED),
    Row("single", "request layer2 service", service(lb_ip="3.4.5.6"), ["3.4.5.6"]),
    Row("single", "Layer2 service with local traffic policy", service(lb_ip="3.4.5.6", etp="Local"),
        ["3.4.5.6"]),
    Row("single", "No ClusterIP", service(cluster_ips=None), xfail=BOTH),
    Row("single", "request IP from wrong ip-family (ipv4)", service(lb_ip="1.2.3.1", cluster_ips=["3000::1"]),
        want_err=True),
    Row("single", "request IP from wrong ip-family (ipv4) via custom annotation",
        service(annotations={LB_IPS: "1.2.3.1"}, cluster_ips=["3000::1"]), want_err=True),
    Row("single", "request IP from wrong ip-family (ipv6)", service(lb_ip="1000::"), want_err=True),
    Row("single", "request IP from wrong ip-family (ipv6) via custom annotation",
        service(annotations={LB_IPS: "1000::"}), want_err=True),
    Row("single", "IP from wrong ip-family (ipv6) assigned", service(status=["1000::"]), ["1.2.3.0"]),
    Row("single", "IP from wrong ip-family (ipv4) assigned",
        service(cluster_ips=["3000::1"], status=["1.2.3.0"]), ["1000::"]),
    # dual-stack test cases
    Row("dual", "deleted balancer", None),
    # MetalLB: 1.2.3.0 and 1000:: from pool5, which repeated pool1's and pool3's ranges
    Row("dual", "simple dual-stack LoadBalancer", service(cluster_ips=DUAL), ["5.5.5.0", "5000::"]),
    Row("dual", "request IPs from specific pool",
        service(cluster_ips=DUAL, annotations={ADDRESS_POOL: "pool5"}), ["5.5.5.0", "5000::"]),
    Row("dual", "request specific loadbalancer IP with dual-stack",
        service(cluster_ips=DUAL, lb_ip="1.2.3.1"), want_err=True),
    Row("dual", "request specific loadbalancer IPv4 address via custom annotation for dual-stack config",
        service(cluster_ips=DUAL, annotations={LB_IPS: "1.2.3.1"}), want_err=True),
    # MetalLB asks for 1.2.3.0,1000::, pool5's pair there (both IPs of a request must come from one
    # pool, in MetalLB's Assign as in ours): here pool5's pair is 5.5.5.0,5000::
    Row("dual", "request dual-stack loadbalancer IPs via custom annotation",
        service(cluster_ips=DUAL, annotations={LB_IPS: "5.5.5.0,5000::"}), ["5.5.5.0", "5000::"]),
    # MetalLB: the status names 1000:: (pool5's there, 5000:: here); 1.2.3.0 and 1000:: from pool5
    Row("dual", "request dual-stack loadbalancer with invalid ingress",
        service(cluster_ips=("3000::1", "5.6.7.8"),
                ingress=[{"hostname": "foo.bar.local"}, {"ip": "5000::"}]), ["5.5.5.0", "5000::"]),
    Row("dual", "request dual-stack loadbalancer IPs via custom annotation in a single stack cluster",
        service(cluster_ips=None, cluster_ip="1.2.3.4", annotations={LB_IPS: "1.2.3.0,1000::"}),
        want_err=True),
    Row("dual", "request IP for service from namespace specific ip pool", service(namespace="test-ns1"),
        ["7.8.9.0"]),
    Row("dual", "request IP for service from no priority namespace specific ip pool",
        service(namespace="test-ns2"), ["16.17.18.0"]),
    Row("dual", "request IP for service from service label specific ip pool",
        service(labels={"team": "metallb"}), ["19.20.21.0"]),
    Row("dual", "request IP for service from ip pool having both namespace and service label",
        service(namespace="test-ns1", labels={"team": "metallb"}), ["25.26.27.0"]),
    Row("dual", "simple LoadBalancer, ips already assigned but can't determine family",
        service(status=["1.2.3.0", "1.2.3.1", "1.2.3.2"]), ["1.2.3.0"], True,
        xfail={"running": UNREADABLE_STATUS}),
]


def mutation_params() -> list[ParameterSet]:
    """Every row in every mode, id "<mode>-<section>-<desc>", xfail where the row lists a difference."""
    return [pytest.param(mode, r, id=f"{mode}-{r.id}",
                         marks=[xfail(r.xfail[mode])] if mode in r.xfail else [])
            for mode in MODES for r in MUTATION]


def test_mutation_table_is_metallbs() -> None:
    """39 rows, as in MetalLB's table: 26 single-stack, 13 dual-stack."""
    ids = [r.id for r in MUTATION]
    assert len(ids) == len(set(ids)) == 39
    assert sum(r.section == "single" for r in MUTATION) == 26
    assert sum(r.section == "dual" for r in MUTATION) == 13


@pytest.mark.parametrize(("mode", "r"), mutation_params())
def test_mutation(mode: str, r: Row) -> None:
    key = F.key_of(r.svc) if r.svc is not None else "default/test"
    world = World(POOLS, [r.svc] if r.svc is not None and mode == "restart" else [])
    if r.svc is not None and mode == "running":
        world.rest.put(SERVICES, r.svc)
    world.sync(key)
    warnings = world.events.warnings(key)
    writes = world.rest.status_writes
    got = written_ips(writes[-1]) if writes else None
    assert got == r.want, f"status written: {writes}; warnings: {warnings}"
    assert bool(warnings) == r.want_err, warnings


# --- TestControllerConfig, TestControllerDualStackConfig ----------------------------------------------


@pytest.mark.parametrize(("cluster_ips", "addresses", "want"), [
    pytest.param(["1.2.3.4"], ["1.2.3.0/24"], ["1.2.3.0"], id="TestControllerConfig"),
    # MetalLB writes 1000::1/127, which ParseCIDR reads as 1000::/127; the CRD wants the network form
    pytest.param(["1.2.3.4", "1000::"], ["1.2.3.0/24", "1000::/127"], ["1.2.3.0", "1000::"],
                 id="TestControllerDualStackConfig"),
])
def test_config_sequence(cluster_ips: list[str], addresses: list[str], want: list[str]) -> None:
    """A Service before any pool, then a pool, then the pool deleted under it.

    MetalLB's first steps (SetBalancer before any configuration, SetPools with an empty one) have no
    state of ours to match: a term starts only once every cache, the pools' included, has listed
    (`Controller._restore` waits for it), so "no configuration yet" is "no pools": no status is
    written (ours says why with an AllocationFailed Warning). A pool added later is used without
    MetalLB's "reprocess all": the failed Service is queued again (`after_pools`). MetalLB then refuses
    a configuration that deletes the pool in use (SyncStateError, and "deleting the config", a nil one,
    is refused too: no equivalent here, there is no configuration object); either way the Service
    keeps its IPs, which is what happens here too, with an IPOutsidePools Warning
    (docs/metallb-compat.md, "A pool deleted under its Services").
    """
    svc = service(cluster_ips=cluster_ips)
    key = F.key_of(svc)
    world = World([], [svc])
    world.sync(key)
    assert world.rest.status_writes == []
    assert [w.split(":")[0] for w in world.events.warnings(key)] == ["AllocationFailed"]

    world.rest.put(IPADDRESSPOOLS, pool("default", *addresses))
    world.pools_changed()
    assert [written_ips(s) for s in world.rest.status_writes] == [want]

    world.rest.remove(IPADDRESSPOOLS, "lbspeaker-system/default")
    world.pools_changed()
    world.sync(key)
    assert [written_ips(s) for s in world.rest.status_writes] == [want], "the IPs were not kept"
    assert world.status_ips(key) == want
    assert [w.split(":")[0] for w in world.events.warnings(key)] == ["AllocationFailed", "IPOutsidePools"]


# --- TestDeleteRecyclesIP -----------------------------------------------------------------------------


def test_delete_recycles_ip() -> None:
    """One address; the second Service waits without a status write and gets it once the first is deleted.

    MetalLB's SetBalancer of the deleted Service answers "reprocess all"; ours queues the Services whose
    allocation failed (`_after_release`), which `drain` reconciles.
    """
    world = World([pool("default", "1.2.3.0/32")], [])
    first, second = service(name="test"), service(name="test2")
    world.rest.put(SERVICES, first)
    world.sync("default/test")
    assert world.status_ips("default/test") == ["1.2.3.0"]

    world.rest.put(SERVICES, second)
    world.sync("default/test2")
    assert len(world.rest.status_writes) == 1, "the second Service's status was written"
    assert world.status_ips("default/test2") == []

    world.rest.remove(SERVICES, "default/test")
    world.sync("default/test")
    world.drain()
    assert world.status_ips("default/test2") == ["1.2.3.0"]

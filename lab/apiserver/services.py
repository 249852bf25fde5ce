"""Service defaulting, validation and clusterIP/nodePort allocation, like kube-apiserver.

The server is dual-stack: IPv4 clusterIPs from 10.96.0.0/16, IPv6 from
fd00:10:96::/112, nodePorts from 30000-32767. Allocation takes the lowest free
value after a rolling cursor (O(1) amortised), and frees on delete or type change.
"""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any

from lab.apiserver.errors import ApiError, invalid

JsonObj = dict[str, Any]


class IPAllocator:
    """Addresses of one family handed out from a CIDR (network address and .1 reserved)."""

    def __init__(self, cidr: str) -> None:
        self.net = ipaddress.ip_network(cidr)
        self.first = int(self.net.network_address) + 2  # .1 is the `kubernetes` Service
        self.last = int(self.net.broadcast_address) - (1 if self.net.version == 4 else 0)
        self.used: set[int] = set()
        self.cursor = self.first

    def contains(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr.version == self.net.version and self.first <= int(addr) <= self.last

    def allocate(self, ip: str | None = None) -> str:
        if ip:
            n = int(ipaddress.ip_address(ip))
            if n in self.used:
                raise ValueError("provided IP is already allocated")
            self.used.add(n)
            return ip
        size = self.last - self.first + 1
        for _ in range(size):
            n = self.cursor
            self.cursor = self.first if self.cursor >= self.last else self.cursor + 1
            if n not in self.used:
                self.used.add(n)
                return str(ipaddress.ip_address(n))
        raise ValueError("range is full")

    def release(self, ip: str) -> None:
        with contextlib.suppress(ValueError):
            self.used.discard(int(ipaddress.ip_address(ip)))


class PortAllocator:
    """nodePorts 30000-32767."""

    def __init__(self, low: int = 30000, high: int = 32767) -> None:
        self.low, self.high = low, high
        self.used: set[int] = set()
        self.cursor = low

    def allocate(self, port: int | None = None) -> int:
        if port:
            if not self.low <= port <= self.high:
                raise ValueError(
                    "provided port is not in the valid range. "
                    f"The range of valid ports is {self.low}-{self.high}"
                )
            if port in self.used:
                raise ValueError("provided port is already allocated")
            self.used.add(port)
            return port
        for _ in range(self.high - self.low + 1):
            p = self.cursor
            self.cursor = self.low if p >= self.high else p + 1
            if p not in self.used:
                self.used.add(p)
                return p
        raise ValueError("range is full")

    def release(self, port: int | None) -> None:
        if port:
            self.used.discard(port)


def _family(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


class ServiceAllocator:
    """Defaulting + allocation state for Services (called on the server loop only)."""

    def __init__(self) -> None:
        self.ips = {"IPv4": IPAllocator("10.96.0.0/16"), "IPv6": IPAllocator("fd00:10:96::/112")}
        self.ports = PortAllocator()

    # -- defaulting -----------------------------------------------------------------------------------
    def prepare(self, svc: JsonObj, old: JsonObj | None) -> JsonObj:
        """Default, validate and allocate; returns the allocations to undo on failure via `release_diff`."""
        name = svc["metadata"].get("name", "")
        spec = svc.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        stype = spec["type"]
        errs: list[tuple[str, str]] = []
        if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
            errs.append(
                (
                    "spec.type",
                    f'Unsupported value: "{stype}": supported values: "ClusterIP", '
                    '"ExternalName", "LoadBalancer", "NodePort"',
                )
            )
        if stype != "ExternalName":
            spec.setdefault("sessionAffinity", "None")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        old_type = ((old or {}).get("spec") or {}).get("type")
        if stype in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        elif old_type in ("NodePort", "LoadBalancer"):
            spec.pop("externalTrafficPolicy", None)  # kube drops type-dependent fields on a type change
        elif spec.get("externalTrafficPolicy"):
            errs.append(
                (
                    "spec.externalTrafficPolicy",
                    f'Invalid value: "{spec["externalTrafficPolicy"]}": '
                    "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
                )
            )
        if stype == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        elif old_type == "LoadBalancer":
            spec.pop("allocateLoadBalancerNodePorts", None)
            spec.pop("loadBalancerClass", None)
        ports = spec.get("ports") or []
        if stype != "ExternalName" and not ports and spec.get("clusterIP") != "None":
            errs.append(("spec.ports", "Required value"))
        seen: set[tuple[int, str]] = set()
        names: set[str] = set()
        for i, p in enumerate(ports):
            p.setdefault("protocol", "TCP")
            if "port" not in p:
                errs.append((f"spec.ports[{i}].port", "Required value"))
                continue
            if not isinstance(p["port"], int) or not 1 <= p["port"] <= 65535:
                errs.append(
                    (
                        f"spec.ports[{i}].port",
                        f"Invalid value: {p['port']}: must be between 1 and 65535, inclusive",
                    )
                )
            p.setdefault("targetPort", p["port"])
            if p["protocol"] not in ("TCP", "UDP", "SCTP"):
                errs.append(
                    (
                        f"spec.ports[{i}].protocol",
                        f'Unsupported value: "{p["protocol"]}": supported values: "SCTP", "TCP", "UDP"',
                    )
                )
            pk = (p["port"], p["protocol"])
            if pk in seen:
                errs.append(
                    (
                        f"spec.ports[{i}]",
                        f'Duplicate value: core.ServicePort{{Name:"{p.get("name", "")}", '
                        f'Protocol:"{p["protocol"]}", Port:{p["port"]}}}',
                    )
                )
            seen.add(pk)
            if len(ports) > 1:
                if not p.get("name"):
                    errs.append((f"spec.ports[{i}].name", "Required value"))
                elif p["name"] in names:
                    errs.append((f"spec.ports[{i}].name", f'Duplicate value: "{p["name"]}"'))
                names.add(p.get("name", ""))
        if stype == "ExternalName":
            if not spec.get("externalName"):
                errs.append(("spec.externalName", "Required value"))
            for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(k, None)
        if stype not in ("NodePort", "LoadBalancer"):
            for i, p in enumerate(ports):
                if p.get("nodePort") and not (old and self._old_port(old, p)):
                    errs.append(
                        (f"spec.ports[{i}].nodePort", f"Forbidden: may not be used when `type` is '{stype}'")
                    )
        if errs:
            raise invalid("Service", "", name, errs)
        if old is not None:
            old_spec = old.get("spec") or {}
            self._carry_over(spec, old_spec)
            if (
                old_spec.get("clusterIP")
                and spec.get("clusterIP")
                and stype != "ExternalName"
                and old_spec.get("type") != "ExternalName"
                and spec["clusterIP"] != old_spec["clusterIP"]
            ):
                raise invalid(
                    "Service",
                    "",
                    name,
                    [
                        (
                            "spec.clusterIPs[0]",
                            f'Invalid value: "{spec["clusterIP"]}": may not change once set',
                        )
                    ],
                )
        if stype != "ExternalName":
            self._default_families(svc, old)
        return svc

    @staticmethod
    def _old_port(old: JsonObj, p: JsonObj) -> bool:
        return any(
            op.get("nodePort") == p.get("nodePort") for op in (old.get("spec") or {}).get("ports") or []
        )

    @staticmethod
    def _carry_over(spec: JsonObj, old_spec: JsonObj) -> None:
        """kube's patchAllocatedValues: an update that leaves allocated values empty keeps them."""
        if old_spec.get("type") == "ExternalName" or spec.get("type") == "ExternalName":
            return
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        if (
            not spec.get("clusterIPs")
            and old_spec.get("clusterIPs")
            and spec.get("clusterIP") == old_spec.get("clusterIP")
        ):
            spec["clusterIPs"] = list(old_spec["clusterIPs"])
        if spec.get("type") in ("NodePort", "LoadBalancer") and old_spec.get("type") in (
            "NodePort",
            "LoadBalancer",
        ):
            old_ports = {
                (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                for p in old_spec.get("ports") or []
            }
            for p in spec.get("ports") or []:
                if not p.get("nodePort") and old_ports.get((p.get("port"), p.get("protocol", "TCP"))):
                    p["nodePort"] = old_ports[(p.get("port"), p.get("protocol", "TCP"))]
        if (
            spec.get("type") == "LoadBalancer"
            and spec.get("externalTrafficPolicy") == "Local"
            and not spec.get("healthCheckNodePort")
            and old_spec.get("healthCheckNodePort")
        ):
            spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]

    def _default_families(self, svc: JsonObj, old: JsonObj | None) -> None:
        spec = svc["spec"]
        name = svc["metadata"].get("name", "")
        ips = list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
        if spec.get("clusterIP") and ips and ips[0] != spec["clusterIP"]:
            raise invalid(
                "Service",
                "",
                name,
                [("spec.clusterIPs", f"Invalid value: {ips!r}: first value must match `clusterIP`")],
            )
        headless = ips == ["None"]
        policy = spec.get("ipFamilyPolicy") or "SingleStack"
        if policy not in ("SingleStack", "PreferDualStack", "RequireDualStack"):
            raise invalid(
                "Service",
                "",
                name,
                [
                    (
                        "spec.ipFamilyPolicy",
                        f'Unsupported value: "{policy}": supported values: '
                        '"PreferDualStack", "RequireDualStack", "SingleStack"',
                    )
                ],
            )
        families = list(spec.get("ipFamilies") or [])
        if not families and ips and not headless:
            families = [_family(ip) for ip in ips]
        for f in families:
            if f not in ("IPv4", "IPv6"):
                raise invalid(
                    "Service",
                    "",
                    name,
                    [("spec.ipFamilies", f'Unsupported value: "{f}": supported values: "IPv4", "IPv6"')],
                )
        if len(set(families)) != len(families):
            raise invalid("Service", "", name, [("spec.ipFamilies[1]", f'Duplicate value: "{families[-1]}"')])
        if not families:
            families = ["IPv4"]
        if policy == "SingleStack":
            if len(families) > 1 or len(ips) > 1:
                raise invalid(
                    "Service",
                    "",
                    name,
                    [
                        (
                            "spec.ipFamilyPolicy",
                            'Invalid value: "SingleStack": must be '
                            "RequireDualStack or PreferDualStack when multiple IP families are specified",
                        )
                    ],
                )
        elif len(families) == 1:
            families.append("IPv6" if families[0] == "IPv4" else "IPv4")
        spec["ipFamilies"] = families
        spec["ipFamilyPolicy"] = policy
        if headless:
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]

    # -- allocation -----------------------------------------------------------------------------------
    def allocate(self, svc: JsonObj, old: JsonObj | None) -> None:
        """Allocate what `svc` needs that `old` did not hold; release what it no longer holds."""
        spec = svc["spec"]
        name = svc["metadata"].get("name", "")
        old_ips, old_ports = self.held(old)
        new_ips: list[str] = []
        taken_ips: list[tuple[str, str]] = []
        taken_ports: list[int] = []
        try:
            if spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None":
                requested = list(
                    spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
                )
                for i, fam in enumerate(spec["ipFamilies"]):
                    want = requested[i] if i < len(requested) else None
                    if want and _family(want) != fam:
                        raise invalid(
                            "Service",
                            "",
                            name,
                            [
                                (
                                    f"spec.clusterIPs[{i}]",
                                    f'Invalid value: "{want}": expected an {fam} value '
                                    f"as indicated by `ipFamilies[{i}]`",
                                )
                            ],
                        )
                    if want and want in old_ips:
                        new_ips.append(want)
                        continue
                    if want and not self.ips[fam].contains(want):
                        raise invalid(
                            "Service",
                            "",
                            name,
                            [
                                (
                                    "spec.clusterIPs",
                                    f'Invalid value: ["{want}"]: failed to allocate IP {want}: '
                                    f"the provided IP ({want}) is not in the valid range. "
                                    f"The range of valid IPs is {self.ips[fam].net}",
                                )
                            ],
                        )
                    try:
                        ip = self.ips[fam].allocate(want)
                    except ValueError as e:
                        raise invalid(
                            "Service",
                            "",
                            name,
                            [
                                (
                                    "spec.clusterIPs",
                                    f'Invalid value: ["{want or ""}"]: '
                                    f"failed to allocate IP {want or ''}: {e}",
                                )
                            ],
                        ) from None
                    taken_ips.append((fam, ip))
                    new_ips.append(ip)
                if new_ips:
                    spec["clusterIP"] = new_ips[0]
                    spec["clusterIPs"] = new_ips
            stype = spec.get("type")
            wants_node_ports = stype == "NodePort" or (
                stype == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True)
            )
            used_here: set[int] = set()
            for i, p in enumerate(spec.get("ports") or []):
                if stype not in ("NodePort", "LoadBalancer"):
                    p.pop("nodePort", None)
                    continue
                want = p.get("nodePort")
                if want and (want in old_ports or want in used_here):
                    used_here.add(want)
                    continue
                if not want and not wants_node_ports:
                    continue
                try:
                    port = self.ports.allocate(want)
                except ValueError as e:
                    raise invalid(
                        "Service", "", name, [(f"spec.ports[{i}].nodePort", f"Invalid value: {want}: {e}")]
                    ) from None
                taken_ports.append(port)
                used_here.add(port)
                p["nodePort"] = port
            if stype == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local":
                want = spec.get("healthCheckNodePort")
                if not (want and want in old_ports):
                    try:
                        port = self.ports.allocate(want)
                    except ValueError as e:
                        raise invalid(
                            "Service", "", name, [("spec.healthCheckNodePort", f"Invalid value: {want}: {e}")]
                        ) from None
                    taken_ports.append(port)
                    spec["healthCheckNodePort"] = port
            else:
                spec.pop("healthCheckNodePort", None)
        except ApiError:
            for fam, ip in taken_ips:
                self.ips[fam].release(ip)
            for port in taken_ports:
                self.ports.release(port)
            raise

    def commit_release(self, old: JsonObj | None, new: JsonObj | None) -> None:
        """After a successful write: free what `old` held and `new` no longer does."""
        old_ips, old_ports = self.held(old)
        new_ips, new_ports = self.held(new)
        for ip in old_ips - new_ips:
            self.ips[_family(ip)].release(ip)
        for port in old_ports - new_ports:
            self.ports.release(port)

    def restore(self, svc: JsonObj) -> None:
        """Mark a stored Service's allocations as used (e.g. after loading state)."""
        ips, ports = self.held(svc)
        for ip in ips:
            with contextlib.suppress(ValueError):
                self.ips[_family(ip)].allocate(ip)
        for port in ports:
            self.ports.used.add(port)

    @staticmethod
    def held(svc: JsonObj | None) -> tuple[set[str], set[int]]:
        if not svc:
            return set(), set()
        spec = svc.get("spec") or {}
        ips = {ip for ip in spec.get("clusterIPs") or [] if ip and ip != "None"}
        ports = {p["nodePort"] for p in spec.get("ports") or [] if p.get("nodePort")}
        if spec.get("healthCheckNodePort"):
            ports.add(spec["healthCheckNodePort"])
        return ips, ports

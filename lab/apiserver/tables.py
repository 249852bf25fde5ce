"""Server-side printing (`meta.k8s.io/v1` Table) so `kubectl get` shows real columns.

kubectl asks for `application/json;as=Table;g=meta.k8s.io;v=v1`; without a Table it
prints only NAME/AGE. Custom resources use their CRD's additionalPrinterColumns
(a JSONPath subset: `.a.b`, `[n]`, `[*]`, `[?(@.k=="v")]`); a few built-ins get
kube-apiserver's usual columns; everything else gets Name and Age.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Callable
from typing import Any

from lab.apiserver.registry import ResourceType

JsonObj = dict[str, Any]
Column = tuple[str, str, str, int, Callable[[JsonObj], Any]]  # name, type, format, priority, getter


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def age(ts: str | None) -> str:
    """kube's translateTimestampSince: 5s, 3m, 2h, 4d ..."""
    if not ts:
        return "<unknown>"
    try:
        t = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return "<invalid>"
    d = max(0, int(time.time() - t))
    if d < 120:
        return f"{d}s"
    if d < 3600:
        return f"{d // 60}m"
    if d < 48 * 3600:
        return f"{d // 3600}h"
    return f"{d // 86400}d"


_TOKEN = re.compile(
    r'\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\[\*\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*["\']([^"\']*)["\']\)\]'
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate the JSONPath subset CRD printer columns use; returns every match."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    path = path.lstrip("$")
    cur = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            return []
        pos = m.end()
        field, index, fkey, fval = m.groups()
        nxt: list[Any] = []
        for c in cur:
            if field is not None:
                if isinstance(c, dict) and field in c:
                    nxt.append(c[field])
            elif index is not None:
                if isinstance(c, list) and int(index) < len(c):
                    nxt.append(c[int(index)])
            elif fkey is not None:
                if isinstance(c, list):
                    for item in c:
                        v = jsonpath(item, "." + fkey)
                        if v and str(v[0]) == fval:
                            nxt.append(item)
            elif isinstance(c, list):
                nxt.extend(c)
        cur = nxt
    return cur


def _cell(values: list[Any], type_: str) -> Any:
    if not values:
        return None
    if type_ == "date":
        return age(str(values[0]))
    if len(values) == 1:
        v = values[0]
        if isinstance(v, dict | list):
            return json.dumps(v, separators=(",", ":"))
        return v
    return ",".join(json.dumps(v) if isinstance(v, dict | list) else str(v) for v in values)


def _get(path: str) -> Callable[[JsonObj], Any]:
    return lambda o: _cell(jsonpath(o, path), "string")


def _ports(o: JsonObj) -> str:
    out = []
    for p in (o.get("spec") or {}).get("ports") or []:
        s = f"{p.get('port')}"
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _external_ip(o: JsonObj) -> str:
    spec = o.get("spec") or {}
    ips = [
        i.get("ip") or i.get("hostname")
        for i in ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ]
    ips += spec.get("externalIPs") or []
    if ips:
        return ",".join(str(i) for i in ips)
    return "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"


def _node_status(o: JsonObj) -> str:
    for c in (o.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return "Ready" if c.get("status") == "True" else "NotReady"
    return "Unknown"


def _pod_ready(o: JsonObj) -> str:
    cs = (o.get("status") or {}).get("containerStatuses") or []
    total = len((o.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for c in cs if c.get('ready'))}/{total}"


def _created(o: JsonObj) -> str:
    return age(o["metadata"].get("creationTimestamp"))


def _name(o: JsonObj) -> str:
    return str(o["metadata"].get("name", ""))


BUILTIN_COLUMNS: dict[tuple[str, str], list[Column]] = {
    ("", "services"): [
        ("Type", "string", "", 0, _get(".spec.type")),
        ("Cluster-IP", "string", "", 0, _get(".spec.clusterIP")),
        ("External-IP", "string", "", 0, _external_ip),
        ("Port(s)", "string", "", 0, _ports),
        ("Age", "string", "", 0, _created),
        (
            "Selector",
            "string",
            "",
            1,
            lambda o: (
                ",".join(f"{k}={v}" for k, v in ((o.get("spec") or {}).get("selector") or {}).items())
                or "<none>"
            ),
        ),
    ],
    ("", "pods"): [
        ("Ready", "string", "", 0, _pod_ready),
        ("Status", "string", "", 0, _get(".status.phase")),
        (
            "Restarts",
            "string",
            "",
            0,
            lambda o: str(
                sum(c.get("restartCount", 0) for c in (o.get("status") or {}).get("containerStatuses") or [])
            ),
        ),
        ("Age", "string", "", 0, _created),
        ("IP", "string", "", 1, _get(".status.podIP")),
        ("Node", "string", "", 1, _get(".spec.nodeName")),
    ],
    ("", "nodes"): [
        ("Status", "string", "", 0, _node_status),
        (
            "Roles",
            "string",
            "",
            0,
            lambda o: (
                ",".join(
                    sorted(
                        k.split("/", 1)[1]
                        for k in (o["metadata"].get("labels") or {})
                        if k.startswith("node-role.kubernetes.io/")
                    )
                )
                or "<none>"
            ),
        ),
        ("Age", "string", "", 0, _created),
        ("Version", "string", "", 0, _get(".status.nodeInfo.kubeletVersion")),
        ("Internal-IP", "string", "", 1, _get('.status.addresses[?(@.type=="InternalIP")].address')),
    ],
    ("", "namespaces"): [
        ("Status", "string", "", 0, _get(".status.phase")),
        ("Age", "string", "", 0, _created),
    ],
    ("", "configmaps"): [
        ("Data", "integer", "", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
        ("Age", "string", "", 0, _created),
    ],
    ("", "events"): [
        ("Type", "string", "", 0, _get(".type")),
        ("Reason", "string", "", 0, _get(".reason")),
        (
            "Object",
            "string",
            "",
            0,
            lambda o: (
                f"{(o.get('involvedObject') or {}).get('kind', '').lower()}/"
                f"{(o.get('involvedObject') or {}).get('name', '')}"
            ),
        ),
        ("Message", "string", "", 0, _get(".message")),
    ],
    ("discovery.k8s.io", "endpointslices"): [
        ("AddressType", "string", "", 0, _get(".addressType")),
        (
            "Ports",
            "string",
            "",
            0,
            lambda o: ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>",
        ),
        (
            "Endpoints",
            "string",
            "",
            0,
            lambda o: (
                ",".join(a for e in o.get("endpoints") or [] for a in e.get("addresses") or []) or "<unset>"
            ),
        ),
        ("Age", "string", "", 0, _created),
    ],
    ("coordination.k8s.io", "leases"): [
        ("Holder", "string", "", 0, _get(".spec.holderIdentity")),
        ("Age", "string", "", 0, _created),
    ],
}


def _printer_getter(path: str, type_: str) -> Callable[[JsonObj], Any]:
    return lambda o: _cell(jsonpath(o, path), type_)


def columns_for(rt: ResourceType, crd: JsonObj | None) -> list[Column]:
    cols: list[Column] = [("Name", "string", "name", 0, _name)]
    if rt.custom and crd is not None:
        version: JsonObj = next(
            (v for v in (crd.get("spec") or {}).get("versions") or [] if v.get("name") == rt.version), {}
        )
        printer = version.get("additionalPrinterColumns") or []
        if printer:
            for c in printer:
                path, type_ = c.get("jsonPath", ""), c.get("type", "string")
                cols.append(
                    (
                        c["name"],
                        type_,
                        c.get("format", ""),
                        int(c.get("priority", 0)),
                        _printer_getter(path, type_),
                    )
                )
            return cols
    extra = BUILTIN_COLUMNS.get(rt.key)
    if extra:
        return cols + extra
    return [*cols, ("Created At", "date", "", 0, lambda o: o["metadata"].get("creationTimestamp"))]


def table(
    rt: ResourceType,
    crd: JsonObj | None,
    objects: list[JsonObj],
    list_meta: JsonObj,
    include_object: str = "Metadata",
    with_columns: bool = True,
) -> JsonObj:
    cols = columns_for(rt, crd)
    rows = []
    for o in objects:
        if include_object == "Object":
            embedded: Any = o
        elif include_object == "None":
            embedded = None
        else:
            embedded = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            }
        rows.append({"cells": [c[4](o) for c in cols], "object": embedded})
    out: JsonObj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "rows": rows}
    out["columnDefinitions"] = (
        [{"name": n, "type": t, "format": f, "description": "", "priority": p} for n, t, f, p, _ in cols]
        if with_columns
        else []
    )
    return out

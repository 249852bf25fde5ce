"""MetalLB configuration -> lbspeaker objects (pure): `lbctl migrate-metallb`.

Two inputs are understood:

* `metallb.io` custom resources of every kind (IPAddressPool, L2Advertisement,
  BGPAdvertisement, BGPPeer v1beta1/v1beta2, BFDProfile, Community, and the deprecated v1beta1
  AddressPool): same names and field names, so the object moves over by changing its
  apiVersion and namespace; fields lbspeaker's schema does not have (the API server
  would prune them silently) are removed and *reported*. The status-only kinds
  (ServiceL2Status, ServiceBGPStatus, ConfigurationState) are skipped with a note: lbspeaker's
  components write their own.
* MetalLB's legacy ConfigMap (`metallb-system/config`, key `config`, MetalLB <= 0.12):
  `address-pools:` (protocol layer2/bgp, addresses, auto-assign, avoid-buggy-ips,
  bgp-advertisements), `peers:`, `bfd-profiles:` and `bgp-communities:` become IPAddressPool +
  L2Advertisement/BGPAdvertisement, BGPPeer, BFDProfile and Community objects.

Everything that cannot be carried over (VRFs, runtime status objects,
unknown fields) is returned as a note, so nothing is lost without a word.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from lbspeaker.api import constants as C

METALLB_GROUPS = ("metallb.io",)
METALLB_NAMESPACE = "metallb-system"
CARRIED_KINDS = {"IPAddressPool", "L2Advertisement", "BGPAdvertisement", "BGPPeer", "BFDProfile", "Community"}
STATUS_KINDS = {"ServiceL2Status", "ServiceBGPStatus", "ConfigurationState"}
DROPPED_META = {
    "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds", "managedFields", "selfLink", "ownerReferences", "finalizers",
}
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Accepted by lbspeaker's schema for compatibility but without effect: reported, then dropped.
INERT_PEER_FIELDS = {
    "vrf": "VRF peering is not supported by lbspeaker; the session would be opened from the default VRF",
}


@dataclass
class Result:
    """Converted objects (in input order) and notes on what did not carry over."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        return yaml.safe_dump_all(self.objects, sort_keys=False)


def _schemas() -> dict[str, dict[str, Any]]:
    from lbspeaker.api.crdgen import openapi_schema
    from lbspeaker.api.models import KINDS

    return {kind: openapi_schema(model) for kind, model in KINDS.items()}


_SCHEMA_CACHE: dict[str, dict[str, Any]] = {}


def schema_of(kind: str) -> dict[str, Any]:
    if not _SCHEMA_CACHE:
        _SCHEMA_CACHE.update(_schemas())
    return _SCHEMA_CACHE[kind]


def prune(value: Any, schema: Mapping[str, Any], path: str, dropped: list[str]) -> Any:
    """Remove what the structural schema does not know (as the API server would), listing each path."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return value
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            if props is not None and key in props:
                out[key] = prune(item, props[key], f"{path}.{key}", dropped)
            elif isinstance(extra, dict):
                out[key] = prune(item, extra, f"{path}.{key}", dropped)
            elif extra is True or (props is None and extra is None):
                out[key] = item
            else:
                dropped.append(f"{path}.{key}")
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(v, schema["items"], f"{path}[{i}]", dropped) for i, v in enumerate(value)]
    return value


def _metadata(meta: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": meta.get("name"), "namespace": namespace}
    if meta.get("labels"):
        out["labels"] = dict(meta["labels"])
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    if annotations:
        out["annotations"] = annotations
    return out


def _object(kind: str, name: str, namespace: str, spec: dict[str, Any],
            meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    version = C.BGPPEER_VERSION if kind == "BGPPeer" else C.VERSION
    metadata = _metadata(meta or {"name": name}, namespace)
    metadata["name"] = name
    return {"apiVersion": f"{C.GROUP}/{version}", "kind": kind, "metadata": metadata, "spec": spec}


def _finish(obj: dict[str, Any], where: str, result: Result) -> None:
    """Drop the inert and unknown fields of `obj` (with notes) and append it."""
    spec = obj.get("spec") or {}
    if obj["kind"] == "BGPPeer":
        for fname, why in INERT_PEER_FIELDS.items():
            if fname in spec:
                result.notes.append(f"{where}: spec.{fname}={spec.pop(fname)!r} not carried over: {why}")
        secret = spec.get("passwordSecret")
        if isinstance(secret, dict):
            ns = secret.get("namespace") or METALLB_NAMESPACE
            result.notes.append(
                f"{where}: passwordSecret {ns}/{secret.get('name')}: copy that Secret into "
                f"{obj['metadata']['namespace']} (lbspeaker reads it there)"
            )
            if secret.get("namespace") in (None, METALLB_NAMESPACE):
                secret.pop("namespace", None)
    if obj["kind"] == "BFDProfile" and spec.get("echoMode"):
        result.notes.append(
            f"{where}: echoMode is carried over but lbspeaker has no BFD echo function: the sessions "
            "run without echo (the profile's Ready condition says so)"
        )
    dropped: list[str] = []
    schema = schema_of(obj["kind"])
    obj["spec"] = prune(spec, schema["properties"]["spec"], "spec", dropped)
    for path in dropped:
        result.notes.append(f"{where}: {path} is not an lbspeaker field: not carried over")
    result.objects.append(obj)


def _label_selector(sel: Mapping[str, Any]) -> dict[str, Any]:
    """Legacy `match-labels` / `match-expressions` -> metav1.LabelSelector."""
    out: dict[str, Any] = {}
    if sel.get("match-labels"):
        out["matchLabels"] = {str(k): str(v) for k, v in sel["match-labels"].items()}
    if sel.get("match-expressions"):
        out["matchExpressions"] = [
            {"key": e.get("key"), "operator": e.get("operator"), "values": list(e.get("values") or [])}
            for e in sel["match-expressions"]
        ]
    return out


def dns_name(text: str) -> str:
    """A DNS-1123 name fragment from free text (addresses, pool names)."""
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return out or "x"


# -- metallb.io objects -------------------------------------------------------------------------


def convert_crd_object(obj: Mapping[str, Any], namespace: str, result: Result) -> None:
    kind = str(obj.get("kind"))
    meta = obj.get("metadata") or {}
    where = f"{kind} {meta.get('name')}"
    if kind in STATUS_KINDS:
        result.notes.append(f"{where}: skipped: runtime state, lbspeaker's controller and speakers write "
                            "their own")
        return
    if kind == "AddressPool":  # metallb.io/v1beta1, deprecated: a pool with its protocol inside
        pool = {
            "name": meta.get("name"),
            "protocol": (obj.get("spec") or {}).get("protocol"),
            "addresses": (obj.get("spec") or {}).get("addresses"),
            "auto-assign": (obj.get("spec") or {}).get("autoAssign"),
            "avoid-buggy-ips": (obj.get("spec") or {}).get("avoidBuggyIPs"),
            "bgp-advertisements": [
                {
                    "aggregation-length": a.get("aggregationLength"),
                    "aggregation-length-v6": a.get("aggregationLengthV6"),
                    "localpref": a.get("localPref"),
                    "communities": a.get("communities"),
                }
                for a in (obj.get("spec") or {}).get("bgpAdvertisements") or []
            ],
        }
        convert_legacy_pool(pool, namespace, result, meta)
        return
    if kind not in CARRIED_KINDS:
        result.notes.append(f"{where}: skipped: lbspeaker has no {kind} kind")
        return
    # BGPPeer v1beta1 and v1beta2 share the field names lbspeaker reads (v1beta2 only added fields).
    spec = copy.deepcopy(dict(obj.get("spec") or {}))
    _finish(_object(kind, str(meta.get("name")), namespace, spec, meta), where, result)


# -- the legacy ConfigMap -------------------------------------------------------------------------


def convert_legacy_pool(
    pool: Mapping[str, Any], namespace: str, result: Result, meta: Mapping[str, Any] | None = None
) -> None:
    name = str(pool.get("name") or "")
    where = f"address-pool {name}"
    if not name:
        result.notes.append("an address-pool without a name: skipped")
        return
    spec: dict[str, Any] = {"addresses": [str(a) for a in pool.get("addresses") or []]}
    if pool.get("auto-assign") is not None:
        spec["autoAssign"] = bool(pool["auto-assign"])
    if pool.get("avoid-buggy-ips") is not None:
        spec["avoidBuggyIPs"] = bool(pool["avoid-buggy-ips"])
    known = {"name", "protocol", "addresses", "auto-assign", "avoid-buggy-ips", "bgp-advertisements"}
    for key in sorted(set(pool) - known):
        result.notes.append(f"{where}: {key} is not an address-pool field lbspeaker knows: not carried over")
    _finish(_object("IPAddressPool", name, namespace, spec, meta), where, result)
    protocol = str(pool.get("protocol") or "")
    if protocol == "layer2":
        _finish(
            _object("L2Advertisement", f"{name}-l2", namespace, {"ipAddressPools": [name]}),
            where, result,
        )
    elif protocol == "bgp":
        advs = list(pool.get("bgp-advertisements") or []) or [{}]
        for i, adv in enumerate(advs):
            adv_spec: dict[str, Any] = {"ipAddressPools": [name]}
            if adv.get("aggregation-length") is not None:
                adv_spec["aggregationLength"] = int(adv["aggregation-length"])
            if adv.get("aggregation-length-v6") is not None:
                adv_spec["aggregationLengthV6"] = int(adv["aggregation-length-v6"])
            if adv.get("localpref") is not None:
                adv_spec["localPref"] = int(adv["localpref"])
            if adv.get("communities"):
                adv_spec["communities"] = [str(c) for c in adv["communities"]]
            adv_name = f"{name}-bgp" if len(advs) == 1 else f"{name}-bgp-{i + 1}"
            _finish(_object("BGPAdvertisement", adv_name, namespace, adv_spec), where, result)
    else:
        result.notes.append(
            f"{where}: protocol {protocol or '(none)'!r} unknown: pool created without an advertisement"
        )


def _take(table: Mapping[str, tuple[str, type]], key: str, value: Any, spec: dict[str, Any]) -> bool:
    """Copy a legacy `key: value` into `spec` under its CRD name and type; False if `key` is unknown."""
    if key not in table:
        return False
    target, typ = table[key]
    spec[target] = typ(value)
    return True


PEER_FIELDS = {
    "my-asn": ("myASN", int),
    "peer-asn": ("peerASN", int),
    "peer-address": ("peerAddress", str),
    "source-address": ("sourceAddress", str),
    "peer-port": ("peerPort", int),
    "hold-time": ("holdTime", str),
    "keepalive-time": ("keepaliveTime", str),
    "router-id": ("routerID", str),
    "password": ("password", str),
    "ebgp-multihop": ("ebgpMultiHop", bool),
    "bfd-profile": ("bfdProfile", str),
    "vrf": ("vrf", str),
}


def convert_legacy_peer(peer: Mapping[str, Any], index: int, namespace: str, result: Result) -> None:
    address = str(peer.get("peer-address") or f"peer-{index}")
    name = f"peer-{dns_name(address)}"
    where = f"peer {address}"
    spec: dict[str, Any] = {}
    for key, value in peer.items():
        if _take(PEER_FIELDS, key, value, spec):
            pass
        elif key == "node-selectors":
            spec["nodeSelectors"] = [_label_selector(s) for s in value or []]
        else:
            result.notes.append(f"{where}: {key} is not a peer field lbspeaker knows: not carried over")
    if "password" in spec:
        result.notes.append(
            f"{where}: the TCP MD5 password is carried over in clear text; prefer a Secret (passwordSecret)"
        )
    _finish(_object("BGPPeer", name, namespace, spec), where, result)


BFD_PROFILE_FIELDS = {
    "receive-interval": ("receiveInterval", int),
    "transmit-interval": ("transmitInterval", int),
    "detect-multiplier": ("detectMultiplier", int),
    "echo-interval": ("echoInterval", int),
    "echo-mode": ("echoMode", bool),
    "passive-mode": ("passiveMode", bool),
    "minimum-ttl": ("minimumTtl", int),
}


def convert_legacy_bfd_profile(profile: Mapping[str, Any], namespace: str, result: Result) -> None:
    name = str(profile.get("name") or "bfd")
    where = f"bfd-profile {name}"
    spec: dict[str, Any] = {}
    for key, value in profile.items():
        if not _take(BFD_PROFILE_FIELDS, key, value, spec) and key != "name":
            result.notes.append(f"{where}: {key} is not a BFD profile field: not carried over")
    _finish(_object("BFDProfile", dns_name(name), namespace, spec), where, result)


def convert_legacy_config(text: str, namespace: str, result: Result) -> None:
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        result.notes.append(f"legacy config: not YAML ({exc}): nothing converted")
        return
    if not isinstance(config, dict):
        result.notes.append("legacy config: not a mapping: nothing converted")
        return
    communities = config.get("bgp-communities") or {}
    if communities:
        _finish(
            _object(
                "Community", "communities", namespace,
                {"communities": [{"name": str(k), "value": str(v)} for k, v in communities.items()]},
            ),
            "bgp-communities", result,
        )
    for i, peer in enumerate(config.get("peers") or []):
        convert_legacy_peer(peer, i, namespace, result)
    for pool in config.get("address-pools") or []:
        convert_legacy_pool(pool, namespace, result)
    for profile in config.get("bfd-profiles") or []:
        convert_legacy_bfd_profile(profile, namespace, result)
    for key in sorted(set(config) - {"bgp-communities", "peers", "address-pools", "bfd-profiles"}):
        result.notes.append(f"legacy config: section {key!r} unknown: not carried over")


# -- entry points -----------------------------------------------------------------------------------


def _documents(docs: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    for doc in docs:
        if not isinstance(doc, Mapping):
            continue
        if doc.get("kind") == "List" or (str(doc.get("kind", "")).endswith("List") and "items" in doc):
            yield from _documents(doc.get("items") or [])
        else:
            yield doc


def convert(docs: Iterable[Any], namespace: str = C.NAMESPACE) -> Result:
    """Every MetalLB object among `docs` (parsed YAML documents) as lbspeaker objects, plus notes."""
    result = Result()
    for doc in _documents(docs):
        api_version = str(doc.get("apiVersion") or "")
        kind = str(doc.get("kind") or "")
        meta = doc.get("metadata") or {}
        group = api_version.split("/", 1)[0] if "/" in api_version else ""
        if group in METALLB_GROUPS:
            convert_crd_object(doc, namespace, result)
        elif kind == "ConfigMap" and isinstance((doc.get("data") or {}).get("config"), str):
            convert_legacy_config(doc["data"]["config"], namespace, result)
        else:
            result.notes.append(f"{kind or '?'} {meta.get('name')}: skipped: not a MetalLB object")
    return result


def convert_text(text: str, namespace: str = C.NAMESPACE) -> Result:
    return convert(yaml.safe_load_all(text), namespace)

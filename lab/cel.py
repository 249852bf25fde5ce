"""Evaluate a CRD schema's CEL `x-kubernetes-validations` the way kube-apiserver does.

Used by the unit tests (every rule in lbspeaker's CRDs has a good and a bad case) and
by the lab API server (not part of the product) to reject bad custom resources with
422. Built on cel-python (`celpy`) plus the Kubernetes CEL libraries the rules use:

* strings extension: split, trim, lowerAscii, upperAscii, replace, indexOf,
  lastIndexOf, substring, charAt, join;
* IP/CIDR library: isIP, ip() (+ family, isUnspecified, isLoopback,
  isLinkLocalMulticast, isLinkLocalUnicast, isGlobalUnicast, string()),
  isCIDR, cidr() (+ ip, prefixLength, masked, containsIP, containsCIDR);
* `duration()` with Go `time.ParseDuration` syntax (celpy's own truncates "1.5s" and
  refuses "0"), getSeconds/getMilliseconds as totals like cel-go.

Semantics kept from Kubernetes: rules run only on values that are present;
transition rules (those that mention `oldSelf`) run only on updates where the old
value exists at the same place (object properties by name, map-lists by key; items
of other lists are not correlated); a rule that errors at runtime is a violation
whose message includes the error. A rule this evaluator cannot compile or that
calls a function it does not know is skipped (logged), never a crash.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import logging
import re
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.evaluation import CELEvalError

from lbspeaker.api.models import parse_duration

log = logging.getLogger(__name__)

__all__ = ["apply_defaults", "prune_unknown", "validate_against_rules", "validate_rules"]


# --- Kubernetes IP / CIDR library ------------------------------------------------------------------------


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Kubernetes `ip()` parsing: no zones, no IPv4-mapped IPv6, no leading zeros (Python refuses those)."""
    addr = ipaddress.ip_address(str(text))
    if isinstance(addr, ipaddress.IPv6Address) and (addr.scope_id or addr.ipv4_mapped is not None):
        raise ValueError(f"IP Address {text!r} parse error: zones and IPv4-mapped IPv6 are not allowed")
    return addr


def _parse_cidr(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """Kubernetes `cidr()` parsing (netip.ParsePrefix): address/decimal-length, host bits allowed."""
    s = str(text)
    addr_text, sep, length = s.partition("/")
    if not sep or not length.isdigit() or (len(length) > 1 and length[0] == "0"):
        raise ValueError(f"network address parse error during conversion from string: {s!r}")
    _parse_ip(addr_text)
    return ipaddress.ip_interface(s)


class CelIP:
    """A Kubernetes CEL `net.IP` value."""

    def __init__(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        self.addr = addr

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelIP) and self.addr == other.addr

    def __hash__(self) -> int:
        return hash(self.addr)

    def __repr__(self) -> str:
        return f"ip({str(self.addr)!r})"


class CelCIDR:
    """A Kubernetes CEL `net.CIDR` value (keeps host bits, like netip.Prefix)."""

    def __init__(self, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        self.iface = iface

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelCIDR) and (self.iface.ip, self.iface.network.prefixlen) == (
            other.iface.ip,
            other.iface.network.prefixlen,
        )

    def __hash__(self) -> int:
        return hash((self.iface.ip, self.iface.network.prefixlen))

    def __repr__(self) -> str:
        return f"cidr({str(self.iface)!r})"


def _is_ip(text: Any) -> celtypes.BoolType:
    try:
        _parse_ip(text)
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def _is_cidr(text: Any) -> celtypes.BoolType:
    try:
        _parse_cidr(text)
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def _ip(arg: Any) -> CelIP:
    """`ip(string)` and `cidr.ip()` share one name in celpy (methods are functions of their target)."""
    if isinstance(arg, CelCIDR):
        return CelIP(arg.iface.ip)
    return CelIP(_parse_ip(arg))


def _cidr(arg: Any) -> CelCIDR:
    return CelCIDR(_parse_cidr(arg))


def _family(arg: CelIP) -> celtypes.IntType:
    return celtypes.IntType(arg.addr.version)


def _prefix_length(arg: CelCIDR) -> celtypes.IntType:
    return celtypes.IntType(arg.iface.network.prefixlen)


def _masked(arg: CelCIDR) -> CelCIDR:
    net = arg.iface.network
    return CelCIDR(ipaddress.ip_interface(f"{net.network_address}/{net.prefixlen}"))


def _contains_ip(net: CelCIDR, other: Any) -> celtypes.BoolType:
    addr = other.addr if isinstance(other, CelIP) else _parse_ip(other)
    return celtypes.BoolType(addr.version == net.iface.version and addr in net.iface.network)


def _contains_cidr(net: CelCIDR, other: Any) -> celtypes.BoolType:
    sub = other if isinstance(other, CelCIDR) else CelCIDR(_parse_cidr(other))
    n, s = net.iface.network, sub.iface.network
    return celtypes.BoolType(n.version == s.version and s.prefixlen >= n.prefixlen and s.subnet_of(n))  # type: ignore[arg-type]


def _ip_pred(name: str) -> Callable[[CelIP], celtypes.BoolType]:
    attr = {
        "isUnspecified": "is_unspecified",
        "isLoopback": "is_loopback",
        "isLinkLocalMulticast": "is_multicast",
        "isLinkLocalUnicast": "is_link_local",
        "isGlobalUnicast": "is_global",
    }[name]

    def pred(arg: CelIP) -> celtypes.BoolType:
        addr = arg.addr
        if name == "isLinkLocalMulticast":
            net = "224.0.0.0/24" if addr.version == 4 else "ff02::/16"
            return celtypes.BoolType(addr in ipaddress.ip_network(net))
        if name == "isGlobalUnicast":  # Go: not unspecified/loopback/multicast/link-local, broadcast
            return celtypes.BoolType(
                not (
                    addr.is_unspecified
                    or addr.is_loopback
                    or addr.is_multicast
                    or addr.is_link_local
                    or addr == ipaddress.IPv4Address("255.255.255.255")
                )
            )
        return celtypes.BoolType(bool(getattr(addr, attr)))

    return pred


def _string(arg: Any) -> celtypes.StringType:
    if isinstance(arg, CelIP):
        return celtypes.StringType(str(arg.addr))
    if isinstance(arg, CelCIDR):
        return celtypes.StringType(str(arg.iface))
    return celtypes.StringType(arg)


# --- strings extension -----------------------------------------------------------------------------------


def _split(s: Any, sep: Any, n: Any = None) -> celtypes.ListType:
    text, sepr = str(s), str(sep)
    if n is not None:
        limit = int(n)
        if limit == 0:
            return celtypes.ListType([])
        parts = text.split(sepr, limit - 1) if limit > 0 else text.split(sepr)
    elif sepr == "":
        parts = list(text)
    else:
        parts = text.split(sepr)
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


def _trim(s: Any) -> celtypes.StringType:
    return celtypes.StringType(str(s).strip())


def _lower(s: Any) -> celtypes.StringType:
    return celtypes.StringType("".join(c.lower() if c.isascii() else c for c in str(s)))


def _upper(s: Any) -> celtypes.StringType:
    return celtypes.StringType("".join(c.upper() if c.isascii() else c for c in str(s)))


def _replace(s: Any, old: Any, new: Any, n: Any = None) -> celtypes.StringType:
    count = -1 if n is None else int(n)
    return celtypes.StringType(str(s).replace(str(old), str(new), count))


def _index_of(s: Any, sub: Any, offset: Any = 0) -> celtypes.IntType:
    return celtypes.IntType(str(s).find(str(sub), int(offset)))


def _last_index_of(s: Any, sub: Any, offset: Any = None) -> celtypes.IntType:
    text = str(s)
    end = len(text) if offset is None else int(offset) + len(str(sub))
    return celtypes.IntType(text.rfind(str(sub), 0, end))


def _substring(s: Any, start: Any, end: Any = None) -> celtypes.StringType:
    text = str(s)
    a = int(start)
    b = len(text) if end is None else int(end)
    if not 0 <= a <= b <= len(text):
        raise ValueError(f"substring({a}, {b}) out of range for a string of length {len(text)}")
    return celtypes.StringType(text[a:b])


def _char_at(s: Any, i: Any) -> celtypes.StringType:
    text, idx = str(s), int(i)
    if not 0 <= idx <= len(text):
        raise ValueError(f"index out of range: {idx}")
    return celtypes.StringType(text[idx : idx + 1])


def _join(items: Any, sep: Any = "") -> celtypes.StringType:
    return celtypes.StringType(str(sep).join(str(i) for i in items))


# --- durations (Go syntax) -------------------------------------------------------------------------------


def _duration(arg: Any) -> celtypes.DurationType:
    if isinstance(arg, celtypes.DurationType):
        return arg
    seconds = parse_duration(str(arg))  # ValueError -> CEL error value
    return celtypes.DurationType(datetime.timedelta(seconds=seconds))


def _get_seconds(arg: Any, tz: Any = None) -> celtypes.IntType:
    if isinstance(arg, datetime.timedelta):
        return celtypes.IntType(int(arg.total_seconds()))
    return celtypes.IntType(arg.getSeconds(tz) if tz is not None else arg.getSeconds())


def _get_milliseconds(arg: Any, tz: Any = None) -> celtypes.IntType:
    if isinstance(arg, datetime.timedelta):
        return celtypes.IntType(arg // datetime.timedelta(milliseconds=1))
    return celtypes.IntType(arg.getMilliseconds(tz) if tz is not None else arg.getMilliseconds())


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "isIP": _is_ip,
    "ip": _ip,
    "family": _family,
    "isCIDR": _is_cidr,
    "cidr": _cidr,
    "prefixLength": _prefix_length,
    "masked": _masked,
    "containsIP": _contains_ip,
    "containsCIDR": _contains_cidr,
    "string": _string,
    **{
        name: _ip_pred(name)
        for name in (
            "isUnspecified",
            "isLoopback",
            "isLinkLocalMulticast",
            "isLinkLocalUnicast",
            "isGlobalUnicast",
        )
    },
    "split": _split,
    "trim": _trim,
    "lowerAscii": _lower,
    "upperAscii": _upper,
    "replace": _replace,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "substring": _substring,
    "charAt": _char_at,
    "join": _join,
    "duration": _duration,
    "getSeconds": _get_seconds,
    "getMilliseconds": _get_milliseconds,
}

_ENV = celpy.Environment()
_LOCK = threading.Lock()
_OLD_SELF = re.compile(r"\boldSelf\b")


class _Unsupported(Exception):
    """The rule cannot be evaluated here (syntax celpy lacks, unknown function)."""


@lru_cache(maxsize=1024)
def _program(rule: str) -> Any:
    """Compile once per rule text (celpy's parser is slow)."""
    try:
        return _ENV.program(_ENV.compile(rule), functions=FUNCTIONS)
    except Exception as exc:  # celpy raises its own parse errors; never crash the caller
        raise _Unsupported(f"cannot compile: {exc}") from exc


def _evaluate(rule: str, value: Any, old: Any, has_old: bool) -> tuple[bool, str | None]:
    """(passed, runtime error text). Raises _Unsupported when the rule cannot be run here.

    Results are memoised on the JSON of the inputs: rules are pure, and the lab API server
    re-validates mostly unchanged objects on every status write (celpy is slow)."""
    old_json = json.dumps(old, sort_keys=True) if has_old else None
    return _evaluate_json(rule, json.dumps(value, sort_keys=True), has_old, old_json)


@lru_cache(maxsize=8192)
def _evaluate_json(
    rule: str, value_json: str, has_old: bool, old_json: str | None
) -> tuple[bool, str | None]:
    value = json.loads(value_json)
    old = json.loads(old_json) if old_json is not None else None
    with _LOCK:
        program = _program(rule)
        activation: dict[str, Any] = {"self": celpy.json_to_cel(value)}
        if has_old:
            activation["oldSelf"] = celpy.json_to_cel(old)
        try:
            result = program.evaluate(activation)
        except CELEvalError as exc:
            result = exc
        except Exception as exc:  # a bug in an extension function: report, do not crash
            return False, f"{type(exc).__name__}: {exc}"
    if isinstance(result, CELEvalError):
        text = str(result.args[0]) if result.args else str(result)
        if "undeclared reference" in text:
            raise _Unsupported(text.split(" (in activation")[0])
        detail = ""
        if len(result.args) > 2 and result.args[2]:
            detail = f" ({result.args[2][0]})"
        return False, text.split(" (in activation")[0] + detail
    return bool(result) and isinstance(result, celtypes.BoolType), None


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def _check_node(
    schema: dict[str, Any], value: Any, old: Any, has_old: bool, path: str, out: list[str]
) -> None:
    for entry in schema.get("x-kubernetes-validations", ()):
        rule = entry.get("rule", "")
        if _OLD_SELF.search(rule) and not has_old:
            continue
        where = (path + entry.get("fieldPath", "")).lstrip(".")
        try:
            ok, error = _evaluate(rule, value, old, has_old)
        except _Unsupported as exc:
            log.warning("CEL rule skipped at %s (%s): %s", where or "<root>", exc, rule)
            continue
        if ok:
            continue
        message = entry.get("message") or f"failed rule: {rule}"
        if error is not None:
            message = f"{error} evaluating rule: {rule}"
        prefix = f"{where}: " if where else ""
        out.append(f'{prefix}Invalid value: "{_json_type(value)}": {message}')


def _walk(schema: dict[str, Any], value: Any, old: Any, has_old: bool, path: str, out: list[str]) -> None:
    if value is None:
        return
    _check_node(schema, value, old, has_old, path, out)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        old_map = old if has_old and isinstance(old, dict) else {}
        for name, sub in value.items():
            sub_schema = props.get(name)
            key_path = f"{path}.{name}" if path else name
            if sub_schema is None and isinstance(extra, dict):
                sub_schema = extra
                key_path = f"{path}[{name}]"
            if sub_schema is not None:
                _walk(sub_schema, sub, old_map.get(name), name in old_map, key_path, out)
    elif isinstance(value, list):
        items = schema.get("items")
        if not isinstance(items, dict):
            return
        keys = schema.get("x-kubernetes-list-map-keys") or []
        olds: dict[tuple[Any, ...], Any] = {}
        if has_old and isinstance(old, list) and schema.get("x-kubernetes-list-type") == "map" and keys:
            olds = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
        for i, item in enumerate(value):
            key = tuple(item.get(k) for k in keys) if keys and isinstance(item, dict) else None
            found = key is not None and key in olds
            _walk(
                items, item, olds.get(key) if found and key is not None else None, found, f"{path}[{i}]", out
            )


def validate_rules(schema: dict[str, Any], obj: Any, old_obj: Any = None) -> list[str]:
    """One message per violated CEL rule of `schema` (an openAPIV3Schema) on `obj`.

    `obj` is normally a dict (any JSON value works, for sub-schemas); `old_obj` is the stored
    object on an update (enables transition rules), None on create.
    Messages look like kube-apiserver's field errors: `spec.addresses[0]: Invalid value: "string": ...`.
    """
    out: list[str] = []
    _walk(schema, obj, old_obj, old_obj is not None, "", out)
    return out


validate_against_rules = validate_rules  # the name helper C imports


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """A copy of `obj` with the schema's `default`s filled in where a property is absent, as
    kube-apiserver does before validation (e.g. autoAssign: true, peerPort: 179)."""
    obj = copy.deepcopy(obj)
    _defaults(schema, obj)
    return obj


def _defaults(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, sub_value in value.items():
                if name not in (schema.get("properties") or {}):
                    _defaults(extra, sub_value)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _defaults(schema["items"], item)


def prune_unknown(schema: dict[str, Any], obj: Any) -> Any:
    """A copy of `obj` without the fields its structural schema does not declare, as kube-apiserver
    prunes custom resources (apiVersion, kind and metadata at the root are kept as they are)."""
    obj = copy.deepcopy(obj)
    if isinstance(obj, dict):
        for name in list(obj):
            if name in ("apiVersion", "kind", "metadata"):
                continue
            sub = (schema.get("properties") or {}).get(name)
            if sub is None:
                del obj[name]
            else:
                _prune(sub, obj[name])
    return obj


def _prune(schema: dict[str, Any], value: Any) -> None:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name in list(value):
            if name in props:
                _prune(props[name], value[name])
            elif isinstance(extra, dict):
                _prune(extra, value[name])
            elif extra is not True:
                del value[name]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _prune(schema["items"], item)

"""CEL rules of the generated CRDs, evaluated through lab/cel.py: each rule rejects its bad case
and accepts its good case; the Kubernetes CEL library emulation keeps Kubernetes' semantics."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.cel import apply_defaults, prune_unknown, validate_against_rules, validate_rules
from lbspeaker.api.addresses import AddressSyntaxError, parse_address_range
from lbspeaker.api.crdgen import openapi_schema
from lbspeaker.api.models import KINDS, parse_community

SCHEMAS = {kind: openapi_schema(model) for kind, model in KINDS.items()}

BASE: dict[str, dict[str, Any]] = {
    "IPAddressPool": {"spec": {"addresses": ["172.18.255.200-172.18.255.250"]}},
    "L2Advertisement": {"spec": {}},
    "BGPAdvertisement": {"spec": {}},
    "BGPPeer": {"spec": {"myASN": 64500, "peerASN": 64501, "peerAddress": "172.18.0.100"}},
    "Community": {"spec": {"communities": [{"name": "vpn-only", "value": "1234:1"}]}},
    "ServiceL2Status": {"status": {"node": "kind-worker", "serviceName": "s", "serviceNamespace": "d"}},
    "ServiceBGPStatus": {"status": {"node": "kind-worker", "serviceName": "s", "serviceNamespace": "d"}},
}


def _obj(kind: str, section: str = "spec", **fields: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BASE[kind])
    obj.setdefault(section, {}).update(fields)
    for key in [k for k, v in obj[section].items() if v is None]:
        del obj[section][key]
    obj.update({"apiVersion": "lbspeaker.io/v1beta1", "kind": kind, "metadata": {"name": "x"}})
    return obj


def _errors(kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    schema = SCHEMAS[kind]
    return validate_rules(
        schema, apply_defaults(schema, obj), apply_defaults(schema, old) if old is not None else None
    )


ADDR = "each address must be"
ORDER = "must not start after it ends"
SEL = "values must be non-empty"
XOR_ASN = "exactly one of peerASN"
XOR_ADDR = "exactly one of peerAddress"
HOLD = "holdTime must be 0s"
KEEP = "keepaliveTime must not exceed"
CONNECT = "connectTime must be between"
WHOLE = "whole number of seconds"
COMM = "a community is 'AA:NN'"


def _sel(operator: str, values: list[str] | None) -> list[dict[str, Any]]:
    req: dict[str, Any] = {"key": "app", "operator": operator}
    if values is not None:
        req["values"] = values
    return [{"matchExpressions": [req]}]


CASES: list[tuple[str, dict[str, Any], str | None]] = [
    # kind, object, expected message fragment (None: valid)
    ("IPAddressPool", _obj("IPAddressPool"), None),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["10.0.0.0/8", "fd00::/120", "10.1.0.1/32"]), None),
    # a bare address: MetalLB requires a CIDR or a range, and the message says how to write it
    ("IPAddressPool", _obj("IPAddressPool", addresses=["10.1.0.1"]), "write 10.1.0.1 as 10.1.0.1/32"),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["fd00::1"]), "write 10.1.0.1 as 10.1.0.1/32"),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["fc00:f853:0ccd:e799::/124"]), None),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["10.0.0.7/24"]), None),  # host bits: allowed
    ("IPAddressPool", _obj("IPAddressPool", addresses=["fd00::1-fd00::9"]), None),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["192.168.9.1 - 192.168.9.5"]), None),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["10.0.0.5-10.0.0.5"]), None),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["9.255.255.255-10.0.0.0"]), None),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["10.0.0.0/33"]), ADDR),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["10.0.0.300"]), ADDR),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["010.0.0.1/32"]), ADDR),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["10.0.0.0/255.0.0.0"]), ADDR),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["10.0.0.1-fd00::1"]), ADDR),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["10.0.0.1-10.0.0.2-10.0.0.3"]), ADDR),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["fe80::1%eth0"]), ADDR),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["::ffff:10.0.0.1"]), ADDR),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["pool-a"]), ADDR),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["172.18.255.250-172.18.255.200"]), ORDER),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["10.0.1.0-10.0.0.255"]), ORDER),
    ("IPAddressPool", _obj("IPAddressPool", addresses=["11.0.0.0-10.255.255.255"]), ORDER),
    ("IPAddressPool", _obj("IPAddressPool", serviceAllocation={"serviceSelectors": _sel("In", ["a"])}), None),
    ("IPAddressPool", _obj("IPAddressPool", serviceAllocation={"serviceSelectors": _sel("In", [])}), SEL),
    (
        "IPAddressPool",
        _obj("IPAddressPool", serviceAllocation={"namespaceSelectors": _sel("NotIn", None)}),
        SEL,
    ),
    (
        "IPAddressPool",
        _obj("IPAddressPool", serviceAllocation={"serviceSelectors": _sel("Exists", ["a"])}),
        SEL,
    ),
    ("L2Advertisement", _obj("L2Advertisement", nodeSelectors=_sel("DoesNotExist", None)), None),
    ("L2Advertisement", _obj("L2Advertisement", ipAddressPoolSelectors=_sel("In", None)), SEL),
    ("BGPAdvertisement", _obj("BGPAdvertisement", nodeSelectors=_sel("Exists", ["x"])), SEL),
    (
        "BGPAdvertisement",
        _obj("BGPAdvertisement", communities=["65535:65282", "vpn-only", "large:1:2:3"]),
        None,
    ),
    ("BGPAdvertisement", _obj("BGPAdvertisement", communities=["65536:1"]), "Community alias"),
    ("BGPAdvertisement", _obj("BGPAdvertisement", communities=["large:1:2"]), "Community alias"),
    ("BGPAdvertisement", _obj("BGPAdvertisement", serviceSelectors=_sel("In", ["a"])), None),
    (
        "BGPAdvertisement",
        _obj("BGPAdvertisement", serviceSelectors=_sel("In", ["a"]), aggregationLength=24),
        "serviceSelectors announce each",
    ),
    (
        "BGPAdvertisement",
        _obj("BGPAdvertisement", serviceSelectors=_sel("In", ["a"]), aggregationLengthV6=64),
        "serviceSelectors announce each",
    ),
    ("BGPAdvertisement", _obj("BGPAdvertisement", serviceSelectors=[], aggregationLength=24), None),
    ("BGPAdvertisement", _obj("BGPAdvertisement", serviceSelectors=_sel("In", [])), SEL),
    ("L2Advertisement", _obj("L2Advertisement", serviceSelectors=_sel("Exists", None)), None),
    ("L2Advertisement", _obj("L2Advertisement", serviceSelectors=_sel("NotIn", None)), SEL),
    (
        "L2Advertisement",
        _obj("L2Advertisement", preferredNodeSelectors=[{"weight": 50, "preference": _sel("In", ["a"])[0]}]),
        None,
    ),
    (
        "L2Advertisement",
        _obj("L2Advertisement", preferredNodeSelectors=[{"weight": 50, "preference": _sel("In", [])[0]}]),
        SEL,
    ),
    # BGPPeer
    ("BGPPeer", _obj("BGPPeer"), None),
    ("BGPPeer", _obj("BGPPeer", peerASN=None), XOR_ASN),
    ("BGPPeer", _obj("BGPPeer", dynamicASN="internal"), XOR_ASN),
    ("BGPPeer", _obj("BGPPeer", peerASN=None, dynamicASN="external"), None),
    ("BGPPeer", _obj("BGPPeer", peerAddress=None), XOR_ADDR),
    ("BGPPeer", _obj("BGPPeer", interface="eth1"), XOR_ADDR),
    ("BGPPeer", _obj("BGPPeer", peerAddress=None, interface="eth1"), None),
    ("BGPPeer", _obj("BGPPeer", peerAddress="172.18.0.0/16"), "single IPv4 or IPv6"),
    ("BGPPeer", _obj("BGPPeer", peerAddress="fd00::1"), None),
    ("BGPPeer", _obj("BGPPeer", sourceAddress="172.18.0.2"), None),
    ("BGPPeer", _obj("BGPPeer", sourceAddress="fd00::2"), "same IP family"),
    ("BGPPeer", _obj("BGPPeer", holdTime="0s"), None),
    ("BGPPeer", _obj("BGPPeer", holdTime="0", keepaliveTime="0s"), None),
    ("BGPPeer", _obj("BGPPeer", holdTime="3s", keepaliveTime="1s"), None),
    ("BGPPeer", _obj("BGPPeer", holdTime="1m30s"), None),
    ("BGPPeer", _obj("BGPPeer", holdTime="2s"), HOLD),
    ("BGPPeer", _obj("BGPPeer", holdTime="2.9s"), HOLD),
    ("BGPPeer", _obj("BGPPeer", holdTime="65536s"), HOLD),
    ("BGPPeer", _obj("BGPPeer", holdTime="90s", keepaliveTime="30s"), None),
    ("BGPPeer", _obj("BGPPeer", holdTime="90s", keepaliveTime="90s"), None),
    ("BGPPeer", _obj("BGPPeer", holdTime="90s", keepaliveTime="91s"), KEEP),
    ("BGPPeer", _obj("BGPPeer", keepaliveTime="100s"), None),  # holdTime 300s (3 x), as MetalLB
    ("BGPPeer", _obj("BGPPeer", holdTime="0s", keepaliveTime="30s"), KEEP),
    ("BGPPeer", _obj("BGPPeer", connectTime="10s"), None),
    ("BGPPeer", _obj("BGPPeer", connectTime="0s"), CONNECT),
    ("BGPPeer", _obj("BGPPeer", connectTime="65536s"), CONNECT),
    ("BGPPeer", _obj("BGPPeer", connectTime="1500ms"), WHOLE),
    ("BGPPeer", _obj("BGPPeer", routerID="10.0.0.1"), None),
    ("BGPPeer", _obj("BGPPeer", routerID="fd00::1"), "routerID must be written as an IPv4"),
    ("BGPPeer", _obj("BGPPeer", password="s3cret"), None),
    ("BGPPeer", _obj("BGPPeer", passwordSecret={"name": "bgp-auth"}), None),
    (
        "BGPPeer",
        _obj("BGPPeer", password="s3cret", passwordSecret={"name": "bgp-auth"}),
        "at most one of password",
    ),
    ("BGPPeer", _obj("BGPPeer", passwordSecret={"namespace": "lbspeaker-system"}), "passwordSecret.name"),
    ("BGPPeer", _obj("BGPPeer", disableMP=True), None),
    ("BGPPeer", _obj("BGPPeer", dualStackAddressFamily=True), None),
    ("BGPPeer", _obj("BGPPeer", disableMP=True, dualStackAddressFamily=True), "contradicts"),
    ("BGPPeer", _obj("BGPPeer", nodeSelectors=_sel("In", [])), SEL),
    # MetalLB: "invalid ebgp-multihop parameter set for an ibgp peer"
    ("BGPPeer", _obj("BGPPeer", ebgpMultiHop=True), None),
    ("BGPPeer", _obj("BGPPeer", peerASN=64500, ebgpMultiHop=True), "ebgpMultiHop is for eBGP only"),
    ("BGPPeer", _obj("BGPPeer", peerASN=None, dynamicASN="internal", ebgpMultiHop=True),
     "ebgpMultiHop is for eBGP only"),
    ("BGPPeer", _obj("BGPPeer", peerASN=64500), None),
    # localASN: MetalLB's local-as override, eBGP only
    ("BGPPeer", _obj("BGPPeer", localASN=65010), None),
    ("BGPPeer", _obj("BGPPeer", peerASN=None, dynamicASN="external", localASN=65010), None),
    ("BGPPeer", _obj("BGPPeer", peerASN=64500, localASN=65010), "localASN (the AS number presented"),
    ("BGPPeer", _obj("BGPPeer", peerASN=None, dynamicASN="internal", localASN=65010),
     "localASN (the AS number presented"),
    ("BGPPeer", _obj("BGPPeer", localASN=64501), "localASN equals peerASN"),
    # Community
    ("Community", _obj("Community"), None),
    (
        "Community",
        _obj(
            "Community",
            communities=[
                {"name": "a", "value": "65535:65282"},
                {"name": "b", "value": "large:4294967295:0:1"},
                {"name": "c", "value": "0:0"},
            ],
        ),
        None,
    ),
    ("Community", _obj("Community", communities=[{"name": "a", "value": "65536:1"}]), COMM),
    ("Community", _obj("Community", communities=[{"name": "a", "value": "1:65536"}]), COMM),
    ("Community", _obj("Community", communities=[{"name": "a", "value": "1:2:3"}]), COMM),
    ("Community", _obj("Community", communities=[{"name": "a", "value": "large:4294967296:1:1"}]), COMM),
    ("Community", _obj("Community", communities=[{"name": "a", "value": "large:1:2"}]), COMM),
    ("Community", _obj("Community", communities=[{"name": "a", "value": "no-export"}]), COMM),
    ("Community", _obj("Community", communities=[{"name": "a:b", "value": "1:1"}]), "must not contain ':'"),
]


@pytest.mark.parametrize(
    ("kind", "obj", "expected"), CASES, ids=[f"{i}-{k}-{e or 'ok'}" for i, (k, _, e) in enumerate(CASES)]
)
def test_rule(kind: str, obj: dict[str, Any], expected: str | None) -> None:
    errors = _errors(kind, obj)
    if expected is None:
        assert errors == []
    else:
        assert len(errors) == 1, errors
        assert expected in errors[0]


def test_error_names_the_field() -> None:
    errors = _errors("IPAddressPool", _obj("IPAddressPool", addresses=["10.0.0.0/24", "bogus"]))
    assert len(errors) == 1
    assert errors[0].startswith('spec.addresses[1]: Invalid value: "string": ' + ADDR)


@pytest.mark.parametrize(
    ("kind", "section", "old", "new", "expected"),
    [
        (
            "BGPPeer",
            "spec",
            {"enableGracefulRestart": False},
            {"enableGracefulRestart": True},
            "cannot be changed",
        ),
        ("BGPPeer", "spec", {}, {"enableGracefulRestart": True}, "cannot be changed"),  # defaulted false
        ("BGPPeer", "spec", {"enableGracefulRestart": True}, {"enableGracefulRestart": True}, None),
        ("ServiceL2Status", "status", {}, {"node": "kind-worker2"}, "immutable"),
        ("ServiceL2Status", "status", {}, {"interfaces": [{"name": "eth1"}]}, None),
        ("ServiceBGPStatus", "status", {}, {"serviceName": "other"}, "immutable"),
        ("ServiceBGPStatus", "status", {}, {"peers": ["p1"]}, None),
    ],
)
def test_transition_rules(
    kind: str, section: str, old: dict[str, Any], new: dict[str, Any], expected: str | None
) -> None:
    old_obj, new_obj = _obj(kind, section, **old), _obj(kind, section, **new)
    errors = _errors(kind, new_obj, old_obj)
    if expected is None:
        assert errors == []
    else:
        assert len(errors) == 1 and expected in errors[0], errors
    assert _errors(kind, new_obj) == []  # on create, transition rules do not run


def test_import_name_for_lab_apiserver() -> None:
    assert validate_against_rules is validate_rules


def test_apply_defaults_fills_metallb_defaults() -> None:
    pool = apply_defaults(SCHEMAS["IPAddressPool"], _obj("IPAddressPool"))
    assert (pool["spec"]["autoAssign"], pool["spec"]["avoidBuggyIPs"]) == (True, False)
    adv = apply_defaults(SCHEMAS["BGPAdvertisement"], _obj("BGPAdvertisement"))
    assert (adv["spec"]["aggregationLength"], adv["spec"]["aggregationLengthV6"]) == (32, 128)


# --- the Kubernetes CEL library emulation ------------------------------------------------------------------


def _holds(rule: str, value: Any) -> bool:
    schema = {"type": "string", "x-kubernetes-validations": [{"rule": rule, "message": "m"}]}
    return validate_rules(schema, value) == []


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("isIP(self)", "1.2.3.4", True),
        ("isIP(self)", "fd00::1", True),
        ("isIP(self)", "1.2.3.04", False),
        ("isIP(self)", "fe80::1%eth0", False),
        ("isIP(self)", "::ffff:1.2.3.4", False),
        ("isIP(self)", "1.2.3.4/32", False),
        ("isIP(self)", " 1.2.3.4", False),
        ("isCIDR(self)", "10.0.0.1/24", True),
        ("isCIDR(self)", "fd00::/64", True),
        ("isCIDR(self)", "10.0.0.0", False),
        ("isCIDR(self)", "10.0.0.0/255.0.0.0", False),
        ("isCIDR(self)", "10.0.0.0/024", False),
        ("ip(self).family() == 4", "10.0.0.1", True),
        ("ip(self).family() == 6", "fd00::1", True),
        ("ip(self) == ip('fd00:0::1')", "fd00::1", True),
        ("ip(self).isLoopback()", "127.0.0.1", True),
        ("ip(self).isUnspecified()", "::", True),
        ("ip(self).isLinkLocalUnicast()", "fe80::1", True),
        ("ip(self).isLinkLocalMulticast()", "224.0.0.5", True),
        ("ip(self).isGlobalUnicast()", "10.0.0.1", True),
        ("cidr(self).prefixLength() == 24", "10.0.0.0/24", True),
        ("cidr(self).containsIP('10.0.0.5')", "10.0.0.0/24", True),
        ("cidr(self).containsIP(ip('10.0.1.5'))", "10.0.0.0/24", False),
        ("cidr(self).containsIP('fd00::1')", "10.0.0.0/0", False),
        ("cidr(self).containsCIDR('10.0.0.128/25')", "10.0.0.0/24", True),
        ("cidr(self).containsCIDR('10.0.0.0/23')", "10.0.0.0/24", False),
        ("cidr(self).masked() == cidr('10.0.0.0/24')", "10.0.0.7/24", True),
        ("string(cidr(self).ip()) == '10.0.0.7'", "10.0.0.7/24", True),
        ("string(ip(self)) == 'fd00::1'", "fd00:0:0::1", True),
        ("self.split('-') == ['a', 'b', 'c']", "a-b-c", True),
        ("self.split('-', 2) == ['a', 'b-c']", "a-b-c", True),
        ("size(self.split('-')) == 1", "abc", True),
        ("self.trim() == 'x y'", "  x y \t", True),
        ("self.lowerAscii() == 'abc'", "AbC", True),
        ("self.upperAscii() == 'ABC'", "abc", True),
        ("self.replace('-', '.') == 'a.b'", "a-b", True),
        ("self.indexOf('b') == 1 && self.lastIndexOf('b') == 3", "abcb", True),
        ("self.substring(1, 3) == 'bc'", "abcd", True),
        ("self.charAt(0) == 'a'", "abcd", True),
        ("self.split('').join('.') == 'a.b'", "ab", True),
        ("duration(self) == duration('90s')", "1m30s", True),
        ("duration(self) == duration('0s')", "0", True),
        ("duration(self).getMilliseconds() == 1500", "1.5s", True),
        ("duration(self).getSeconds() == 5400", "1.5h", True),
        ("duration(self) < duration('1s')", "999ms", True),
        ("self.matches('^[a-z]+$')", "abc", True),
        ("self.matches('^[a-z]+$')", "abc1", False),
    ],
)
def test_kubernetes_cel_library(rule: str, value: str, expected: bool) -> None:
    assert _holds(rule, value) is expected


@pytest.mark.parametrize("rule", ["frobnicate(self)", "self ==", "self.nosuchmethod()"])
def test_rules_that_cannot_be_evaluated_are_skipped(rule: str) -> None:
    assert _holds(rule, "x")


def test_runtime_error_is_a_violation_with_the_error() -> None:
    schema = {
        "type": "string",
        "x-kubernetes-validations": [{"rule": "ip(self).family() == 4", "message": "m"}],
    }
    errors = validate_rules(schema, "garbage")
    assert len(errors) == 1 and "evaluating rule" in errors[0]


def test_absent_values_are_not_validated() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "x-kubernetes-validations": [{"rule": "false", "message": "never"}]}
        },
    }
    assert validate_rules(schema, {}) == []
    assert validate_rules(schema, {"a": None}) == []
    assert validate_rules(schema, {"a": "x"}) == ['a: Invalid value: "string": never']


def test_field_path_and_map_values() -> None:
    schema = {
        "type": "object",
        "x-kubernetes-validations": [{"rule": "self.a > 1", "message": "too small", "fieldPath": ".a"}],
        "properties": {
            "a": {"type": "integer"},
            "m": {
                "type": "object",
                "additionalProperties": {
                    "type": "string",
                    "x-kubernetes-validations": [{"rule": "self != 'bad'", "message": "bad"}],
                },
            },
        },
    }
    assert validate_rules(schema, {"a": 1, "m": {"k": "bad", "j": "ok"}}) == [
        'a: Invalid value: "object": too small',
        'm[k]: Invalid value: "string": bad',
    ]


# --- properties ------------------------------------------------------------------------------------------

IPV4 = st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))


@settings(max_examples=60, deadline=None)
@given(IPV4, IPV4)
def test_ipv4_range_order_rule_agrees_with_python(start: str, end: str) -> None:
    errors = _errors("IPAddressPool", _obj("IPAddressPool", addresses=[f"{start}-{end}"]))
    ok = ipaddress.IPv4Address(start) <= ipaddress.IPv4Address(end)
    assert (errors == []) == ok
    if not ok:
        assert ORDER in errors[0]


ADDRESSY = st.one_of(
    st.text(alphabet="0123456789abcdef.:/- %", max_size=24),
    st.builds(lambda a, n: f"{a}/{n}", IPV4, st.integers(min_value=0, max_value=40)),
    st.builds(
        lambda a, b: f"{a}-{b}",
        IPV4,
        st.integers(min_value=0, max_value=2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
    ),
)


@settings(max_examples=80, deadline=None)
@given(ADDRESSY)
def test_schema_accepts_only_what_the_controller_parses(entry: str) -> None:
    """Anything the CRD lets through, lbspeaker.api.addresses can parse (the schema may be stricter).
    IPv6 range order is the one thing left to the controller."""
    if _errors("IPAddressPool", _obj("IPAddressPool", addresses=[entry])):
        return
    try:
        parse_address_range(entry)
    except AddressSyntaxError as exc:
        assert "is after its end" in str(exc) and ":" in entry, exc


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
    st.one_of(st.none(), st.lists(st.sampled_from(["a", "b"]), max_size=2)),
)
def test_selector_requirement_rule(operator: str, values: list[str] | None) -> None:
    errors = _errors("L2Advertisement", _obj("L2Advertisement", nodeSelectors=_sel(operator, values)))
    assert (errors == []) == ((operator in ("In", "NotIn")) == bool(values))


def test_prune_unknown_drops_undeclared_fields() -> None:
    schema = SCHEMAS["IPAddressPool"]
    obj = _obj("IPAddressPool", addresses=["10.0.0.0/24"], typo=True)
    obj["metadata"]["labels"] = {"a": "b"}
    obj["status"] = {"assignedIPv4": 1, "bogus": 2, "conditions": [{"type": "Ready", "extra": 1}]}
    obj["junk"] = 1
    pruned = prune_unknown(schema, obj)
    assert "typo" not in pruned["spec"] and "junk" not in pruned
    assert pruned["metadata"]["labels"] == {"a": "b"}
    assert pruned["status"] == {"assignedIPv4": 1, "conditions": [{"type": "Ready"}]}
    assert prune_unknown(SCHEMAS["ServiceL2Status"], {"spec": {"x": 1}})["spec"] == {}


COMMUNITY_TEXT = st.one_of(
    st.text(alphabet="0123456789:largex", max_size=24),
    st.builds(lambda a, b: f"{a}:{b}", st.integers(0, 70000), st.integers(0, 70000)),
    st.builds(lambda a, b, c: f"large:{a}:{b}:{c}", *[st.integers(0, 2**32 + 5)] * 3),
)


@settings(max_examples=80, deadline=None)
@given(COMMUNITY_TEXT)
def test_community_rule_agrees_with_python_parser(value: str) -> None:
    obj = _obj("Community", communities=[{"name": "n", "value": value}])
    cel_ok = _errors("Community", obj) == []
    try:
        parse_community(value)
        py_ok = True
    except ValueError:
        py_ok = False
    assert cel_ok == py_ok


TRANSITION_FRAGMENTS = ["cannot be changed", "immutable"]


def test_every_rule_has_a_rejecting_case() -> None:
    """Each CEL rule in the CRDs is matched by at least one bad case above (add one with a new rule)."""
    fragments = [e for _, _, e in CASES if e] + TRANSITION_FRAGMENTS
    messages: set[str] = set()
    for schema in SCHEMAS.values():
        stack = [schema]
        while stack:
            node = stack.pop()
            messages.update(r["message"] for r in node.get("x-kubernetes-validations", ()))
            stack += list((node.get("properties") or {}).values())
            stack += [node[k] for k in ("items", "additionalProperties") if isinstance(node.get(k), dict)]
    untested = sorted(m for m in messages if not any(f in m for f in fragments))
    assert untested == []

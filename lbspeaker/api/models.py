"""pydantic v2 models of every lbspeaker.io kind: the one source of truth for the API.

Field names are MetalLB's JSON names used verbatim as attribute names (camelCase,
no aliases), so a dict from the API server, a model attribute and the CRD schema all
spell a field the same way and a MetalLB YAML moves over by changing its apiVersion.

Validation rules that one object can check live here too, as CEL
`x-kubernetes-validations` attached to the fields (`crdgen` copies them into the CRD
schema so kube-apiserver enforces them at apply time). Every string and list that a
rule can touch carries `maxLength`/`maxItems`, because kube-apiserver rejects CRDs
whose estimated CEL cost is unbounded. The rules use Kubernetes' IP/CIDR CEL library
(isIP, ip(), isCIDR, cidr()), so the CRDs need Kubernetes >= 1.31. What one object
cannot show, or CEL cannot compute cheaply (overlaps, IPv6 range order, a pool covering
a node IP), the controller reports as conditions.

The Python validators below mirror only the cheap, unambiguous checks (address,
duration and community syntax) so `parse_object` fails loudly on objects that never
went through an API server (lbctl, tests).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lbspeaker.api.addresses import AddressRange, AddressSyntaxError, parse_address_range
from lbspeaker.api.constants import API_VERSION, BGPPEER_VERSION, GROUP

# --- bounds (generous but finite: CEL cost estimation needs them) -------------------------------------
NAME_LEN = 253  # DNS subdomain (object names)
LABEL_VALUE_LEN = 63
LABEL_KEY_LEN = 317  # 253 prefix + "/" + 63 name
IP_LEN = 45  # longest textual IPv6 (with embedded IPv4)
ADDRESS_LEN = 128  # an `addresses` entry: two full IPv6 addresses, a dash and some spaces
IFNAME_LEN = 15  # Linux IFNAMSIZ - 1
DURATION_LEN = 32
COMMUNITY_LEN = 64
MAX_ADDRESSES = 256
MAX_SELECTORS = 32
MAX_NAMES = 256
MAX_SELECTOR_VALUES = 256
MAX_LABELS = 64
MAX_COMMUNITIES = 64
MAX_CONDITIONS = 16
MAX_ORPHANS = 50
MAX_SESSIONS = 1000
MAX_INTERFACES = 64
UINT32_MAX = 4294967295

# --- condition types the controller and speakers write ---------------------------------------------------
CONDITION_READY = "Ready"  # True when the object is valid and in use as written
CONDITION_OVERLAP = "Overlap"  # pool: True when its addresses overlap another pool's
CONDITION_NODE_ADDRESS = "CoversNodeAddress"  # pool: True when it contains a node IP or gateway
CONDITION_ORPHANS = "ServicesOutsidePool"  # pool: True when Services still hold IPs it no longer covers


def cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; `extra` takes fieldPath/reason/messageExpression."""
    return {"rule": rule, "message": message, **extra}


def rules(*entries: dict[str, str], **schema: Any) -> dict[str, Any]:
    """json_schema_extra carrying CEL rules (plus any other raw OpenAPI keywords)."""
    out: dict[str, Any] = dict(schema)
    if entries:
        out["x-kubernetes-validations"] = list(entries)
    return out


# --- CEL building blocks ---------------------------------------------------------------------------------


def _v4_int(expr: str) -> str:
    """CEL for the integer value of a dotted-quad IPv4 string (octet arithmetic: CEL IPs do not order)."""
    parts = [f"int({expr}.split('.')[{i}])" for i in range(4)]
    return f"{parts[0]} * 16777216 + {parts[1]} * 65536 + {parts[2]} * 256 + {parts[3]}"


_START = "self.split('-')[0].trim()"
_END = "self.split('-')[1].trim()"
_IS_RANGE = (
    f"size(self.split('-')) == 2 && isIP({_START}) && isIP({_END}) "
    f"&& ip({_START}).family() == ip({_END}).family()"
)
ADDRESS_SYNTAX_RULE = f"isCIDR(self) || isIP(self) || ({_IS_RANGE})"
ADDRESS_ORDER_RULE = f"!(({_IS_RANGE}) && ip({_START}).family() == 4) || {_v4_int(_START)} <= {_v4_int(_END)}"
# A bare address parses (ADDRESS_SYNTAX_RULE) but is refused by its own rule, so the user reads the fix.
ADDRESS_NOT_BARE_RULE = "!isIP(self)"

STANDARD_COMMUNITY = (
    "(self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && int(self.split(':')[0]) <= 65535 "
    "&& int(self.split(':')[1]) <= 65535)"
)
LARGE_COMMUNITY = (
    "(self.matches('^large:[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') "
    "&& int(self.split(':')[1]) <= 4294967295 && int(self.split(':')[2]) <= 4294967295 "
    "&& int(self.split(':')[3]) <= 4294967295)"
)
COMMUNITY_RULE = f"{STANDARD_COMMUNITY} || {LARGE_COMMUNITY}"
COMMUNITY_MESSAGE = (
    "a community is 'AA:NN' with both parts 0-65535 (e.g. 65535:65282) or "
    "'large:GA:LD1:LD2' with every part 0-4294967295 (e.g. large:64512:1:2)"
)


def parse_community(text: str) -> tuple[int, ...]:
    """Parts of a community value: (AA, NN) for a standard one, (GA, LD1, LD2) for `large:...`.

    Mirrors COMMUNITY_RULE so the BGP renderer and the CRD agree; raises ValueError otherwise.
    """
    large = text.startswith("large:")
    parts = text.removeprefix("large:").split(":")
    limit, count = (UINT32_MAX, 3) if large else (65535, 2)
    if len(parts) != count or not all(p.isascii() and p.isdigit() and len(p) <= 10 for p in parts):
        raise ValueError(f"invalid community {text!r}: {COMMUNITY_MESSAGE}")
    values = tuple(int(p) for p in parts)
    if any(v > limit for v in values) or (not large and any(len(p) > 5 for p in parts)):
        raise ValueError(f"invalid community {text!r}: {COMMUNITY_MESSAGE}")
    return values


# Go/metav1.Duration syntax ("90s", "1m30s", "1.5h", "0"), kept short for the OpenAPI pattern.
DURATION_PATTERN = r"^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|ms|s|m|h))+)$"
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Kubernetes (Go `time.ParseDuration`) duration string such as "1m30s".

    Raises ValueError with the accepted syntax, so a bad timer is reported, not guessed.
    """
    s = text.strip()
    sign = 1.0
    if s and s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 1m30s or 500ms")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 1m30s or 500ms")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


_DURATION_RE = re.compile(DURATION_PATTERN)


def check_duration(value: object) -> float:
    """Seconds of a duration as the CRD accepts it (the pattern), else ValueError with the syntax."""
    if not isinstance(value, str) or len(value) > DURATION_LEN or not _DURATION_RE.match(value):
        raise ValueError(f"invalid duration {value!r}: use e.g. 90s, 1m30s or 500ms")
    return parse_duration(value)


def format_duration(seconds: float) -> str:
    """The shortest Go-style string for a whole number of seconds (e.g. 90 -> "1m30s")."""
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds}s"
    if whole == 0:
        return "0s"
    h, rest = divmod(whole, 3600)
    m, sec = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m or (h and sec) else "") + (f"{sec}s" if sec else "")
    return out


# --- shared types ----------------------------------------------------------------------------------------


class _Model(BaseModel):
    """Base: unknown fields are ignored (the API server prunes them anyway; newer fields stay readable)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, use_attribute_docstrings=True)


ObjectName = Annotated[str, Field(min_length=1, max_length=NAME_LEN)]
LabelValue = Annotated[str, Field(max_length=LABEL_VALUE_LEN)]
Uint32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
ASN = Annotated[int, Field(ge=1, le=UINT32_MAX)]
Duration = Annotated[str, Field(max_length=DURATION_LEN, pattern=DURATION_PATTERN)]
IPString = Annotated[
    str,
    Field(
        max_length=IP_LEN,
        json_schema_extra=rules(
            cel(
                "isIP(self)",
                "must be a single IPv4 or IPv6 address such as 172.18.0.1 or fd00::1 "
                "(no prefix length, no zone, no leading zeros)",
            )
        ),
    ),
]


class LabelSelectorRequirement(_Model):
    """One matchExpressions entry of a metav1.LabelSelector."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "(self.operator == 'In' || self.operator == 'NotIn') "
                "== (has(self.values) && size(self.values) > 0)",
                "values must be non-empty when operator is In or NotIn, and must be empty or omitted "
                "when operator is Exists or DoesNotExist",
            )
        )
    )

    key: str = Field(min_length=1, max_length=LABEL_KEY_LEN)
    """The label key the selector applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to values: In, NotIn, Exists or DoesNotExist."""
    values: list[LabelValue] = Field(default_factory=list, max_length=MAX_SELECTOR_VALUES)
    """Values for In/NotIn; empty for Exists/DoesNotExist."""


class LabelSelector(_Model):
    """metav1.LabelSelector: matchLabels AND every matchExpressions entry (empty selects everything)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-map-type": "atomic"})

    matchLabels: dict[Annotated[str, Field(max_length=LABEL_KEY_LEN)], LabelValue] = Field(
        default_factory=dict, max_length=MAX_LABELS
    )
    matchExpressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=MAX_LABELS)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for `lbspeaker.selectors.label_selector_matches`."""
        return self.model_dump(exclude_defaults=True)


# `x-kubernetes-list-type: set`: kube-apiserver refuses a repeated entry ("Duplicate value"), as
# MetalLB's config.For does (validateDuplicate / validateLabelSelectorDuplicate). A selector is an
# atomic map, which a set may hold. `duplicates()` is the same check for the controller's conditions
# (objects stored before the rule).
_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}
Selectors = Annotated[list[LabelSelector], Field(max_length=MAX_SELECTORS, json_schema_extra=_SET)]
Names = Annotated[list[ObjectName], Field(max_length=MAX_NAMES, json_schema_extra=_SET)]


def duplicates(values: Any) -> list[Any]:
    """Entries that occur more than once in a list (dicts compared by content), first occurrence order."""
    seen: set[str] = set()
    out: list[Any] = []
    shown: set[str] = set()
    for value in values or ():
        key = json.dumps(value, sort_keys=True, default=str)
        if key in seen and key not in shown:
            out.append(value)
            shown.add(key)
        seen.add(key)
    return out


def duplicate_messages(spec: Any, fields: tuple[str, ...]) -> list[str]:
    """One message per field of `spec` (a dict; dotted paths go into sub-objects) listing a repeated entry."""
    out = []
    for path in fields:
        value: Any = spec
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, list):
            for dup in duplicates(value):
                text = dup if isinstance(dup, str) else json.dumps(dup, sort_keys=True)
                out.append(f"spec.{path} lists {text} more than once: list each entry once (MetalLB rejects "
                           "repeated entries too)")
    return out


# metav1.Condition's own validation patterns (CamelCase reason; optional DNS prefix on type).
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


class Condition(_Model):
    """metav1.Condition, as `kubectl wait --for=condition=...` and friends expect it."""

    type: str = Field(min_length=1, max_length=316, pattern=CONDITION_TYPE_PATTERN)
    status: Literal["True", "False", "Unknown"]
    observedGeneration: int | None = Field(default=None, ge=0)
    lastTransitionTime: str = Field(max_length=64, json_schema_extra={"format": "date-time"})
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(max_length=32768)


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class ObjectMeta(_Model):
    """The parts of metav1.ObjectMeta lbspeaker reads; everything else is kept (extra=allow)."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    generateName: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: str | None = None
    deletionTimestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    ownerReferences: list[dict[str, Any]] = Field(default_factory=list)


class CustomResource(_Model):
    """Common shape of a top-level object; subclasses set the CRD naming class variables."""

    PLURAL: ClassVar[str]
    SINGULAR: ClassVar[str]
    VERSION: ClassVar[str] = "v1beta1"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = ()

    apiVersion: str = API_VERSION
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)


def _col(name: str, path: str, type_: str = "string", priority: int = 0, description: str = "") -> dict:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if description:
        col["description"] = description
    return col


_AGE = _col("Age", ".metadata.creationTimestamp", "date")
_READY = _col("Ready", '.status.conditions[?(@.type=="Ready")].status')


# --- IPAddressPool ---------------------------------------------------------------------------------------

AddressEntry = Annotated[
    str,
    Field(
        min_length=1,
        max_length=ADDRESS_LEN,
        json_schema_extra=rules(
            cel(
                ADDRESS_SYNTAX_RULE,
                "each address must be a CIDR (172.18.255.0/24, 172.18.255.7/32, fd00::/120) or an "
                "inclusive range 'start-end' of two IPs of the same family (172.18.255.200-172.18.255.250)",
            ),
            cel(
                ADDRESS_NOT_BARE_RULE,
                "a single address needs a prefix length, as in MetalLB: write 10.1.0.1 as 10.1.0.1/32 "
                "(IPv6: fd00::1/128)",
            ),
            cel(
                ADDRESS_ORDER_RULE,
                "an IPv4 range 'start-end' must not start after it ends: swap the two addresses",
            ),
        ),
    ),
]


class ServiceAllocation(_Model):
    """Pins a pool to some namespaces/Services; lower priority value wins (MetalLB semantics)."""

    priority: int | None = None
    """Pools with a lower value are tried first; pools without one come last."""
    namespaces: Names = Field(default_factory=list)
    """Namespaces whose Services may use this pool."""
    namespaceSelectors: Selectors = Field(default_factory=list)
    """Label selectors of namespaces whose Services may use this pool."""
    serviceSelectors: Selectors = Field(default_factory=list)
    """Label selectors of Services that may use this pool."""

    @model_validator(mode="after")
    def _no_duplicates(self) -> ServiceAllocation:
        problems = duplicate_messages(self.model_dump(exclude_defaults=True),
                                      ("namespaces", "namespaceSelectors", "serviceSelectors"))
        if problems:
            raise ValueError("; ".join(problems).replace("spec.", "spec.serviceAllocation."))
        return self


class IPAddressPoolSpec(_Model):
    """Addresses the controller may hand out, and to whom."""

    addresses: list[AddressEntry] = Field(max_length=MAX_ADDRESSES)
    """Address ranges of the pool: CIDRs (172.18.255.0/24), single IPs or inclusive 'start-end' ranges
    (172.18.255.200-172.18.255.250), IPv4 and/or IPv6."""
    autoAssign: bool = True
    """Hand out addresses from this pool to Services that do not ask for it by name or IP."""
    avoidBuggyIPs: bool = False
    """Skip IPv4 addresses ending in .0 and .255 (some clients mishandle them)."""
    serviceAllocation: ServiceAllocation | None = None
    """Reserve the pool for some namespaces/Services, with a priority."""

    @field_validator("addresses")
    @classmethod
    def _addresses_parse(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                parse_address_range(entry)
            except AddressSyntaxError as exc:
                raise ValueError(str(exc)) from None
        return value

    def ranges(self) -> list[AddressRange]:
        """The parsed address ranges, in spec order."""
        return [parse_address_range(a) for a in self.addresses]


class OrphanedService(_Model):
    """A Service that still holds an IP this pool no longer covers (pool shrunk or deleted)."""

    namespace: ObjectName
    """Namespace of the Service."""
    name: ObjectName
    """Name of the Service."""
    ips: list[Annotated[str, Field(max_length=IP_LEN)]] = Field(default_factory=list, max_length=8)
    """Its IPs that this pool no longer covers (kept until the operator acts)."""


class IPAddressPoolStatus(_Model):
    """Counts (MetalLB's names), conditions, and the Services that block a shrink/delete."""

    assignedIPv4: int = Field(default=0, ge=0)
    """IPv4 addresses of this pool held by Services."""
    assignedIPv6: int = Field(default=0, ge=0)
    """IPv6 addresses of this pool held by Services."""
    availableIPv4: int = Field(default=0, ge=0)
    """IPv4 addresses of this pool still free."""
    availableIPv6: int = Field(default=0, ge=0)
    """IPv6 addresses of this pool still free."""
    conditions: Conditions = Field(default_factory=list)
    """Ready, Overlap, CoversNodeAddress, ServicesOutsidePool."""
    orphanedServices: list[OrphanedService] = Field(
        default_factory=list,
        max_length=MAX_ORPHANS,
        description=f"Services holding IPs outside this pool's current addresses (first {MAX_ORPHANS}).",
    )
    orphanedServiceCount: int = Field(
        default=0, ge=0, description="Total number of such Services (orphanedServices may be truncated)."
    )


class IPAddressPool(CustomResource):
    """A pool of IP addresses that can be allocated to LoadBalancer Services."""

    PLURAL: ClassVar[str] = "ipaddresspools"
    SINGULAR: ClassVar[str] = "ipaddresspool"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ipp", "ippool")
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        _col("Auto Assign", ".spec.autoAssign", "boolean"),
        _col("Avoid Buggy IPs", ".spec.avoidBuggyIPs", "boolean"),
        _col("Addresses", ".spec.addresses"),
        _col("Assigned IPv4", ".status.assignedIPv4", "integer"),
        _col("Available IPv4", ".status.availableIPv4", "integer"),
        _col("Assigned IPv6", ".status.assignedIPv6", "integer", priority=1),
        _col("Available IPv6", ".status.availableIPv6", "integer", priority=1),
        _READY,
        _AGE,
    )

    kind: Literal["IPAddressPool"] = "IPAddressPool"
    spec: IPAddressPoolSpec
    status: IPAddressPoolStatus = Field(default_factory=IPAddressPoolStatus)


# --- advertisements --------------------------------------------------------------------------------------


class NodeProblem(_Model):
    """Something only one node can see about an advertisement (an interface it does not have)."""

    node: ObjectName
    """Node whose speaker reports the problem."""
    reason: str = Field(max_length=64)
    """CamelCase reason, e.g. InterfaceNotFound."""
    message: str = Field(max_length=1024)
    """What is wrong on that node and what to do."""


class AdvertisementStatus(_Model):
    """Conditions the controller sets on an advertisement (e.g. a pool name that does not exist), and
    problems each node's speaker reports for itself."""

    conditions: Conditions = Field(default_factory=list)
    nodeProblems: list[NodeProblem] = Field(
        default_factory=list,
        max_length=MAX_SESSIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["node"]},
    )
    """Per-node problems, one entry per node that has one, written by that node's speaker."""


InterfaceName = Annotated[str, Field(min_length=1, max_length=IFNAME_LEN)]


class PreferredNodeSelector(_Model):
    """A weighted soft preference for the announcing node (Kubernetes' PreferredSchedulingTerm shape)."""

    weight: int = Field(ge=1, le=100)
    """Added to the score of every node the preference selects, 1-100; the highest score announces."""
    preference: LabelSelector
    """Nodes this weight applies to (among the nodes this advertisement's nodeSelectors select)."""


class L2AdvertisementSpec(_Model):
    """Which pools are announced over ARP/NDP, for which Services, from which nodes, on which interfaces."""

    ipAddressPools: Names = Field(default_factory=list)
    """Pools announced by this advertisement (all pools when this and ipAddressPoolSelectors are empty)."""
    ipAddressPoolSelectors: Selectors = Field(default_factory=list)
    """Label selectors of the pools announced."""
    serviceSelectors: Selectors = Field(default_factory=list)
    """Label selectors of the Services announced (all Services of the pools when empty). A Service with
    the allow-shared-ip annotation that one of these selects is not announced in layer 2 (MetalLB's rule:
    Services sharing an IP must have one announcer)."""
    nodeSelectors: Selectors = Field(default_factory=list)
    """Nodes that may announce (all nodes when empty)."""
    preferredNodeSelectors: list[PreferredNodeSelector] = Field(
        default_factory=list, max_length=MAX_SELECTORS)
    """Soft preferences: among the nodes that may announce, the one with the highest summed weight
    announces; ties and nodes without preference fall back to the sha256 order."""
    interfaces: list[InterfaceName] = Field(default_factory=list, max_length=MAX_INTERFACES)
    """Node interfaces to answer ARP/NDP on (default: every suitable interface)."""


class L2Advertisement(CustomResource):
    """Announce the IPs of some pools in layer 2 mode."""

    PLURAL: ClassVar[str] = "l2advertisements"
    SINGULAR: ClassVar[str] = "l2advertisement"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("l2adv",)
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        _col("IPAddressPools", ".spec.ipAddressPools"),
        _col("IPAddressPool Selectors", ".spec.ipAddressPoolSelectors"),
        _col("Interfaces", ".spec.interfaces"),
        _col("Node Selectors", ".spec.nodeSelectors", priority=10),
        _READY,
        _AGE,
    )

    kind: Literal["L2Advertisement"] = "L2Advertisement"
    spec: L2AdvertisementSpec = Field(default_factory=L2AdvertisementSpec)
    status: AdvertisementStatus = Field(default_factory=AdvertisementStatus)


CommunityRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_LEN,
        json_schema_extra=rules(
            cel(
                f"!self.contains(':') || {COMMUNITY_RULE}",
                "a community without ':' names a Community alias; with ':' " + COMMUNITY_MESSAGE,
            )
        ),
    ),
]


SERVICE_SELECTOR_AGGREGATION = cel(
    "!has(self.serviceSelectors) || size(self.serviceSelectors) == 0 "
    "|| ((!has(self.aggregationLength) || self.aggregationLength == 32) "
    "&& (!has(self.aggregationLengthV6) || self.aggregationLengthV6 == 128))",
    "serviceSelectors announce each selected Service's own IPs: leave aggregationLength at 32 and "
    "aggregationLengthV6 at 128 (an aggregated prefix would also attract the IPs of Services it does "
    "not select), or aggregate in a second BGPAdvertisement without serviceSelectors",
)


class BGPAdvertisementSpec(_Model):
    """Which pools are announced over BGP, for which Services, to which peers, with which attributes."""

    model_config = ConfigDict(json_schema_extra=rules(SERVICE_SELECTOR_AGGREGATION))

    aggregationLength: int = Field(default=32, ge=1, le=32)
    """Prefix length IPv4 routes are announced with (32: one route per IP); at least the longest prefix
    of the pool's addresses (0 would be a default route)."""
    aggregationLengthV6: int = Field(default=128, ge=1, le=128)
    """Prefix length IPv6 routes are announced with (128: one route per IP); at least the longest prefix
    of the pool's addresses."""
    localPref: Uint32 | None = None
    """BGP LOCAL_PREF of the routes (iBGP only)."""
    communities: list[CommunityRef] = Field(default_factory=list, max_length=MAX_COMMUNITIES,
                                            json_schema_extra=_SET)
    """BGP communities attached to the routes: values (65535:65282, large:1:2:3) or names of Community
    aliases."""
    ipAddressPools: Names = Field(default_factory=list)
    """Pools announced by this advertisement (all pools when this and ipAddressPoolSelectors are empty)."""
    ipAddressPoolSelectors: Selectors = Field(default_factory=list)
    """Label selectors of the pools announced."""
    nodeSelectors: Selectors = Field(default_factory=list)
    """Nodes that may announce (all nodes when empty)."""
    peers: Names = Field(default_factory=list)
    """Names of the BGPPeers to announce to (all peers when empty)."""
    serviceSelectors: Selectors = Field(default_factory=list)
    """Label selectors of the Services announced (all Services of the pools when empty); only with
    aggregationLength 32 and aggregationLengthV6 128 (an aggregate would cover other Services' IPs)."""

    @model_validator(mode="after")
    def _selectors_need_host_routes(self) -> BGPAdvertisementSpec:
        if self.serviceSelectors and (self.aggregationLength != 32 or self.aggregationLengthV6 != 128):
            raise ValueError(SERVICE_SELECTOR_AGGREGATION["message"])
        return self

    @field_validator("communities")
    @classmethod
    def _communities_parse(cls, value: list[str]) -> list[str]:
        for entry in value:
            if ":" in entry:
                parse_community(entry)
        return value


class BGPAdvertisement(CustomResource):
    """Announce the IPs of some pools to BGP peers."""

    PLURAL: ClassVar[str] = "bgpadvertisements"
    SINGULAR: ClassVar[str] = "bgpadvertisement"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("bgpadv",)
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        _col("IPAddressPools", ".spec.ipAddressPools"),
        _col("IPAddressPool Selectors", ".spec.ipAddressPoolSelectors"),
        _col("Peers", ".spec.peers"),
        _col("Node Selectors", ".spec.nodeSelectors", priority=10),
        _READY,
        _AGE,
    )

    kind: Literal["BGPAdvertisement"] = "BGPAdvertisement"
    spec: BGPAdvertisementSpec = Field(default_factory=BGPAdvertisementSpec)
    status: AdvertisementStatus = Field(default_factory=AdvertisementStatus)


# --- Community -------------------------------------------------------------------------------------------


class CommunityAlias(_Model):
    """A name for a BGP community value, usable in BGPAdvertisement.communities."""

    name: str = Field(
        min_length=1,
        max_length=NAME_LEN,
        json_schema_extra=rules(
            cel(
                "!self.contains(':')",
                "an alias name must not contain ':' (that is how values are told apart)",
            )
        ),
    )
    value: str = Field(
        min_length=1,
        max_length=COMMUNITY_LEN,
        json_schema_extra=rules(cel(COMMUNITY_RULE, COMMUNITY_MESSAGE)),
    )

    @field_validator("value")
    @classmethod
    def _value_parses(cls, value: str) -> str:
        parse_community(value)
        return value


class CommunitySpec(_Model):
    """Community aliases."""

    communities: list[CommunityAlias] = Field(
        default_factory=list,
        max_length=MAX_NAMES,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class ConditionsStatus(_Model):
    """Status that only carries conditions."""

    conditions: Conditions = Field(default_factory=list)


class Community(CustomResource):
    """Named BGP community values."""

    PLURAL: ClassVar[str] = "communities"
    SINGULAR: ClassVar[str] = "community"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("comm",)
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        _col("Aliases", ".spec.communities[*].name"),
        _AGE,
    )

    kind: Literal["Community"] = "Community"
    spec: CommunitySpec = Field(default_factory=CommunitySpec)
    status: ConditionsStatus = Field(default_factory=ConditionsStatus)


# --- BFDProfile ------------------------------------------------------------------------------------------

BFD_DEFAULT_INTERVAL_MS = 300
BFD_DEFAULT_DETECT_MULTIPLIER = 3
BFD_DEFAULT_ECHO_INTERVAL_MS = 50
BFD_DEFAULT_MINIMUM_TTL = 254
BFDInterval = Annotated[int, Field(ge=10, le=60000)]


class BFDProfileSpec(_Model):
    """BFD session settings (MetalLB v1beta1 BFDProfile: same names, ranges and defaults)."""

    # Unset fields stay unset (a migrated object keeps what its author wrote); the methods below
    # give MetalLB's defaults, which are FRR's.

    receiveInterval: BFDInterval | None = None
    """Minimum interval between received control packets this system can handle, in ms (default 300)."""
    transmitInterval: BFDInterval | None = None
    """Minimum interval between transmitted control packets, in ms, before jitter (default 300)."""
    detectMultiplier: Annotated[int, Field(ge=2, le=255)] | None = None
    """Packets the peer may miss before the session is declared down (default 3)."""
    echoInterval: BFDInterval | None = None
    """Echo receive interval in ms (default 50). lbspeaker has no echo function: see echoMode."""
    echoMode: bool | None = None
    """Echo transmission. Not supported by lbspeaker: a profile with echoMode true is used without
    echo and its Ready condition says so (reason EchoModeNotSupported)."""
    passiveMode: bool | None = None
    """Wait for the peer's control packets before sending any."""
    minimumTtl: Annotated[int, Field(ge=1, le=254)] | None = None
    """Multi-hop sessions only: lowest TTL accepted on received packets (default 254). Single-hop
    sessions (RFC 5881) always require TTL 255."""

    def receive_interval_ms(self) -> int:
        return self.receiveInterval if self.receiveInterval is not None else BFD_DEFAULT_INTERVAL_MS

    def transmit_interval_ms(self) -> int:
        return self.transmitInterval if self.transmitInterval is not None else BFD_DEFAULT_INTERVAL_MS

    def detect_multiplier(self) -> int:
        return self.detectMultiplier if self.detectMultiplier is not None else BFD_DEFAULT_DETECT_MULTIPLIER

    def minimum_ttl(self) -> int:
        return self.minimumTtl if self.minimumTtl is not None else BFD_DEFAULT_MINIMUM_TTL


class BFDProfile(CustomResource):
    """Settings of the BFD sessions that BGPPeers referencing this profile run alongside BGP."""

    PLURAL: ClassVar[str] = "bfdprofiles"
    SINGULAR: ClassVar[str] = "bfdprofile"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("bfdp",)
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        _col("Passive Mode", ".spec.passiveMode", "boolean"),
        _col("Transmit Interval", ".spec.transmitInterval", "integer"),
        _col("Receive Interval", ".spec.receiveInterval", "integer"),
        _col("Multiplier", ".spec.detectMultiplier", "integer"),
        _READY,
        _AGE,
    )

    kind: Literal["BFDProfile"] = "BFDProfile"
    spec: BFDProfileSpec = Field(default_factory=BFDProfileSpec)
    status: ConditionsStatus = Field(default_factory=ConditionsStatus)


# --- BGPPeer (v1beta2) -----------------------------------------------------------------------------------


class SecretReference(_Model):
    """core/v1 SecretReference (the Secret holds key `password`)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "has(self.name)",
                "passwordSecret.name must name a kubernetes.io/basic-auth Secret whose key "
                "'password' holds the TCP MD5 password",
            )
        )
    )

    name: ObjectName | None = None
    """Name of the Secret."""
    namespace: ObjectName | None = None
    """Namespace of the Secret (default: lbspeaker's namespace)."""


_HOLD_RULE = cel(
    "duration(self) == duration('0s') || (duration(self) >= duration('3s') "
    "&& duration(self) <= duration('65535s'))",
    "holdTime must be 0s (no keepalives) or between 3s and 65535s (RFC 4271), e.g. 90s",
)
_CONNECT_RULES = (
    cel(
        "duration(self).getSeconds() >= 1 && duration(self).getSeconds() <= 65535",
        "connectTime must be between 1s and 65535s",
    ),
    cel(
        "duration(self).getMilliseconds() % 1000 == 0",
        "connectTime must be a whole number of seconds, e.g. 10s",
    ),
)


# iBGP: the router is in our AS (MetalLB's config.peerFromCR tests peerASN == myASN; dynamicASN
# internal says the same without the number).
_IBGP = (
    "((has(self.peerASN) && self.peerASN == self.myASN) "
    "|| (has(self.dynamicASN) && self.dynamicASN == 'internal'))"
)
EBGP_MULTIHOP_IBGP_MESSAGE = (
    "ebgpMultiHop is for eBGP only and this peer is iBGP (peerASN equals myASN, or dynamicASN internal): "
    "drop ebgpMultiHop (an iBGP session is not limited to one hop), as MetalLB requires"
)
LOCAL_ASN_IBGP_MESSAGE = (
    "localASN (the AS number presented to this peer instead of myASN, FRR's local-as no-prepend "
    "replace-as) is for eBGP only and this peer is iBGP (peerASN equals myASN, or dynamicASN internal): "
    "drop localASN, as MetalLB requires"
)
LOCAL_ASN_SAME_AS_PEER_MESSAGE = (
    "localASN equals peerASN: the router would see its own AS number and treat the eBGP session as iBGP; "
    "pick another localASN or drop it"
)


KEEPALIVE_MESSAGE = ("keepaliveTime must not exceed holdTime; a third of holdTime is usual (without "
                     "holdTime, the hold time is 3 x keepaliveTime)")


class BGPPeerSpec(_Model):
    """A BGP session the speakers on the selected nodes open (MetalLB v1beta2 fields)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "has(self.peerASN) != has(self.dynamicASN)",
                "set exactly one of peerASN (the router's AS number) and dynamicASN (internal or external)",
            ),
            cel(
                "has(self.peerAddress) != has(self.interface)",
                "set exactly one of peerAddress (the router's IP) and interface (unnumbered BGP over a node "
                "interface)",
            ),
            cel(
                "!(has(self.password) && has(self.passwordSecret))",
                "set at most one of password and passwordSecret: prefer passwordSecret",
            ),
            cel(
                "!has(self.keepaliveTime) || !has(self.holdTime) "
                "|| duration(self.keepaliveTime) <= duration(self.holdTime)",
                KEEPALIVE_MESSAGE,
            ),
            cel(
                "!has(self.sourceAddress) || !has(self.peerAddress) || !isIP(self.sourceAddress) "
                "|| !isIP(self.peerAddress) "
                "|| ip(self.sourceAddress).family() == ip(self.peerAddress).family()",
                "sourceAddress and peerAddress must be of the same IP family",
            ),
            cel(
                "!(has(self.disableMP) && self.disableMP "
                "&& has(self.dualStackAddressFamily) && self.dualStackAddressFamily)",
                "disableMP (one session per family) contradicts dualStackAddressFamily (both families "
                "on one session): set at most one of them",
            ),
            cel(f"!(has(self.ebgpMultiHop) && self.ebgpMultiHop && {_IBGP})", EBGP_MULTIHOP_IBGP_MESSAGE),
            cel(f"!(has(self.localASN) && {_IBGP})", LOCAL_ASN_IBGP_MESSAGE),
            cel("!(has(self.localASN) && has(self.peerASN) && self.localASN == self.peerASN)",
                LOCAL_ASN_SAME_AS_PEER_MESSAGE),
        )
    )

    myASN: ASN
    """AS number of the local end of the session."""
    localASN: ASN | None = None
    """AS number presented to this peer instead of myASN (eBGP only; MetalLB's FRR `local-as <ASN>
    no-prepend replace-as`): the OPEN carries it and the announced AS_PATH is just this number."""
    peerASN: ASN | None = None
    """AS number expected from the router (or set dynamicASN)."""
    dynamicASN: Literal["internal", "external"] | None = None
    """internal: the router must be in myASN; external: it must not (instead of peerASN)."""
    peerAddress: IPString | None = None
    """IP address of the router."""
    interface: InterfaceName | None = None
    """Node interface for unnumbered BGP (instead of peerAddress)."""
    sourceAddress: IPString | None = None
    """Local address to open the session from."""
    peerPort: int = Field(default=179, ge=1, le=65535)
    """TCP port of the router."""
    holdTime: Annotated[Duration, Field(json_schema_extra=rules(_HOLD_RULE))] | None = None
    """Requested BGP hold time (RFC 4271), e.g. 90s; 0s disables keepalives."""
    keepaliveTime: Duration | None = None  # bounded by holdTime (spec-level rule)
    """Requested BGP keepalive interval, at most holdTime (usually a third of it)."""
    connectTime: Annotated[Duration, Field(json_schema_extra=rules(*_CONNECT_RULES))] | None = None
    """Wait between connection attempts, whole seconds."""
    routerID: (
        Annotated[
            str,
            Field(
                max_length=IP_LEN,
                json_schema_extra=rules(
                    cel(
                        "isIP(self) && ip(self).family() == 4",
                        "routerID must be written as an IPv4 address, e.g. 10.0.0.1",
                    )
                ),
            ),
        ]
        | None
    ) = None
    """BGP router ID to advertise (default: the node's IPv4 address)."""
    nodeSelectors: Selectors = Field(default_factory=list)
    """Nodes that peer with this router (all nodes when empty)."""
    password: str | None = Field(default=None, max_length=80)
    """TCP MD5 password in clear text (prefer passwordSecret)."""
    passwordSecret: SecretReference | None = None
    """Secret (type kubernetes.io/basic-auth) whose key 'password' is the TCP MD5 password."""
    bfdProfile: ObjectName | None = None
    """Name of the BFDProfile whose settings run a BFD session (RFC 5881 single hop) next to this
    BGP session; when BFD declares the peer down, the BGP session is treated as down."""
    enableGracefulRestart: bool = Field(
        default=False,
        json_schema_extra=rules(
            cel(
                "self == oldSelf",
                "enableGracefulRestart cannot be changed after creation: delete and recreate the BGPPeer",
            )
        ),
    )
    ebgpMultiHop: bool = False
    """The router is more than one hop away."""
    vrf: Annotated[str, Field(max_length=IFNAME_LEN)] | None = None
    """Host VRF to peer from (accepted for MetalLB compatibility)."""
    disableMP: bool = False
    """One session per address family instead of multiprotocol BGP (deprecated)."""
    dualStackAddressFamily: bool = False
    """Carry both address families on this session."""

    @field_validator("holdTime", "keepaliveTime", "connectTime", mode="before")
    @classmethod
    def _duration_parses(cls, value: Any, info: ValidationInfo) -> Any:
        """The CEL rules again, for objects that never met the API server (lbctl, tests, a speaker
        reading an object written before the rule): a friendly message, never the raw pattern."""
        if value is None:
            return value
        seconds = check_duration(value)
        if info.field_name == "holdTime" and seconds != 0 and not 3 <= seconds <= 65535:
            raise ValueError(f"{value!r}: {_HOLD_RULE['message']}")
        if info.field_name == "connectTime":
            if not 1 <= seconds <= 65535:
                raise ValueError(f"{value!r}: {_CONNECT_RULES[0]['message']}")
            if seconds != int(seconds):
                raise ValueError(f"{value!r}: {_CONNECT_RULES[1]['message']}")
        return value

    def is_ibgp(self) -> bool:
        """The router is in our AS (peerASN equals myASN, or dynamicASN internal)."""
        return (self.peerASN is not None and self.peerASN == self.myASN) or self.dynamicASN == "internal"

    @model_validator(mode="after")
    def _ebgp_only_fields(self) -> BGPPeerSpec:
        """The CEL rules on localASN, for objects that never met the API server. (ebgpMultiHop on an
        iBGP peer is refused by CEL only: an object stored before that rule keeps its session, and the
        speaker reports the field as ignored, `bgp.config.validate_peer`.)"""
        if self.localASN is not None and self.is_ibgp():
            raise ValueError(LOCAL_ASN_IBGP_MESSAGE)
        if self.localASN is not None and self.localASN == self.peerASN:
            raise ValueError(LOCAL_ASN_SAME_AS_PEER_MESSAGE)
        return self

    @model_validator(mode="after")
    def _keepalive_within_hold(self) -> BGPPeerSpec:
        if self.keepaliveTime is not None and parse_duration(self.keepaliveTime) > self.hold_time_seconds():
            raise ValueError(KEEPALIVE_MESSAGE)
        return self

    def hold_time_seconds(self) -> float:
        """Hold time in seconds. Unset: 3 x keepaliveTime when that is set, else 90s (MetalLB's
        rule, `internal/config` parseBGPPeer)."""
        if self.holdTime is not None:
            return parse_duration(self.holdTime)
        if self.keepaliveTime is None:
            return 90.0
        return min(3 * parse_duration(self.keepaliveTime), 65535.0)  # BGP's hold time is 16 bits

    def keepalive_time_seconds(self) -> float:
        """Keepalive in seconds (a third of the hold time when unset)."""
        return (
            parse_duration(self.keepaliveTime)
            if self.keepaliveTime is not None
            else self.hold_time_seconds() / 3
        )

    def connect_time_seconds(self) -> float | None:
        """Connect retry time in seconds, None for the BGP daemon's default."""
        return parse_duration(self.connectTime) if self.connectTime is not None else None


class BGPSessionState(_Model):
    """Session state of this peer as seen by one node's speaker."""

    node: ObjectName
    """Node whose speaker reports this session."""
    state: str = Field(
        max_length=32,
        description="BGP FSM state: Idle, Connect, Active, OpenSent, OpenConfirm, Established (or Unknown); "
        "while down, the state when the outage (or its reason) was recorded: connect retries are not written",
    )
    reason: str = Field(default="", max_length=1024)
    """Last error or notification, if any."""
    since: str | None = Field(default=None, max_length=64, json_schema_extra={"format": "date-time"})
    """Established: when the session came up; otherwise when the outage began."""
    bfd: Literal["Up", "Down", "Init", "AdminDown"] | None = None
    """BFD session state (RFC 5880) when the peer names a bfdProfile: while it is not Up after
    having been Up, the BGP session is torn down and `reason` says why."""


class BGPPeerStatus(_Model):
    """Conditions plus per-node session state written by the speakers."""

    conditions: Conditions = Field(default_factory=list)
    sessions: list[BGPSessionState] = Field(
        default_factory=list,
        max_length=MAX_SESSIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["node"]},
    )
    """Session state per node, written by each node's speaker."""


class BGPPeer(CustomResource):
    """A BGP router the speakers peer with."""

    PLURAL: ClassVar[str] = "bgppeers"
    SINGULAR: ClassVar[str] = "bgppeer"
    VERSION: ClassVar[str] = BGPPEER_VERSION
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("bgpp",)
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        _col("Address", ".spec.peerAddress"),
        _col("ASN", ".spec.peerASN"),
        _col("Dynamic ASN", ".spec.dynamicASN", priority=1),
        _col("BFD Profile", ".spec.bfdProfile"),
        _col("Multi Hops", ".spec.ebgpMultiHop"),
        _col("Interface", ".spec.interface", priority=1),
        # Session state is per node (status.sessions, one entry per speaker); no single Ready.
        _col("Sessions", ".status.sessions[*].state"),
        _col("Nodes", ".status.sessions[*].node", priority=1),
        _AGE,
    )

    apiVersion: str = f"{GROUP}/{BGPPEER_VERSION}"
    kind: Literal["BGPPeer"] = "BGPPeer"
    spec: BGPPeerSpec
    status: BGPPeerStatus = Field(default_factory=BGPPeerStatus)


# --- ServiceL2Status / ServiceBGPStatus ------------------------------------------------------------------

_IMMUTABLE = rules(cel("self == oldSelf", "Value is immutable"))


class EmptySpec(_Model):
    """These kinds carry everything in status (MetalLB's shape)."""


class InterfaceInfo(_Model):
    """A node interface an IP is announced on."""

    name: str = Field(default="", max_length=IFNAME_LEN)
    """Interface name."""


class ServiceL2StatusStatus(_Model):
    """Which node announces a Service in layer 2 mode, and on which interfaces."""

    node: str | None = Field(default=None, max_length=NAME_LEN, json_schema_extra=_IMMUTABLE)
    """Node that announces the Service's IPs."""
    serviceName: str | None = Field(default=None, max_length=NAME_LEN, json_schema_extra=_IMMUTABLE)
    """Name of the Service."""
    serviceNamespace: str | None = Field(default=None, max_length=NAME_LEN, json_schema_extra=_IMMUTABLE)
    """Namespace of the Service."""
    interfaces: list[InterfaceInfo] = Field(default_factory=list, max_length=MAX_INTERFACES)
    """Interfaces the IPs are announced on."""


class ServiceL2Status(CustomResource):
    """Layer 2 announcement of one Service by one node (written by that node's speaker)."""

    PLURAL: ClassVar[str] = "servicel2statuses"
    SINGULAR: ClassVar[str] = "servicel2status"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("sl2s",)
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        _col("Allocated Node", ".status.node"),
        _col("Service Name", ".status.serviceName"),
        _col("Service Namespace", ".status.serviceNamespace"),
        _AGE,
    )

    kind: Literal["ServiceL2Status"] = "ServiceL2Status"
    spec: EmptySpec = Field(default_factory=EmptySpec)
    status: ServiceL2StatusStatus = Field(default_factory=ServiceL2StatusStatus)


class ServiceBGPStatusStatus(_Model):
    """Which peers a node is configured to advertise a Service to."""

    node: str | None = Field(default=None, max_length=NAME_LEN, json_schema_extra=_IMMUTABLE)
    """Node that announces the Service's IPs."""
    serviceName: str | None = Field(default=None, max_length=NAME_LEN, json_schema_extra=_IMMUTABLE)
    """Name of the Service."""
    serviceNamespace: str | None = Field(default=None, max_length=NAME_LEN, json_schema_extra=_IMMUTABLE)
    """Namespace of the Service."""
    peers: list[ObjectName] = Field(default_factory=list, max_length=MAX_NAMES)
    """BGPPeers the Service is configured to be announced to (whether a session is up is in BGPPeer
    status)."""


class ServiceBGPStatus(CustomResource):
    """BGP announcement of one Service by one node (written by that node's speaker)."""

    PLURAL: ClassVar[str] = "servicebgpstatuses"
    SINGULAR: ClassVar[str] = "servicebgpstatus"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("sbgps",)
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        _col("Node", ".status.node"),
        _col("Service Name", ".status.serviceName"),
        _col("Service Namespace", ".status.serviceNamespace"),
        _col("Peers", ".status.peers", priority=1),
        _AGE,
    )

    kind: Literal["ServiceBGPStatus"] = "ServiceBGPStatus"
    spec: EmptySpec = Field(default_factory=EmptySpec)
    status: ServiceBGPStatusStatus = Field(default_factory=ServiceBGPStatusStatus)


# --- ConfigurationState -----------------------------------------------------------------------------------

CONFIGURATION_RESULTS = ("Valid", "Invalid", "Unknown")
ERROR_SUMMARY_LEN = 4096


class ConfigurationStateStatus(_Model):
    """Whether the configuration a component runs is valid (MetalLB v0.15.3+ shape)."""

    result: Literal["Valid", "Invalid", "Unknown"] | None = None
    """Valid: every condition is True. Invalid: some condition is False (see errorSummary). Unknown:
    the component has not reported yet."""
    errorSummary: str | None = Field(default=None, max_length=ERROR_SUMMARY_LEN)
    """What is wrong, one line: the messages of the False conditions, joined by '; '. Empty when Valid."""
    conditions: Conditions = Field(default_factory=list)
    """One condition per part of the component that checks configuration (e.g. PoolReconcilerValid)."""


class ConfigurationState(CustomResource):
    """Status only: whether one component (the controller, or the speaker on one node) runs its
    configuration as written. Named `controller` and `speaker-<node>`, labelled
    lbspeaker.io/component-type (controller or speaker) and lbspeaker.io/node-name (speakers)."""

    PLURAL: ClassVar[str] = "configurationstates"
    SINGULAR: ClassVar[str] = "configurationstate"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("cfgstate",)
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        _col("Result", ".status.result"),
        _col("ErrorSummary", ".status.errorSummary"),
        _AGE,
    )

    kind: Literal["ConfigurationState"] = "ConfigurationState"
    status: ConfigurationStateStatus = Field(default_factory=ConfigurationStateStatus)


# --- registry and parsing --------------------------------------------------------------------------------

KINDS: dict[str, type[CustomResource]] = {
    m.__name__: m
    for m in (
        IPAddressPool,
        L2Advertisement,
        BGPAdvertisement,
        BGPPeer,
        BFDProfile,
        Community,
        ServiceL2Status,
        ServiceBGPStatus,
        ConfigurationState,
    )
}

AnyResource = Annotated[
    IPAddressPool
    | L2Advertisement
    | BGPAdvertisement
    | BGPPeer
    | BFDProfile
    | Community
    | ServiceL2Status
    | ServiceBGPStatus
    | ConfigurationState,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[CustomResource] = TypeAdapter(AnyResource)  # type: ignore[arg-type, unused-ignore]


def parse_object(obj: dict[str, Any]) -> CustomResource:
    """Model for an API object (dict as the API server returns it), chosen by `kind`.

    Raises pydantic.ValidationError naming the field at fault, including for an unknown kind.
    """
    return _ADAPTER.validate_python(obj)

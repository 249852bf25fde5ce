"""Pure: the ConfigurationState a component writes, from the problems it already computes.

MetalLB (v0.15.3+) has the controller and every speaker write one ConfigurationState
each, so `kubectl get configurationstates` answers "is my configuration taken?" in one
line. Here each part of a component that checks configuration gives one condition
(`<Part>Valid`: True reason Valid, or False reason ConfigurationError with what is
wrong), and the object's `result` and `errorSummary` follow from the conditions the way
MetalLB derives them: no condition yet is Unknown, any False one is Invalid.

Recomputing an unchanged state gives an equal status (lastTransitionTime moves only when
a condition flips), so a writer compares and writes only on change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lbspeaker.api.constants import COMPONENT_TYPE_LABEL, NODE_NAME_LABEL
from lbspeaker.api.models import ERROR_SUMMARY_LEN, NAME_LEN
from lbspeaker.facts import Problem

CONTROLLER = "controller"
SPEAKER = "speaker"

VALID, INVALID, UNKNOWN = "Valid", "Invalid", "Unknown"
REASON_VALID = "Valid"
REASON_ERROR = "ConfigurationError"  # MetalLB's reason for a user-input error
REASON_PENDING = "NotYetChecked"

# Condition types. PoolReconcilerValid is MetalLB's controller condition; the others name our parts.
POOLS = "PoolReconcilerValid"
ADVERTISEMENTS = "AdvertisementReconcilerValid"
LAYER2 = "Layer2Valid"
BGP = "BGPValid"

MESSAGE_LEN = 32768  # metav1.Condition's bound
MAX_LISTED = 20  # problems spelled out in one condition before "and N more"


def object_name(component: str, node: str | None = None) -> str:
    """`controller`, or `speaker-<node>` (MetalLB's names); a name too long for the API is cut
    and given a hash of the node so it stays unique."""
    if component == CONTROLLER or not node:
        return component
    name = f"{SPEAKER}-{node}"
    if len(name) <= NAME_LEN:
        return name
    digest = hashlib.sha256(node.encode()).hexdigest()[:10]
    return f"{name[:NAME_LEN - 11].rstrip('-.')}-{digest}"


def labels(component: str, node: str | None = None) -> dict[str, str]:
    out = {COMPONENT_TYPE_LABEL: component}
    if node and component == SPEAKER:
        out[NODE_NAME_LABEL] = node[:63]  # a label value is at most 63 characters
    return out


def describe(problems: Iterable[Problem]) -> str:
    """One line naming every problem's object: `IPAddressPool b: overlaps pool a; ...`."""
    ps = sorted(set(problems), key=lambda p: (p.kind, p.name, p.reason, p.message))
    parts = [f"{p.kind} {p.name}: {p.message.rstrip('.')}" for p in ps[:MAX_LISTED]]
    if len(ps) > MAX_LISTED:
        parts.append(f"and {len(ps) - MAX_LISTED} more")
    return _cut("; ".join(parts), MESSAGE_LEN)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())  # one line: messages never carry newlines into a table
    return text if len(text) <= limit else text[: limit - 1] + "…"


def condition(ctype: str, problems: Iterable[Problem], previous: Mapping[str, Mapping[str, Any]],
              now: str) -> dict[str, Any]:
    """`ctype` True (reason Valid) without problems, else False (ConfigurationError) naming them."""
    ps = list(problems)
    status = "False" if ps else "True"
    old = previous.get(ctype)
    ltt = old.get("lastTransitionTime") if old and old.get("status") == status else None
    return {"type": ctype, "status": status, "reason": REASON_ERROR if ps else REASON_VALID,
            "message": describe(ps) if ps else "", "lastTransitionTime": ltt or now}


def pending(ctype: str, previous: Mapping[str, Mapping[str, Any]], now: str) -> dict[str, Any]:
    """`ctype` Unknown: that part has not checked the configuration yet (just started)."""
    old = previous.get(ctype)
    ltt = old.get("lastTransitionTime") if old and old.get("status") == "Unknown" else None
    return {"type": ctype, "status": "Unknown", "reason": REASON_PENDING,
            "message": "not checked yet", "lastTransitionTime": ltt or now}


def summarize(conditions: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(result, errorSummary) from the conditions, MetalLB's rule: none is Unknown, a False one
    with reason ConfigurationError makes it Invalid and its message part of the summary. Beyond
    MetalLB, a part that has not reported yet (status Unknown) keeps an otherwise clean result Unknown."""
    if not conditions:
        return UNKNOWN, ""
    errors = [str(c.get("message") or c.get("type")) for c in conditions
              if c.get("status") == "False" and c.get("reason") == REASON_ERROR]
    if errors:
        return INVALID, _cut("; ".join(errors), ERROR_SUMMARY_LEN)
    if any(c.get("status") == "Unknown" for c in conditions):
        return UNKNOWN, ""
    return VALID, ""


def desired_status(problems_by_type: Mapping[str, Iterable[Problem]],
                   previous: Mapping[str, Any] | None, now: str,
                   expected: Iterable[str] = ()) -> dict[str, Any]:
    """The whole status: one condition per part that has reported, and an Unknown one per `expected`
    part that has not (sorted by type); result; summary."""
    prev = {str(c.get("type")): c for c in (previous or {}).get("conditions") or [] if isinstance(c, Mapping)}
    types = sorted(set(problems_by_type) | set(expected))
    conditions = [condition(t, problems_by_type[t], prev, now) if t in problems_by_type
                  else pending(t, prev, now) for t in types]
    result, summary = summarize(conditions)
    status: dict[str, Any] = {"result": result, "conditions": conditions}
    if summary:
        status["errorSummary"] = summary
    return status


def new_object(component: str, namespace: str, node: str | None = None) -> dict[str, Any]:
    """The object to create (status goes through /status afterwards, as the API server requires)."""
    return {"metadata": {"name": object_name(component, node), "namespace": namespace,
                         "labels": labels(component, node)}}


def stale_speaker_states(objects: Iterable[Mapping[str, Any]], nodes: Iterable[str]) -> list[str]:
    """Names of speaker ConfigurationStates whose node no longer exists (the controller deletes them)."""
    live = {object_name(SPEAKER, n) for n in nodes}
    out = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        if (meta.get("labels") or {}).get(COMPONENT_TYPE_LABEL) != SPEAKER:
            continue
        name = str(meta.get("name") or "")
        if name and name not in live:
            out.append(name)
    return sorted(out)


__all__ = ["ADVERTISEMENTS", "BGP", "CONTROLLER", "INVALID", "LAYER2", "POOLS", "SPEAKER", "UNKNOWN", "VALID",
           "condition", "describe", "desired_status", "labels", "new_object", "object_name",
           "stale_speaker_states", "summarize"]

"""Kubernetes label-selector matching over plain dicts (pure).

Used by the controller (IPAddressPool serviceAllocation namespace/service selectors)
and the speaker (L2/BGP advertisement nodeSelectors, ipAddressPoolSelectors), so both
read selectors exactly as kube-apiserver and MetalLB do:

* a selector is ``{"matchLabels": {...}, "matchExpressions": [{key, operator, values}]}``;
  every requirement must hold (AND);
* operators ``In``, ``NotIn``, ``Exists``, ``DoesNotExist``; ``NotIn`` and
  ``DoesNotExist`` match an object that lacks the key, as in Kubernetes;
* an empty selector ``{}`` matches everything;
* ``None`` (a nil *LabelSelector) matches nothing, like ``metav1.LabelSelectorAsSelector``.
  Callers for which an absent selector means "no restriction" (MetalLB's list fields)
  use :func:`any_selector_matches`, where an *empty list* matches everything.

A malformed selector (unknown operator, ``In`` without values, ``Exists`` with values)
raises :class:`SelectorError`: the CRD schema should have rejected it, and silently
matching or not matching would pick addresses or nodes the operator did not intend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "SelectorError",
    "any_selector_matches",
    "label_selector_matches",
    "validate_selector",
]

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    """A label selector that Kubernetes would refuse to parse."""


def validate_selector(selector: Mapping[str, Any] | None) -> list[str]:
    """Return human-readable problems with `selector` (empty list when it is valid)."""
    if selector is None:
        return []
    problems: list[str] = []
    if not isinstance(selector, Mapping):
        return [f"a label selector must be an object, not {type(selector).__name__}"]
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        problems.append("matchLabels must be a map of label key to value")
    else:
        for key, value in match_labels.items():
            if not isinstance(key, str) or not key:
                problems.append(f"matchLabels key {key!r} must be a non-empty string")
            if not isinstance(value, str):
                problems.append(f"matchLabels[{key!r}] must be a string, not {value!r}")
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, Sequence) or isinstance(expressions, str):
        problems.append("matchExpressions must be a list")
        return problems
    for i, expr in enumerate(expressions):
        where = f"matchExpressions[{i}]"
        if not isinstance(expr, Mapping):
            problems.append(f"{where} must be an object with key, operator and values")
            continue
        key = expr.get("key")
        op = expr.get("operator")
        values = expr.get("values") or []
        if not isinstance(key, str) or not key:
            problems.append(f"{where}.key must be a non-empty string")
        if op not in _OPERATORS:
            problems.append(f"{where}.operator {op!r} is not one of {', '.join(_OPERATORS)}")
            continue
        if not isinstance(values, Sequence) or isinstance(values, str):
            problems.append(f"{where}.values must be a list of strings")
            continue
        if op in ("In", "NotIn") and not values:
            problems.append(f"{where}: operator {op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and values:
            problems.append(f"{where}: operator {op} takes no values")
    return problems


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Kubernetes semantics: all matchLabels and all matchExpressions hold; `{}` matches all, None none."""
    if selector is None:
        return False
    problems = validate_selector(selector)
    if problems:
        raise SelectorError("; ".join(problems))
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key = expr["key"]
        op = expr["operator"]
        present = key in labels
        if op == "In":
            if not present or labels[key] not in expr["values"]:
                return False
        elif op == "NotIn":
            if present and labels[key] in expr["values"]:
                return False
        elif op == "Exists":
            if not present:
                return False
        elif present:  # DoesNotExist
            return False
    return True


def any_selector_matches(selectors: Sequence[Mapping[str, Any]] | None,
                         labels: Mapping[str, str] | None) -> bool:
    """MetalLB's list semantics (nodeSelectors, serviceSelectors, ...): empty/None list matches all,
    otherwise at least one selector must match (OR)."""
    if not selectors:
        return True
    return any(label_selector_matches(sel, labels) for sel in selectors)

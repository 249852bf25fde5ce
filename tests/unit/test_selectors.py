"""Label selectors read exactly as Kubernetes reads them (tables)."""

from __future__ import annotations

from typing import Any

import pytest

from lbspeaker.selectors import SelectorError, any_selector_matches, label_selector_matches, validate_selector

LABELS = {"app": "web", "tier": "front", "env": "prod"}


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    e: dict[str, Any] = {"key": key, "operator": op}
    if values:
        e["values"] = list(values)
    return e


@pytest.mark.parametrize(
    ("selector", "labels", "want"),
    [
        ({}, LABELS, True),
        ({}, {}, True),
        (None, LABELS, False),
        ({"matchLabels": {}}, {}, True),
        ({"matchLabels": {"app": "web"}}, LABELS, True),
        ({"matchLabels": {"app": "db"}}, LABELS, False),
        ({"matchLabels": {"app": "web", "env": "prod"}}, LABELS, True),
        ({"matchLabels": {"app": "web", "env": "dev"}}, LABELS, False),
        ({"matchLabels": {"missing": ""}}, LABELS, False),
        ({"matchExpressions": [expr("app", "In", "web", "api")]}, LABELS, True),
        ({"matchExpressions": [expr("app", "In", "db")]}, LABELS, False),
        ({"matchExpressions": [expr("missing", "In", "x")]}, LABELS, False),
        ({"matchExpressions": [expr("app", "NotIn", "db")]}, LABELS, True),
        ({"matchExpressions": [expr("app", "NotIn", "web")]}, LABELS, False),
        # NotIn matches objects without the key, as in Kubernetes
        ({"matchExpressions": [expr("missing", "NotIn", "x")]}, LABELS, True),
        ({"matchExpressions": [expr("app", "Exists")]}, LABELS, True),
        ({"matchExpressions": [expr("missing", "Exists")]}, LABELS, False),
        ({"matchExpressions": [expr("missing", "DoesNotExist")]}, LABELS, True),
        ({"matchExpressions": [expr("app", "DoesNotExist")]}, LABELS, False),
        # AND of labels and expressions
        ({"matchLabels": {"app": "web"}, "matchExpressions": [expr("env", "In", "prod")]}, LABELS, True),
        ({"matchLabels": {"app": "web"}, "matchExpressions": [expr("env", "In", "dev")]}, LABELS, False),
        ({"matchExpressions": [expr("app", "Exists"), expr("tier", "NotIn", "front")]}, LABELS, False),
        ({"matchLabels": {"app": "web"}}, None, False),
        ({"matchExpressions": [expr("app", "DoesNotExist")]}, None, True),
    ],
)
def test_label_selector_matches(selector: dict[str, Any] | None, labels: dict[str, str] | None,
                                want: bool) -> None:
    assert label_selector_matches(selector, labels) is want


@pytest.mark.parametrize(
    ("selectors", "labels", "want"),
    [
        ([], LABELS, True),           # MetalLB: no selectors = no restriction
        (None, LABELS, True),
        ([{}], {}, True),
        ([{"matchLabels": {"app": "db"}}], LABELS, False),
        ([{"matchLabels": {"app": "db"}}, {"matchLabels": {"app": "web"}}], LABELS, True),  # OR
        ([{"matchLabels": {"app": "db"}}, {"matchExpressions": [expr("x", "Exists")]}], LABELS, False),
    ],
)
def test_any_selector_matches(selectors: list[dict[str, Any]] | None, labels: dict[str, str],
                              want: bool) -> None:
    assert any_selector_matches(selectors, labels) is want


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [
        ({"matchExpressions": [expr("a", "Gt", "1")]}, "operator 'Gt'"),
        ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "needs at least one value"),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]}, "needs at least one value"),
        ({"matchExpressions": [expr("a", "Exists", "x")]}, "takes no values"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "key must be a non-empty string"),
        ({"matchLabels": {"a": 1}}, "must be a string"),
        ({"matchLabels": ["a"]}, "matchLabels must be a map"),
        ({"matchExpressions": "a"}, "must be a list"),
    ],
)
def test_invalid_selectors_raise(selector: dict[str, Any], fragment: str) -> None:
    assert any(fragment in p for p in validate_selector(selector))
    with pytest.raises(SelectorError, match=fragment.split("'")[0]):
        label_selector_matches(selector, LABELS)


def test_valid_selector_has_no_problems() -> None:
    assert validate_selector(None) == []
    assert validate_selector({"matchLabels": {"a": "b"}, "matchExpressions": [expr("c", "In", "d")]}) == []

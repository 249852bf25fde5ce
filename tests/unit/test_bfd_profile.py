"""BFDProfile fields -> session settings, MetalLB's defaults, and the echo-mode condition."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lbspeaker.api.models import BFDProfile, BFDProfileSpec, parse_object
from lbspeaker.bfd.profile import minimum_ttl, readiness, session_config
from lbspeaker.bfd.session import SessionConfig


@pytest.mark.parametrize(
    ("spec", "config"),
    [
        ({}, SessionConfig(300_000, 300_000, 3, False)),
        ({"transmitInterval": 100, "receiveInterval": 50, "detectMultiplier": 5, "passiveMode": True},
         SessionConfig(100_000, 50_000, 5, True)),
    ],
)
def test_session_config(spec: dict, config: SessionConfig) -> None:
    assert session_config(BFDProfileSpec.model_validate(spec)) == config


@pytest.mark.parametrize(
    "spec",
    [{"receiveInterval": 9}, {"transmitInterval": 60001}, {"detectMultiplier": 1}, {"detectMultiplier": 256},
     {"echoInterval": 5}, {"minimumTtl": 0}, {"minimumTtl": 255}],
)
def test_metallb_ranges(spec: dict) -> None:
    with pytest.raises(ValidationError):
        BFDProfileSpec.model_validate(spec)


def test_ttl_single_hop_is_always_255() -> None:
    spec = BFDProfileSpec(minimumTtl=10)
    assert (minimum_ttl(spec, multihop=False), minimum_ttl(spec, multihop=True)) == (255, 10)
    assert minimum_ttl(BFDProfileSpec(), multihop=True) == 254


def test_echo_mode_is_reported_not_silently_ignored() -> None:
    assert readiness(BFDProfileSpec(echoMode=True))[:2] == (True, "EchoModeNotSupported")
    assert readiness(BFDProfileSpec(echoMode=False))[:2] == (True, "Accepted")


def test_parses_as_a_kind() -> None:
    obj = parse_object({"apiVersion": "lbspeaker.io/v1beta1", "kind": "BFDProfile",
                        "metadata": {"name": "fast", "namespace": "lbspeaker-system"},
                        "spec": {"transmitInterval": 100}})
    assert isinstance(obj, BFDProfile) and obj.spec.transmit_interval_ms() == 100

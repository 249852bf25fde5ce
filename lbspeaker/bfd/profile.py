"""BFDProfile -> session settings, and what the profile's Ready condition says (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from lbspeaker.api.models import BFDProfileSpec
from lbspeaker.bfd.session import SessionConfig

SINGLE_HOP_TTL = 255  # RFC 5881 section 5: single-hop packets are sent and accepted with TTL 255


def session_config(spec: BFDProfileSpec) -> SessionConfig:
    """The state machine's settings for a profile (milliseconds -> wire microseconds)."""
    return SessionConfig(
        desired_min_tx_us=spec.transmit_interval_ms() * 1000,
        required_min_rx_us=spec.receive_interval_ms() * 1000,
        detect_mult=spec.detect_multiplier(),
        passive=bool(spec.passiveMode),
    )


def minimum_ttl(spec: BFDProfileSpec, multihop: bool) -> int:
    """Lowest TTL a received packet may carry: 255 for single hop, the profile's for multi-hop."""
    return spec.minimum_ttl() if multihop else SINGLE_HOP_TTL


def readiness(spec: BFDProfileSpec) -> tuple[bool, str, str]:
    """(Ready status, reason, message) for the profile's Ready condition.

    echoMode asks for something lbspeaker does not have; the profile still works (asynchronous
    mode alone detects failures), so it stays Ready but says, in the reason, what it ignores.
    """
    if spec.echoMode:
        return (
            True,
            "EchoModeNotSupported",
            "echoMode is not supported by lbspeaker: sessions using this profile run in asynchronous "
            "mode only (echoMode and echoInterval are ignored); set echoMode to false to silence this",
        )
    return True, "Accepted", "sessions using this profile run with these settings"


@dataclass(frozen=True)
class ProfileFacts:
    """One BFDProfile as the speaker reads it; `spec` None when it does not parse (`error` says why)."""

    name: str
    spec: BFDProfileSpec | None
    error: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ProfileFacts:
        name = str((obj.get("metadata") or {}).get("name") or "")
        try:
            return cls(name, BFDProfileSpec.model_validate(obj.get("spec") or {}))
        except ValidationError as exc:
            errors = exc.errors()
            if not errors:
                return cls(name, None, str(exc))
            where = ".".join(str(x) for x in errors[0]["loc"])
            return cls(name, None, f"spec.{where}: {errors[0]['msg']}" if where else errors[0]["msg"])


def profiles_by_name(facts: Iterable[ProfileFacts]) -> tuple[dict[str, BFDProfileSpec], dict[str, str]]:
    """({name: spec} of the profiles that parse, {name: error} of those that do not)."""
    specs: dict[str, BFDProfileSpec] = {}
    errors: dict[str, str] = {}
    for f in facts:
        if f.spec is not None:
            specs[f.name] = f.spec
        else:
            errors[f.name] = f.error
    return specs, errors

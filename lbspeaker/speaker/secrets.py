"""BGP session passwords from the Secrets BGPPeers name in `passwordSecret`.

Read by name with GET (the speaker's role allows no list/watch of Secrets: it must not see
the others), cached and re-read every `refresh` seconds, so an edited Secret is picked up
without a watch. An API error keeps the last value read (fail-static); a Secret that is
gone is None (the peer is left out, with the reason in its session status).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lbspeaker.facts import PeerFacts
from lbspeaker.kube.resources import SECRETS
from lbspeaker.kube.rest import ApiError, Rest

log = logging.getLogger("lbspeaker.speaker.bgp")


def secret_password(secret: Mapping[str, Any] | None) -> str | None:
    """The `password` key of a Secret (data base64, or stringData as some fakes keep it)."""
    if not secret:
        return None
    data = secret.get("data") or {}
    if "password" in data:
        try:
            return base64.b64decode(str(data["password"]), validate=True).decode() or None
        except (ValueError, UnicodeDecodeError):
            return None
    string_data = secret.get("stringData") or {}
    value = string_data.get("password")
    return str(value) if value is not None else None


class PeerPasswords:
    """passwordSecret values by BGPPeer name (see the module docstring)."""

    def __init__(self, rest: Rest, namespace: str, refresh: float = 30.0) -> None:
        self.rest = rest
        self.namespace = namespace
        self.refresh = refresh
        self._secrets: dict[str, tuple[str | None, float]] = {}  # Secret name -> (password, read at)

    def forget(self) -> None:
        """Re-read every Secret on the next `resolve` (tests; a refresh period that has passed)."""
        self._secrets.clear()

    def due(self) -> bool:
        """Has any cached Secret reached its refresh time?"""
        now = time.monotonic()
        return any(now - at > self.refresh for _, at in self._secrets.values())

    def resolve(self, peers: Sequence[PeerFacts]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        now = time.monotonic()
        for pf in peers:
            ref = pf.secret_ref
            if ref is None:
                continue
            if ref[0] not in (None, self.namespace):
                # MetalLB's rule, and it keeps the speaker's Secret access to its own namespace
                log.warning("BGP: BGPPeer %s: passwordSecret must be in namespace %s, not %s",
                            pf.name, self.namespace, ref[0])
                out[pf.name] = None
                continue
            key = ref[1]
            cached = self._secrets.get(key)
            if cached is None or now - cached[1] > self.refresh:
                cached = (self._read(key, cached[0] if cached else None), now)
                self._secrets[key] = cached
            out[pf.name] = cached[0]
        return out

    def _read(self, name: str, last: str | None) -> str | None:
        try:
            value = secret_password(self.rest.get(SECRETS, name, self.namespace))
            if value is None:
                log.warning("BGP: Secret %s/%s has no key 'password'", self.namespace, name)
            return value
        except ApiError as exc:
            log.warning("BGP: cannot read Secret %s/%s: %s", self.namespace, name, exc)
            return None if exc.not_found else last
        except OSError as exc:  # API unreachable: keep what we had (fail-static)
            log.warning("BGP: cannot read Secret %s/%s: %s", self.namespace, name, exc)
            return last

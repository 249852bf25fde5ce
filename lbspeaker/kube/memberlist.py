"""The Secret holding the speakers' heartbeat keys: its format, its creation, its reading.

Why a Secret the controller creates: heartbeats must be authenticated (a UDP source address
proves nothing), the key must not be in git, and the install must work with a plain
`kubectl apply -k` (no webhook, no Job). So the controller creates
`lbspeaker-system/lbspeaker-memberlist` with one random 32-byte key when it is missing (at start
and then every `recheck_s`), as MetalLB's controller does for its memberlist secret. It never
changes an existing one: rotation is the operator's, see README "Security".

Format: every `data` entry whose name is a key id (1-64 of `A-Za-z0-9._-`) and whose value is at
least `MIN_KEY_BYTES` long is a key. Speakers accept all of them and sign with the newest (the
last name in sort order) once they have known it for a while (`speaker.heartbeat.signing_key`):
name new keys so they sort last (the controller uses `key-<UTC timestamp>`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from lbspeaker.kube.backoff import Backoff
from lbspeaker.kube.resources import SECRETS
from lbspeaker.kube.rest import ApiError, Rest

log = logging.getLogger(__name__)

SECRET_NAME: Final = "lbspeaker-memberlist"
MIN_KEY_BYTES: Final = 16
KEY_BYTES: Final = 32
KEY_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


def keys_of(secret: Mapping[str, Any] | None) -> dict[str, bytes]:
    """Key id -> key bytes from a Secret object (pure). Entries that are not keys are skipped."""
    out: dict[str, bytes] = {}
    for name, value in ((secret or {}).get("data") or {}).items():
        if not isinstance(name, str) or not KEY_ID.fullmatch(name) or not isinstance(value, str):
            continue
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) >= MIN_KEY_BYTES:
            out[name] = raw
    return out


def new_key_id(now: datetime | None = None) -> str:
    """A key id that sorts after every earlier one made this way."""
    return "key-" + (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")


def new_secret(namespace: str, now: datetime | None = None) -> dict[str, Any]:
    """The Secret the controller creates: one fresh random key (pure but for the randomness)."""
    key = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()
    return {
        "metadata": {
            "name": SECRET_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "lbspeaker", "app.kubernetes.io/component": "speaker"},
            "annotations": {"lbspeaker.io/purpose": "heartbeat HMAC keys; rotate as README 'Security' says"},
        },
        "type": "Opaque",
        "data": {new_key_id(now): key},
    }


class SecretKeeper:
    """A thread that makes sure the Secret exists: at once, then every `recheck_s` (it may be deleted)."""

    def __init__(self, rest: Rest, namespace: str, recheck_s: float = 60.0) -> None:
        self.rest = rest
        self.namespace = namespace
        self.recheck_s = recheck_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ensure(self) -> bool:
        """Create the Secret if it is missing; True if it exists now. Never touches an existing one."""
        try:
            self.rest.get(SECRETS, SECRET_NAME, self.namespace)
            return True
        except ApiError as exc:
            if not exc.not_found:
                raise
        try:
            self.rest.create(SECRETS, new_secret(self.namespace), self.namespace)
            log.info("created Secret %s/%s with a new heartbeat key", self.namespace, SECRET_NAME)
        except ApiError as exc:
            if not exc.already_exists:
                raise
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="memberlist-secret", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = Backoff(initial=1.0, cap=30.0)
        while not self._stop.is_set():
            try:
                self.ensure()
                backoff.reset()
                delay = self.recheck_s
            except Exception as exc:
                delay = backoff.next()
                log.warning("cannot ensure Secret %s/%s (%s): speakers without a heartbeat key run on "
                            "Leases alone; retrying in %.0fs", self.namespace, SECRET_NAME, exc, delay)
            self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

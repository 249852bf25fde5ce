"""Exponential backoff with jitter, shared by the watch caches, status writers and the elector.

Jitter keeps a fleet of speakers from reconnecting to a restarted API server in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays initial, 2*initial, ... capped at `cap`, each scaled by a random factor in [1-jitter, 1]."""

    initial: float = 0.2
    cap: float = 8.0
    factor: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next(self) -> float:
        """The delay before the next attempt; grows until `reset()`."""
        base = min(self.cap, self.initial * (self.factor ** min(self.attempt, 64)))
        self.attempt += 1
        return base * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        """Call after a success so the next failure starts from `initial` again."""
        self.attempt = 0

"""Capped exponential backoff with jitter, for reconnecting watches and retrying applies.

Delays double from `initial` up to `cap`; each is drawn from [d/2, d] ("equal jitter"), so
agents restarted together do not hammer the API server in lockstep, yet never retry at once.
`reset()` after a success starts over."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.2
    cap: float = 30.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (and count this failure)."""
        ceiling = min(self.cap, self.initial * self.factor ** self.attempts)
        self.attempts += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempts = 0

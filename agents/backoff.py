"""gRPC's connection backoff, as a pure object.

The delays follow gRPC's connection backoff specification
(``doc/connection-backoff.md`` in grpc/grpc): the first retry waits
``initial`` seconds, each further one ``multiplier`` times longer, never more
than ``maximum``, and every delay is spread by ``jitter`` (a random factor
in ``[1 - jitter, 1 + jitter]``) so that proxies cut off together do not
come back together. A response from the server resets the sequence.

Randomness and time are injected, so the sequence can be tested exactly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    initial: float = 1.0
    multiplier: float = 1.6
    maximum: float = 120.0
    jitter: float = 0.2
    random: Callable[[], float] = field(default=random.random, repr=False)
    """Uniform in [0, 1)."""
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _current: float = field(default=-1.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.multiplier < 1 or self.maximum < self.initial:
            raise ValueError("backoff needs 0 < initial <= maximum and multiplier >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter must be in [0, 1)")
        self._current = self.initial

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; advances the sequence."""
        base = self._current
        self._current = min(self._current * self.multiplier, self.maximum)
        return base * (1 + self.jitter * (2 * self.random() - 1))

    def next_attempt_at(self) -> float:
        """The clock reading at which the next attempt is due; advances the sequence."""
        return self.clock() + self.next_delay()

    def reset(self) -> None:
        """The server answered: the next failure waits ``initial`` again."""
        self._current = self.initial

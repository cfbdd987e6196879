"""Jittered exponential backoff bounded by a deadline, for the core's optimistic retry loops."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from modelrepo.errors import Busy


@dataclass(frozen=True)
class RetryPolicy:
    """Full-jitter backoff: sleep uniform(0, min(cap, base * 2**attempt)) until `deadline` seconds.

    Full jitter spreads contending writers apart so one of them wins each round instead of all of
    them colliding again in lockstep.
    """

    base_seconds: float = 0.001
    cap_seconds: float = 0.1
    deadline_seconds: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def attempts(self, doing: str) -> Iterator[int]:
        """Yield attempt numbers, sleeping between them; raise Busy once the deadline would pass."""
        deadline = self.clock() + self.deadline_seconds
        attempt = 0
        while True:
            yield attempt
            attempt += 1
            delay = random.uniform(0, min(self.cap_seconds, self.base_seconds * 2**attempt))
            if self.clock() + delay > deadline:
                raise Busy(
                    f"{doing} is still contended after {attempt} attempts in "
                    f"{self.deadline_seconds:g} s; retry shortly",
                    retry_after=1.0,
                )
            self.sleep(delay)

"""Backoff for the core's optimistic retry loops, sized from the contention each lost attempt saw.

Writers of one partition race for its counter row: every change reads it and writes it back under
its ETag, and of the writers that read the same value one commits and the others lose. The loop
(`unit_of_work.execute`) reports what each attempt saw; this policy decides how long to wait
before the next one. Each wait is a random slot in [0, spread x contenders x round trip], because
the counter admits one commit per round trip (read + conditional write): spreading the next
attempts of `contenders` writers over that many round trips gives each a slot of its own, where a
fixed backoff either leaves the counter idle (few writers) or piles them up again (many).

- **The round trip** is this process's own estimate, learned from the attempts that committed (fast
  to fall, slow to rise, so that queueing under load does not inflate it); before it has one, the
  attempt that just lost is the sample.
- **Contenders** are estimated from what the lost attempt saw. The attempt waited at the store
  longer than a round trip: writers were queued ahead of it, about `queue_weight` per extra round
  trip; a first loss takes that queue as the estimate (at least 1: the writer that won). Others
  committed between this call's last two reads of the counter (its sequence counts every change):
  those are done, and the estimate falls by as many, but not below the queue the attempt met. A
  loss that saw no commit (throttled, or a row without a counter) means more writers than
  thought: the estimate grows by `growth`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from modelrepo.errors import Busy


class Outcome(Enum):
    LOST = "lost"  # a guarded row had changed: another writer committed first
    THROTTLED = "throttled"  # the store refused the request for now
    UNKNOWN = "unknown"  # the answer was lost: the write may have committed


class RoundTrip:
    """This process's estimate of one uncontended attempt (read + conditional write), in seconds.

    Shared by every call of the policy and their threads. It follows the faster attempts: it falls
    halfway to a faster one at once and rises only by 1/16 of the way to a slower one, so that the
    queueing a burst causes does not pass for the store's own speed.
    """

    FALL = 0.5
    RISE = 1 / 16

    def __init__(self) -> None:
        self._seconds: float | None = None
        self._guard = threading.Lock()

    def observe(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._guard:
            if self._seconds is None:
                self._seconds = seconds
            else:
                gain = self.FALL if seconds < self._seconds else self.RISE
                self._seconds += gain * (seconds - self._seconds)

    @property
    def seconds(self) -> float | None:
        with self._guard:
            return self._seconds


@dataclass
class Attempt:
    """One try of an optimistic loop. The loop says how it ended (`lost`, `throttled`, `unknown`,
    `committed`); the policy sizes the wait before the next try from that."""

    number: int
    began: float
    policy: RetryPolicy = field(repr=False)
    seen: int | None = None  # the contended row's change count when this attempt read it
    outcome: Outcome | None = None

    def lost(self, seen: int | None = None) -> None:
        """Another writer committed first; `seen` is the counter's change count this attempt read."""
        self.outcome, self.seen = Outcome.LOST, seen

    def throttled(self) -> None:
        self.outcome = Outcome.THROTTLED

    def unknown(self) -> None:
        self.outcome = Outcome.UNKNOWN

    def committed(self) -> None:
        """The attempt went through: its duration is a round trip of this process's store."""
        self.policy.round_trip.observe(self.policy.clock() - self.began)


@dataclass
class _Race:
    """What one call of the loop has learned about its race so far."""

    contenders: float = 0.0
    seen: int | None = None  # the change count the previous attempt read


@dataclass(frozen=True)
class RetryPolicy:
    """Waits between attempts sized from observed contention, until `deadline_seconds`.

    `base_seconds` is the smallest slot (and the slot when no round trip is known); no wait is longer
    than `cap_seconds`; `spread` is how many round trips each contender's slot gets; `queue_weight`
    is how many writers one round trip spent queued at the store stands for (each queued attempt
    holds the store for its read and its write, about half of a round trip: the other half is the
    writer's own work); `growth` is how much the estimate grows when losing with nothing seen.
    """

    base_seconds: float = 0.001
    cap_seconds: float = 5.0
    deadline_seconds: float = 10.0
    spread: float = 2.0
    queue_weight: float = 2.0
    growth: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False, compare=False)
    round_trip: RoundTrip = field(default_factory=RoundTrip, repr=False, compare=False)

    def attempts(self, doing: str) -> Iterator[Attempt]:
        """Yield attempts, waiting between them; raise Busy once the deadline would pass."""
        deadline = self.clock() + self.deadline_seconds
        race = _Race()
        number = 0
        while True:
            attempt = Attempt(number, self.clock(), self)
            yield attempt
            number += 1
            delay = self.delay(attempt, race, deadline - self.clock())
            if self.clock() + delay > deadline:
                raise Busy(
                    f"{doing} is still contended after {number} attempts in {self.deadline_seconds:g} s; retry shortly",
                    retry_after=1.0,
                )
            self.sleep(delay)

    def delay(self, attempt: Attempt, race: _Race, left: float) -> float:
        """The wait after `attempt`, which did not commit: a random slot in [0, spread x contenders x
        round trip], capped, and short enough that one more round trip ends within the `left`
        seconds before the deadline (infinite when none would); `race` keeps what this call has
        learned for the next one.

        Clamping to the deadline rather than giving up on a long draw: a writer that would have
        drawn a slot past it still gets its tries before it, where the others' slots thin out."""
        took = self.clock() - attempt.began
        trip = max(self.base_seconds, self.round_trip.seconds or took)
        race.contenders = self.contenders(attempt, race, took, trip)
        if attempt.outcome is Outcome.LOST:
            race.seen = attempt.seen
        latest = left - trip
        if latest < self.base_seconds:
            return math.inf
        window = min(self.cap_seconds, self.spread * race.contenders * trip, latest)
        return self.uniform(0.0, max(window, self.base_seconds))

    def contenders(self, attempt: Attempt, race: _Race, took: float, trip: float) -> float:
        """How many writers this one still races with, reckoned from what `attempt` saw."""
        # Writers queued ahead of the attempt: its round trips spent waiting at the store, weighted.
        queued = self.queue_weight * max(0.0, took / trip - 1)
        if not race.contenders:  # a first loss: the queue it met, or at least the writer that won
            return max(1.0, queued)
        others = 0
        if attempt.outcome is Outcome.LOST and attempt.seen is not None and race.seen is not None:
            others = attempt.seen - race.seen  # commits by others between this call's last two reads
        if others <= 0:  # lost again and saw no one commit: more writers than thought
            return max(queued, race.contenders * self.growth)
        return max(1.0, queued, race.contenders - others)  # those that committed are done

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
- **Contenders** are estimated from what the lost attempt saw. Others committed between this
  call's last two reads of the counter (its sequence counts every change): at least that many are
  writing. The attempt waited at the store longer than a round trip: requests were queued ahead
  of it, about one per extra round trip. Losing again means the estimate was too small: it
  doubles. With nothing seen (a first loss, an attempt that read no counter), it is 1: one
  other writer, so the next attempt comes within about a round trip.
"""

from __future__ import annotations

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
    read_at: float | None = None  # when that attempt began


@dataclass(frozen=True)
class RetryPolicy:
    """Waits between attempts sized from observed contention, until `deadline_seconds`.

    `base_seconds` is the smallest slot (and the slot when no round trip is known); no wait is longer
    than `cap_seconds`; `spread` is how many round trips each contender's slot gets.
    """

    base_seconds: float = 0.001
    cap_seconds: float = 2.0
    deadline_seconds: float = 10.0
    spread: float = 1.5
    growth: float = 2.0
    saturated: float = 0.5  # a counter committing for this share of an interval had no room to spare
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
            delay = self.delay(attempt, race)
            if self.clock() + delay > deadline:
                raise Busy(
                    f"{doing} is still contended after {number} attempts in {self.deadline_seconds:g} s; retry shortly",
                    retry_after=1.0,
                )
            self.sleep(delay)

    def delay(self, attempt: Attempt, race: _Race) -> float:
        """The wait after `attempt`, which did not commit: a random slot in [0, spread x contenders x
        round trip], capped; `race` keeps what this call has learned for the next one."""
        took = self.clock() - attempt.began
        trip = max(self.base_seconds, self.round_trip.seconds or took)
        race.contenders = self.contenders(attempt, race, took, trip)
        if attempt.outcome is Outcome.LOST:
            race.seen, race.read_at = attempt.seen, attempt.began
        window = min(self.cap_seconds, self.spread * race.contenders * trip)
        return self.uniform(0.0, max(window, self.base_seconds))

    def contenders(self, attempt: Attempt, race: _Race, took: float, trip: float) -> float:
        """How many writers this one now reckons it races with, from what `attempt` saw."""
        queued = max(0.0, took / trip - 1)  # round trips the attempt spent queued behind others
        if not race.contenders:
            return max(1.0, queued)  # a first loss: at least the one writer that won
        others = 0
        if attempt.outcome is Outcome.LOST and attempt.seen is not None and race.seen is not None:
            others = attempt.seen - race.seen  # commits by others between this call's last two reads
        if others <= 0:
            return max(queued, race.contenders * self.growth)  # lost again, nothing seen: more than thought
        interval = max(attempt.began - (race.read_at or attempt.began), trip)
        if others * trip >= self.saturated * interval:
            return max(queued, race.contenders * self.growth)  # the counter was busy: more writers than thought
        return max(1.0, queued, race.contenders - others)  # it had room: those that committed are done

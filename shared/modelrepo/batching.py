"""Group commit: requests that queue up for one resource are written together by one of them.

Threads of one process registering versions of the same experiment would otherwise race for the
same counter row, and all but one would lose the conditional write, back off and retry. Instead
each request joins a queue; one request at a time leads: it takes a batch off the queue, commits it
(one conditional write for the whole batch) and hands the lead to the next request still waiting.
Every request still ends with exactly its own answer or error; writers in other processes are
still kept apart by the conditional write itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")


class Wake:
    """A one-shot wake-up call for one waiting thread: `set` wakes it (or lets its next `wait`
    return at once), `wait` consumes the call. A bare lock instead of a `threading.Event`: every
    registration waits once, and an Event's condition variable costs a lock, a deque and a
    notify_all each time, in the thread that commits a batch for everyone else."""

    def __init__(self) -> None:
        self._call = threading.Lock()
        self._call.acquire()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # already set: one call is enough
            self._call.release()

    def wait(self, timeout: float) -> bool:
        return self._call.acquire(timeout=timeout)


def wait_for_turn(wake: Wake, patience: float) -> bool:
    """How a queued request waits to be answered or handed the lead: True once woken, False when
    its patience ran out. The group's only wait, so tests can replace it to see who is waiting and
    to run a request's patience out on cue instead of on the wall clock."""
    return wake.wait(patience)


class Ticket(Generic[P, R]):
    """One queued request: its payload, and in the end its result or error."""

    def __init__(self, payload: P) -> None:
        self.payload = payload
        self.result: R | None = None
        self.error: BaseException | None = None
        self.done = False
        self.lead = False
        self._wake = Wake()

    def resolve(self, result: R) -> None:
        self.result, self.done = result, True

    def fail(self, error: BaseException) -> None:
        self.error, self.done = error, True


class GroupCommit(Generic[P, R]):
    """A queue of tickets for one resource and the rule of who writes them.

    `take(queue)` removes and returns the next batch (at least one ticket); `commit(batch)` must
    resolve or fail every ticket of the batch. `patience` bounds how long a ticket waits in the
    queue before it gives up with `give_up()`'s error.
    """

    def __init__(
        self,
        take: Callable[[deque[Ticket[P, R]]], list[Ticket[P, R]]],
        commit: Callable[[list[Ticket[P, R]]], None],
        give_up: Callable[[], BaseException],
        patience: float,
    ) -> None:
        self._take = take
        self._commit = commit
        self._give_up = give_up
        self._patience = patience
        self._queue: deque[Ticket[P, R]] = deque()
        self._lock = threading.Lock()
        self._leading = False

    def submit(self, payload: P) -> R:
        ticket: Ticket[P, R] = Ticket(payload)
        with self._lock:
            self._queue.append(ticket)
            if not self._leading:
                self._leading = ticket.lead = True
        while not ticket.done:
            if ticket.lead:
                ticket.lead = False
                self._lead()
            elif not wait_for_turn(ticket._wake, self._patience):
                with self._lock:
                    if not ticket.done and not ticket.lead and ticket in self._queue:
                        self._queue.remove(ticket)
                        raise self._give_up()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._lock:
            batch = self._take(self._queue)
        try:
            self._commit(batch)
        except BaseException as error:
            for ticket in batch:
                if not ticket.done:
                    ticket.fail(error)
        finally:
            with self._lock:
                for ticket in batch:
                    if not ticket.done:
                        ticket.fail(RuntimeError("a batch ended without an answer for this request"))
                    ticket._wake.set()
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor._wake.set()
                else:
                    self._leading = False

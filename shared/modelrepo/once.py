"""A value made the first time it is needed, once, however many threads ask for it together.

What the hosts use for SDK clients a cold start should not pay for until a request needs them (an
S3 client for a metadata read, a queue client for a worker that commits nothing, an Event Grid
client for a function that only sends hints): building them under a lock, because SDK sessions do
not build clients thread-safely and two clients would hold two connection pools.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Once(Generic[T]):
    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._make()
                value = self._value
        return value

    def forget(self) -> T | None:
        """The value if it was made (the caller releases it); the next `get` makes a new one."""
        with self._lock:
            value, self._value = self._value, None
            return value

"""A MetadataStore that passes everything through and counts what the core's retries see."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from modelrepo.errors import ConditionFailed, OutcomeUnknown, Throttled
from modelrepo.ports import Item, MetadataStore, Write


class CountingMetadataStore(MetadataStore):
    """Counts transactions, lost conditional writes (conflicts) and throttled or unknown writes.

    Every transaction that did not commit (a conflict, throttled, unknown) is followed by a retry;
    the benchmark derives retries from these counters.
    """

    def __init__(self, inner: MetadataStore) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.transactions = 0
        self.conflicts = 0
        self.throttled = 0
        self.unknown = 0

    def get(self, partition: str, row: str) -> Item | None:
        return self.inner.get(partition, row)

    def query(self, partition: str, prefix: str, *, after: str | None = None, limit: int = 100) -> list[Item]:
        return self.inner.query(partition, prefix, after=after, limit=limit)

    def transact(self, writes: Sequence[Write]) -> None:
        try:
            self.inner.transact(writes)
        except ConditionFailed:
            self._count("conflicts")
            raise
        except Throttled:
            self._count("throttled")
            raise
        except OutcomeUnknown:
            self._count("unknown")
            raise
        finally:
            self._count("transactions")

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "transactions": self.transactions,
                "conflicts": self.conflicts,
                "throttled": self.throttled,
                "unknown": self.unknown,
            }

    def close(self) -> None:
        self.inner.close()

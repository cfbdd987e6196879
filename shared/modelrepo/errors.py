"""The errors that cross the core's boundary.

Hosts map only these to responses; adapters translate their SDK errors into the storage errors
below so that no handler ever sees a cloud SDK exception.
"""

from __future__ import annotations


class ModelRepoError(Exception):
    """Base of every error the core raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- Errors about the caller's request -----------------------------------------------------------


class InvalidInput(ModelRepoError, ValueError):
    """The request itself is malformed (bad id, bad body, bad cursor).

    Also a ValueError so that pydantic validators can raise it and report it as a field error.
    """


class NotFound(ModelRepoError):
    """The named thing does not exist."""


class Conflict(ModelRepoError):
    """The request is well formed but clashes with the current state (retrying will not help)."""


class Gone(ModelRepoError):
    """The named thing existed and was deleted (its record stays, its content is gone)."""


class Unprocessable(ModelRepoError):
    """The request is well formed but refers to things that cannot be combined."""


class Busy(ModelRepoError):
    """Contention or throttling outlasted the retry deadline; the caller may retry later."""

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


# --- Errors adapters raise for the core to interpret ---------------------------------------------


class StorageError(ModelRepoError):
    """Base of the errors a port implementation raises."""


class ConditionFailed(StorageError):
    """A conditional write lost: the row changed (ETag mismatch) or already exists."""


class OutcomeUnknown(StorageError):
    """A write may or may not have committed (timeout, dropped connection)."""


class Throttled(StorageError):
    """The backend refused work for now, after the SDK's own retries; worth retrying later."""


class ObjectMissing(StorageError):
    """The object is not (or no longer) in the store."""


class ObjectChanged(StorageError):
    """The object exists but is not the version the caller asked for (ETag mismatch)."""


class InsufficientStorage(StorageError):
    """A store ran out of space (ENOSPC, SQLITE_FULL): nothing was written; retrying helps only
    once space returns, so it is answered (507) instead of retried against a deadline."""


class StoreUnavailable(StorageError):
    """A store cannot be used at all: corrupt, read-only, immutable, deleted or missing. Retrying
    does not help until an operator repairs it; the detail names the store."""

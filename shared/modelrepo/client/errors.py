"""What the client raises: the core's domain errors, carrying the HTTP status they arrived with.

A problem answer becomes the `modelrepo.errors` class the API mapped it from (400 InvalidInput,
404 NotFound, 409 Conflict, 422 Unprocessable, 503 Busy with its Retry-After), so code written
against the core catches the same exceptions through the client. Each is also an `ApiError`,
which keeps the status. No message ever quotes a request header: credentials travel there.
"""

from __future__ import annotations

from modelrepo.errors import Busy, Conflict, InvalidInput, ModelRepoError, NotFound, Unprocessable


class ClientError(ModelRepoError):
    """Base of the errors that arise on the client's side of the wire."""


class ApiError(ModelRepoError):
    """The API answered with an error status; `detail` is the problem's `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class BadRequest(ApiError, InvalidInput):
    """400: the request is malformed (a bad id, body or cursor)."""


class NotFoundError(ApiError, NotFound):
    """404: the named thing does not exist."""


class ConflictError(ApiError, Conflict):
    """409: the request clashes with the current state."""


class UnprocessableError(ApiError, Unprocessable):
    """422: the request names things that cannot be combined."""


class BusyError(ApiError, Busy):
    """503: the service is busy; `retry_after` is how long it asked the caller to wait."""

    def __init__(self, status: int, detail: str, retry_after: float = 1.0) -> None:
        ApiError.__init__(self, status, detail)
        self.retry_after = retry_after


class NotAuthorized(ApiError):
    """401 or 403: the credentials are missing, wrong, or not allowed to do this."""


class Unreachable(ClientError):
    """The service could not be reached (no connection, a timeout, a TLS failure)."""


class DigestMismatch(ClientError):
    """Downloaded bytes do not have the digest the API promised."""


class NotRecorded(ClientError):
    """An upload did not appear as a recorded artifact in time."""


class NotConfigured(ClientError):
    """A profile, a credential or an SDK that the chosen way of connecting needs is missing."""

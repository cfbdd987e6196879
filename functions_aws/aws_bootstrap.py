"""The Lambda host's composition root: the only code that reads the environment or builds clients.

Nothing is built at import time. The first invocation of a container reads the settings (the one
`AwsSettings` class the operator CLI reads too) and builds the clients and the repository once;
later invocations of the same container reuse them.
"""

from __future__ import annotations

import functools
import os
import time
from typing import TYPE_CHECKING

from modelrepo.adapters.aws import (
    AwsSettings,
    EventBridgePublisher,
    StreamReader,
    build_publisher,
    build_repository,
    build_stream_reader,
)
from modelrepo.dispatch import Dispatcher
from modelrepo.projections import Indexer
from modelrepo.service import ModelRepository

if TYPE_CHECKING:
    from modelrepo.api import Api


class RetryCounter:
    """Counts the core's backoff sleeps so that handlers can report retries as a metric."""

    def __init__(self) -> None:
        self.count = 0

    def sleep(self, seconds: float) -> None:
        self.count += 1
        time.sleep(seconds)

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


retries = RetryCounter()


@functools.cache
def settings() -> AwsSettings:
    return AwsSettings.from_environment(os.environ)


@functools.cache
def repository() -> ModelRepository:
    """Region, credentials and endpoint come from the Lambda environment."""
    return build_repository(settings(), os.environ, sleep=retries.sleep)


@functools.cache
def api() -> Api:
    """The HTTP layer, imported here: the record, dispatch and reconcile functions never load it."""
    from modelrepo.api import Api

    return Api(
        repository(),
        max_body_bytes=settings().max_body_bytes,
        actor_must_be_principal=settings().actor_must_be_principal,
    )


@functools.cache
def index() -> Dispatcher:
    """The index subscriber (experiments listing, search): the dispatcher keeps it from the stream."""
    metadata = repository().metadata
    return Dispatcher(metadata, Indexer(metadata))


@functools.cache
def publisher() -> EventBridgePublisher:
    """The dispatcher's: the stack's event bus (the other functions never build it)."""
    return build_publisher(settings(), os.environ)


@functools.cache
def stream_reader() -> StreamReader:
    """The dispatcher's, for replaying a batch from the on-failure queue."""
    return build_stream_reader(os.environ)

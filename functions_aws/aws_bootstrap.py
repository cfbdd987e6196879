"""The Lambda host's composition root: the only code that reads the environment or builds clients.

Nothing is built at import time. The first invocation of a container builds the settings, the
boto3 clients and the repository once; later invocations of the same container reuse them.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping

import boto3
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelrepo.adapters.aws import DynamoDBMetadataStore, S3ArtifactStore, client_config
from modelrepo.api import DEFAULT_MAX_BODY_BYTES, Api, describe_validation_error
from modelrepo.errors import InvalidInput
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository

# The variables template.yaml sets (Globals.Function.Environment) and the settings they fill.
ENVIRONMENT_VARIABLES = {
    "uploads_bucket": "MODELREPO_UPLOADS_BUCKET",
    "registry_bucket": "MODELREPO_REGISTRY_BUCKET",
    "table": "MODELREPO_TABLE",
    "register_deadline_seconds": "MODELREPO_REGISTER_DEADLINE_SECONDS",
    "max_body_bytes": "MODELREPO_MAX_BODY_BYTES",
}
BUCKET_NAME = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
TABLE_NAME = r"^[A-Za-z0-9_.-]{3,255}$"


class AwsSettings(BaseModel):
    """Everything the functions need to know, validated once per container."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uploads_bucket: str = Field(pattern=BUCKET_NAME)
    registry_bucket: str = Field(pattern=BUCKET_NAME)
    table: str = Field(pattern=TABLE_NAME)
    # API Gateway gives up after 29 s; the core must answer (503 + Retry-After) before that.
    register_deadline_seconds: float = Field(default=10.0, gt=0, le=25)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, le=6 * 1024 * 1024)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> AwsSettings:
        values = {name: environ[variable] for name, variable in ENVIRONMENT_VARIABLES.items() if environ.get(variable)}
        try:
            return cls(**values)
        except ValidationError as error:
            raise InvalidInput(f"invalid settings: {describe_validation_error(error)}") from None


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
    """Region, credentials and endpoint come from the Lambda environment, as boto3 reads them."""
    config = settings()
    session = boto3.session.Session()
    s3 = session.client("s3", config=client_config(signature_version="s3v4"))
    dynamodb = session.client("dynamodb", config=client_config())
    return ModelRepository(
        S3ArtifactStore(s3, config.uploads_bucket, config.registry_bucket),
        DynamoDBMetadataStore(dynamodb, config.table),
        retry=RetryPolicy(deadline_seconds=config.register_deadline_seconds, sleep=retries.sleep),
    )


@functools.cache
def api() -> Api:
    return Api(repository(), max_body_bytes=settings().max_body_bytes)

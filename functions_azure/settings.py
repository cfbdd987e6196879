"""The Azure host's settings: one frozen, validated object built from the app settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from modelrepo.api import DEFAULT_MAX_BODY_BYTES, describe_validation_error
from modelrepo.errors import InvalidInput

# The connection the blob trigger names; the host and our SDK clients read the same app settings:
# `ModelRepoStorage` (a connection string, for Azurite) or `ModelRepoStorage__blobServiceUri`,
# `__queueServiceUri`, `__tableServiceUri` (+ `__credential`, `__clientId`) for a managed identity.
CONNECTION = "ModelRepoStorage"
UPLOADS_SETTING = "MODELREPO_UPLOADS_CONTAINER"

CONTAINER_NAME = r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"
TABLE_NAME = r"^[A-Za-z][A-Za-z0-9]{2,62}$"


class AzureSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    connection_string: SecretStr | None = None
    blob_service_uri: str | None = Field(default=None, pattern=r"^https://")
    table_service_uri: str | None = Field(default=None, pattern=r"^https://")
    client_id: str | None = None
    uploads_container: str = Field(pattern=CONTAINER_NAME)
    registry_container: str = Field(default="registry", pattern=CONTAINER_NAME)
    table: str = Field(default="modelrepo", pattern=TABLE_NAME)
    register_deadline_seconds: float = Field(default=10.0, gt=0, le=200)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, le=16 * 1024 * 1024)

    @field_validator("uploads_container", "registry_container")
    @classmethod
    def _no_double_dash(cls, name: str) -> str:
        if "--" in name:
            raise ValueError("a container name cannot contain '--'")
        return name

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> Self:
        identity = self.blob_service_uri is not None and self.table_service_uri is not None
        if (self.connection_string is None) == (not identity):
            raise ValueError(
                f"set either {CONNECTION} (a connection string, for Azurite) or both "
                f"{CONNECTION}__blobServiceUri and {CONNECTION}__tableServiceUri (managed identity)"
            )
        if self.uploads_container == self.registry_container:
            raise ValueError("the registry must be a container of its own, not the uploads container")
        return self

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> AzureSettings:
        names = {
            "connection_string": CONNECTION,
            "blob_service_uri": f"{CONNECTION}__blobServiceUri",
            "table_service_uri": f"{CONNECTION}__tableServiceUri",
            "client_id": f"{CONNECTION}__clientId",
            "uploads_container": UPLOADS_SETTING,
            "registry_container": "MODELREPO_REGISTRY_CONTAINER",
            "table": "MODELREPO_TABLE",
            "register_deadline_seconds": "MODELREPO_REGISTER_DEADLINE_SECONDS",
            "max_body_bytes": "MODELREPO_MAX_BODY_BYTES",
        }
        values: dict[str, Any] = {field: environ[name] for field, name in names.items() if environ.get(name)}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise InvalidInput(f"invalid app settings: {describe_validation_error(error)}") from None

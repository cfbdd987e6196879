"""One frozen, validated settings object per host; only bootstraps build it from the environment."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from modelrepo.api import DEFAULT_MAX_BODY_BYTES, describe_validation_error
from modelrepo.errors import InvalidInput

DEFAULT_ROOT = Path("~/.mlops/model-repository")
DEFAULT_PORT = 7071


class LocalSettings(BaseModel):
    """Settings of the embedded runtime and the CLI."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    root: Path = DEFAULT_ROOT
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    api_key: SecretStr | None = None
    url: str | None = None
    register_deadline_seconds: float = Field(default=10.0, gt=0, le=600)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, le=16 * 1024 * 1024)
    # Create a new metadata database even though the registry holds pinned bytes (`--init`).
    init_database: bool = False

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, root: Path) -> Path:
        return root.expanduser().absolute()

    @field_validator("api_key")
    @classmethod
    def _usable_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and (len(key.get_secret_value()) < 8 or not key.get_secret_value().isprintable()):
            raise ValueError("MODELREPO_API_KEY must be at least 8 printable characters")
        return key

    @property
    def uploads(self) -> Path:
        return self.root / "artifacts"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def dead_letters(self) -> Path:
        return self.root / "dead-letters"

    @property
    def database(self) -> Path:
        return self.root / "metadata.sqlite3"

    @property
    def drop_folder_ledger(self) -> Path:
        """The order and digest of every file version the drop folder has seen."""
        return self.root / "drop-folder.sqlite3"

    def require_safe_binding(self) -> None:
        """Refuse to expose an unauthenticated API beyond this machine."""
        if self.api_key is None and not _is_loopback(self.host):
            raise InvalidInput(
                f"refusing to listen on {self.host} without an API key: set MODELREPO_API_KEY, or bind 127.0.0.1"
            )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], **overrides: Any) -> LocalSettings:
        """Environment first, explicit (command-line) values over it; None means 'not given'."""
        values: dict[str, Any] = {}
        for name, variable in (("root", "MODELREPO_ROOT"), ("api_key", "MODELREPO_API_KEY"), ("url", "MODELREPO_URL")):
            if environ.get(variable):
                values[name] = environ[variable]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as error:
            raise InvalidInput(f"invalid settings: {describe_validation_error(error)}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

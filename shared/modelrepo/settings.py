"""One frozen, validated settings object per host; only bootstraps build it from the environment."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from modelrepo.errors import InvalidInput
from modelrepo.limits import DEFAULT_MAX_BODY_BYTES
from modelrepo.model import ApprovalStatus, describe_validation_error

DEFAULT_ROOT = Path("~/.mlops/model-repository")
DEFAULT_PORT = 7071
# The principal a request authenticated with MODELREPO_API_KEY (the one unnamed key) is recorded as.
DEFAULT_KEY_NAME = "default"
KEY_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class LocalSettings(BaseModel):
    """Settings of the embedded runtime and the CLI."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    root: Path = DEFAULT_ROOT
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    api_key: SecretStr | None = None
    # Named keys (MODELREPO_API_KEYS=name:key,...): a request's principal is its key's name.
    api_keys: dict[str, SecretStr] = Field(default_factory=dict)
    # A change's body may only name the principal that made it (403 otherwise).
    actor_must_be_principal: bool = False
    url: str | None = None
    register_deadline_seconds: float = Field(default=10.0, gt=0, le=600)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, le=16 * 1024 * 1024)
    # Where events go: Standard Webhooks, each URL its own ordered subscriber, all signed with one secret.
    webhooks: tuple[str, ...] = ()
    webhook_secret: SecretStr | None = None
    sweep_seconds: float = Field(default=30.0, gt=0, le=3600)
    # The approval status new versions start with (MODELREPO_DEFAULT_APPROVAL).
    default_approval: ApprovalStatus = ApprovalStatus.PENDING
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
            raise ValueError("an API key must be at least 8 printable characters")
        return key

    @field_validator("api_keys", mode="before")
    @classmethod
    def _named_keys(cls, value: Any) -> Any:
        """`name:key,name:key` (the environment's form) as a mapping; each name and key once."""
        if not isinstance(value, str):
            return value
        keys: dict[str, str] = {}
        for entry in filter(None, (part.strip() for part in value.split(","))):
            name, sep, key = entry.partition(":")
            if not sep:
                raise ValueError(f"MODELREPO_API_KEYS entry {name!r} must be NAME:KEY")
            if name in keys:
                raise ValueError(f"MODELREPO_API_KEYS names {name!r} twice")
            keys[name] = key
        return keys

    @field_validator("api_keys")
    @classmethod
    def _usable_named_keys(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, key in keys.items():
            if not KEY_NAME_PATTERN.fullmatch(name):
                raise ValueError(
                    f"API key name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-' (not first)"
                )
            cls._usable_key(key)
        secrets = [key.get_secret_value() for key in keys.values()]
        if len(set(secrets)) != len(secrets):
            raise ValueError("two API keys are the same: each name needs its own key")
        return keys

    @field_validator("webhooks")
    @classmethod
    def _http_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
                raise ValueError(f"webhook {url!r} is not an http(s) URL")
        if len(set(urls)) != len(urls):
            raise ValueError("a webhook URL is given twice")
        return urls

    @field_validator("webhook_secret")
    @classmethod
    def _standard_webhooks_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None:
            return None
        text = secret.get_secret_value().removeprefix("whsec_")
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) < 24:
            raise ValueError("MODELREPO_WEBHOOK_SECRET must be 'whsec_' and at least 24 bytes in base64")
        return secret

    @model_validator(mode="after")
    def _keys_named_once(self) -> Self:
        if self.api_key is not None and DEFAULT_KEY_NAME in self.api_keys:
            raise ValueError(
                f"MODELREPO_API_KEY is the key named {DEFAULT_KEY_NAME!r}; MODELREPO_API_KEYS names it too"
            )
        if self.actor_must_be_principal and not self.credentials:
            raise ValueError(
                "MODELREPO_ACTOR_MUST_BE_PRINCIPAL needs API keys (MODELREPO_API_KEYS or MODELREPO_API_KEY): "
                "without them no request has a principal"
            )
        return self

    @property
    def credentials(self) -> dict[str, str]:
        """Every accepted key by the name its requests are recorded under."""
        named = {name: key.get_secret_value() for name, key in self.api_keys.items()}
        if self.api_key is not None:
            named[DEFAULT_KEY_NAME] = self.api_key.get_secret_value()
        return named

    @model_validator(mode="after")
    def _secret_for_webhooks(self) -> Self:
        if self.webhooks and self.webhook_secret is None:
            raise ValueError("webhooks need a signing secret: set MODELREPO_WEBHOOK_SECRET (whsec_...)")
        return self

    @property
    def event_source(self) -> str:
        """The CloudEvents `source` of this repository's events: its root as a URI."""
        return self.root.as_uri()

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
        if not self.credentials and not _is_loopback(self.host):
            raise InvalidInput(
                f"refusing to listen on {self.host} without an API key: set MODELREPO_API_KEY or "
                "MODELREPO_API_KEYS, or bind 127.0.0.1"
            )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], **overrides: Any) -> LocalSettings:
        """Environment first, explicit (command-line) values over it; None means 'not given'."""
        values: dict[str, Any] = {}
        for name, variable in (
            ("root", "MODELREPO_ROOT"),
            ("api_key", "MODELREPO_API_KEY"),
            ("api_keys", "MODELREPO_API_KEYS"),
            ("actor_must_be_principal", "MODELREPO_ACTOR_MUST_BE_PRINCIPAL"),
            ("url", "MODELREPO_URL"),
            ("webhook_secret", "MODELREPO_WEBHOOK_SECRET"),
            ("default_approval", "MODELREPO_DEFAULT_APPROVAL"),
        ):
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

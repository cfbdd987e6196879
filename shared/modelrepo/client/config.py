"""Profiles: where a deployment is and how to authenticate to it, kept in a TOML file.

The file is `$XDG_CONFIG_HOME/modelrepo/config.toml` (default `~/.config/modelrepo/config.toml`),
written by `modelrepo configure` with owner-only permissions, one table per profile:

    [profiles.aws]
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/api"
    auth = "sigv4"
    region = "eu-west-1"
    uploads_bucket = "modelrepo-uploads-..."

A profile is chosen with `--profile NAME` or MODELREPO_PROFILE. The environment overrides what
the file says: MODELREPO_URL (the URL), MODELREPO_API_KEY (a bearer key), MODELREPO_FUNCTION_KEY
(an Azure function key), so secrets need not be stored at all.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from modelrepo.client._client import Client
from modelrepo.client.errors import NotConfigured
from modelrepo.model import describe_validation_error

AuthKind = Literal["none", "bearer", "sigv4", "function-key", "entra"]
HTTP_URL = re.compile(r"https?://[^\s/?#@]+(/[^\s?#]*)?")
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SECRETS = ("api_key", "function_key")
ENVIRONMENT_OVERRIDES = {
    "url": "MODELREPO_URL",
    "api_key": "MODELREPO_API_KEY",
    "function_key": "MODELREPO_FUNCTION_KEY",
}


class Profile(BaseModel):
    """One deployment and how to reach it, validated once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    auth: AuthKind = "none"
    api_key: SecretStr | None = None
    function_key: SecretStr | None = None
    # sigv4
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    aws_profile: str | None = None
    # entra
    app_id: str | None = None
    scope: str | None = None
    # where uploads go, and what else the deployment's outputs named
    stack: str | None = None
    uploads_bucket: str | None = None
    registry_bucket: str | None = None
    table: str | None = None
    dead_letter_queue_url: str | None = None
    function_app: str | None = None
    storage_account: str | None = None
    uploads_container: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not HTTP_URL.fullmatch(url):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url

    @model_validator(mode="after")
    def _complete(self) -> Self:
        needs = {"bearer": self.api_key, "function-key": self.function_key, "entra": self.app_id or self.scope}
        if self.auth in needs and not needs[self.auth]:
            what = {"bearer": "api_key", "function-key": "function_key", "entra": "app_id (or scope)"}[self.auth]
            raise ValueError(f"auth {self.auth!r} needs {what}")
        if self.uploads_bucket and (self.storage_account or self.uploads_container):
            raise ValueError("a profile uploads either to an S3 bucket or to a storage account, not both")
        if bool(self.storage_account) != bool(self.uploads_container):
            raise ValueError("storage_account and uploads_container go together")
        return self

    @property
    def cloud(self) -> Literal["aws", "azure"] | None:
        """Where `modelrepo upload` writes for this profile (None: nowhere but the local root)."""
        if self.uploads_bucket:
            return "aws"
        if self.storage_account:
            return "azure"
        return None

    def shown(self) -> dict[str, Any]:
        """What the profile says, with secrets masked (for printing)."""
        return {
            key: ("**********" if key in SECRETS else value)
            for key, value in self.model_dump(exclude_none=True).items()
        }

    def stored(self) -> dict[str, Any]:
        """The TOML table: secrets in clear (the file is the user's own, mode 0600)."""
        table = self.model_dump(exclude_none=True)
        for key in SECRETS:
            if isinstance(table.get(key), SecretStr):
                table[key] = table[key].get_secret_value()
        return table


def config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path(environ.get("HOME") or Path.home()) / ".config"
    return root / "modelrepo" / "config.toml"


def read_profiles(path: Path) -> dict[str, dict[str, Any]]:
    """Every profile table in the file (none if there is no file)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise NotConfigured(f"cannot read {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise NotConfigured(f"{path} is not valid TOML: {error}") from None
    profiles = document.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise NotConfigured(f"{path}: [profiles.NAME] must be tables")
    return profiles


def make_profile(values: Mapping[str, Any], where: str) -> Profile:
    try:
        return Profile.model_validate(dict(values))
    except ValidationError as error:
        raise NotConfigured(f"{where}: {describe_validation_error(error)}") from None


def load_profile(
    name: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
) -> Profile:
    """A profile of the config file with the environment's (then the arguments') overrides."""
    env = os.environ if environ is None else environ
    name = name or env.get("MODELREPO_PROFILE") or None
    if name is None:
        raise NotConfigured("name a profile (--profile NAME or MODELREPO_PROFILE), or create one: modelrepo configure")
    check_profile_name(name)
    path = config_path(env)
    profiles = read_profiles(path)
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none yet"
        raise NotConfigured(f"no profile {name!r} in {path} (profiles: {known}); create it with modelrepo configure")
    values = dict(profiles[name])
    for field, variable in ENVIRONMENT_OVERRIDES.items():
        if env.get(variable):
            values[field] = env[variable]
    if url:
        values["url"] = url
    if api_key:
        values["api_key"] = api_key
    if values.get("api_key") and values.get("auth", "none") == "none":
        values["auth"] = "bearer"
    return make_profile(values, f"profile {name!r} of {path}")


def resolve(environ: Mapping[str, str], *, profile: str | None, url: str | None, api_key: str | None) -> Profile | None:
    """How the CLI connects: a profile, else a bare URL (bearer with the API key), else None (local)."""
    if profile or environ.get("MODELREPO_PROFILE"):
        return load_profile(profile, environ, url=url, api_key=api_key)
    if url:
        return make_profile({"url": url, "auth": "bearer" if api_key else "none", "api_key": api_key}, "--url")
    return None


def save_profile(name: str, profile: Profile, environ: Mapping[str, str]) -> Path:
    """Add or replace one profile, atomically, readable by the owner only."""
    check_profile_name(name)
    path = config_path(environ)
    profiles = read_profiles(path)
    profiles[name] = profile.stored()
    import tomli_w  # only writing needs it (the CLI's other commands run without the client extra)

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:  # mkstemp made it 0600
                tomli_w.dump({"profiles": profiles}, out)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    except OSError as error:
        raise NotConfigured(f"cannot write {path}: {error.strerror or error}") from None
    return path


def check_profile_name(name: str) -> str:
    if not PROFILE_NAME.fullmatch(name):
        raise NotConfigured(f"profile name {name!r} is invalid: use 1-64 letters, digits, '.', '_' or '-'")
    return name


def connect(profile: Profile, **options: Any) -> Client:
    """A client of the profile's deployment with the profile's authentication."""
    return Client.over_http(profile.url, auth(profile), **options)


def auth(profile: Profile) -> Any:
    """The `httpx.Auth` of the profile (None for none); each cloud's SDK is imported only if needed."""
    if profile.auth == "none":
        return None
    if profile.auth == "bearer":
        from modelrepo.client.auth import BearerAuth

        assert profile.api_key is not None
        return BearerAuth(profile.api_key)
    if profile.auth == "function-key":
        from modelrepo.client.auth import FunctionKeyAuth

        assert profile.function_key is not None
        return FunctionKeyAuth(profile.function_key)
    if profile.auth == "entra":
        from modelrepo.client.auth import EntraAuth, default_scope

        azure = _cloud_module("azure")
        scope = profile.scope or default_scope(str(profile.app_id))
        return EntraAuth(azure.credential(), scope, function_key=profile.function_key)
    aws = _cloud_module("aws")
    return aws.SigV4Auth.for_url(profile.url, region=profile.region, aws_profile=profile.aws_profile)


def _cloud_module(cloud: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"modelrepo.client.{cloud}")
    except ImportError as error:
        raise NotConfigured(f"this profile needs the {cloud} SDK: pip install 'modelrepo[{cloud}]' ({error})") from None


# --- what deployments output ---------------------------------------------------------------------

# template.yaml's Outputs -> profile fields.
STACK_OUTPUTS = {
    "ApiUrl": "url",
    "UploadsBucketName": "uploads_bucket",
    "RegistryBucketName": "registry_bucket",
    "MetadataTableName": "table",
    "UploadsDeadLetterQueueUrl": "dead_letter_queue_url",
}
# infra/main.bicep's outputs -> profile fields.
BICEP_OUTPUTS = {
    "apiBaseUrl": "url",
    "functionAppName": "function_app",
    "storageAccountName": "storage_account",
    "uploadsContainer": "uploads_container",
}


def from_stack_outputs(outputs: Mapping[str, str]) -> dict[str, Any]:
    missing = [key for key in ("ApiUrl", "UploadsBucketName") if not outputs.get(key)]
    if missing:
        raise NotConfigured(f"the stack has no output {', '.join(missing)}: is it a modelrepo stack (template.yaml)?")
    return {field: outputs[key] for key, field in STACK_OUTPUTS.items() if outputs.get(key)}


def from_bicep_outputs(document: Any) -> dict[str, Any]:
    """The profile fields of `az deployment group show ... --query properties.outputs` (JSON).

    Each output is `{"type": "String", "value": ...}` there; plain values are accepted too.
    """
    if not isinstance(document, dict):
        raise NotConfigured(
            "the deployment outputs must be a JSON object (az deployment group show --query properties.outputs)"
        )
    values: dict[str, Any] = {}
    for key, field in BICEP_OUTPUTS.items():
        raw = document.get(key)
        value = raw.get("value") if isinstance(raw, dict) else raw
        if isinstance(value, str) and value:
            values[field] = value
    missing = [key for key, field in BICEP_OUTPUTS.items() if field not in values and key != "functionAppName"]
    if missing:
        raise NotConfigured(f"the deployment outputs lack {', '.join(missing)}: are they infra/main.bicep's?")
    return values

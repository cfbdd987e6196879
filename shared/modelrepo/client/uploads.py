"""Uploads into a deployment's bucket: S3 or Blob Storage, whichever the profile names.

The upload itself is the cloud SDK's managed transfer (imported only for that cloud); recording
is the deployment's event path, which `Client.wait_for_artifact` watches.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelrepo.client.errors import NotConfigured

if TYPE_CHECKING:
    from modelrepo.client.config import Profile


@dataclass(frozen=True)
class Uploaded:
    """An object as the bucket holds it after an upload."""

    where: str  # s3://bucket/key or the blob's URL
    key: str
    etag: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "where": self.where, "etag": self.etag, "size": self.size}


def upload_file(
    profile: Profile,
    source: Path,
    key: str,
    *,
    environ: Mapping[str, str],
    progress: Callable[[int], None] | None = None,
) -> Uploaded:
    """Put `source` at `key` in the profile's uploads bucket or container."""
    if profile.cloud is None:
        raise NotConfigured(
            "the profile names no uploads bucket or container (configure it with modelrepo configure aws|azure)"
        )
    try:
        module: Any = importlib.import_module(f"modelrepo.client.{profile.cloud}")
    except ImportError as error:
        raise NotConfigured(
            f"uploads to {profile.cloud} need its SDK: pip install 'modelrepo[{profile.cloud}]' ({error})"
        ) from None
    if profile.cloud == "aws":
        assert profile.uploads_bucket is not None
        uploaded: Uploaded = module.upload_file(
            source,
            profile.uploads_bucket,
            key,
            region=profile.region,
            aws_profile=profile.aws_profile,
            progress=progress,
        )
        return uploaded
    assert profile.storage_account is not None and profile.uploads_container is not None
    uploaded = module.upload_file(
        source, profile.storage_account, profile.uploads_container, key, environ=environ, progress=progress
    )
    return uploaded

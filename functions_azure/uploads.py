"""The upload trigger: a blob trigger fed by Event Grid, recording each upload through the core.

The host receives Event Grid's BlobCreated event on its blob-extension webhook, reads the blob's
current version and invokes `record_upload` with it. Here the InputStream becomes the neutral
`ObjectCreated` and `ModelRepository.record_artifact` applies every rule: an object version is
recorded once however often it is delivered, a key outside `<experimentId>/<runId>/<name>` is
recorded as a rejection (and the invocation succeeds, so it is never retried), and the bytes are
streamed from storage by ETag to compute the sha256. Any other failure raises, so the host retries
it up to `extensions.blobs.poisonBlobThreshold` (host.json) times and then parks it in the
`webjobs-blobtrigger-poison` queue.
"""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func

from functions_azure.bootstrap import runtime
from modelrepo.adapters.azure import CONNECTION, UPLOADS_SETTING, parse_time, quoted_etag
from modelrepo.events import ObjectCreated
from modelrepo.ports import ArtifactStore

log = logging.getLogger(__name__)
blueprint = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped
ACTOR = "blob-trigger"


def object_created(blob: func.InputStream, container: str, artifacts: ArtifactStore) -> ObjectCreated | None:
    """The upload the host bound, as the neutral fact; None if the blob is already gone.

    The host names the blob `<container>/<key>` (decoded) and passes its properties. When they
    lack a usable ETag or Last-Modified, the store's current version stands in for them.
    """
    name = blob.name or ""
    if not name.startswith(f"{container}/"):
        raise ValueError(f"the trigger bound {name!r}, which is not in the uploads container {container!r}")
    key = name.removeprefix(f"{container}/")
    # The worker's concrete InputStream carries the host's blob properties; the ABC does not say so.
    properties: dict[str, Any] = dict(getattr(blob, "blob_properties", None) or {})
    etag, modified = quoted_etag(properties.get("ETag")), parse_time(properties.get("LastModified"))
    if etag is None or modified is None or blob.length is None:
        info = artifacts.head(key)
        if info is None:
            return None
        return ObjectCreated(key=key, etag=info.etag, size=info.size, uploaded_at=info.modified_at, actor=ACTOR)
    return ObjectCreated(key=key, etag=etag, size=blob.length, uploaded_at=modified, actor=ACTOR)


@blueprint.function_name("record_upload")
@blueprint.blob_trigger(
    arg_name="blob",
    path=f"%{UPLOADS_SETTING}%/{{name}}",
    connection=CONNECTION,
    source=func.BlobSource.EVENT_GRID,
)
def record_upload(blob: func.InputStream) -> None:
    app = runtime()
    event = object_created(blob, app.settings.uploads_container, app.repository.artifacts)
    if event is None:
        log.info("upload %s is gone before it could be recorded", blob.name)
        return
    result = app.repository.record_artifact(event)
    if result.rejection is not None:
        log.warning("upload %r rejected: %s", result.rejection.key, result.rejection.reason)
    else:
        log.info("upload %r: %s", event.key, result.outcome.value)

"""The client's Azure side: an Entra credential for the API, uploads into Blob Storage.

Only imported when a profile needs Azure (`pip install 'modelrepo[azure]'`). The storage account
has shared keys turned off (infra/main.bicep), so uploads use the caller's Entra identity
(DefaultAzureCredential: environment, workload or managed identity, `az login`, ...), which needs
*Storage Blob Data Contributor* on the uploads container. AZURE_STORAGE_CONNECTION_STRING, when
set, is used instead: that is how development against Azurite works.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobClient

from modelrepo.client.errors import ClientError, NotConfigured
from modelrepo.client.uploads import Uploaded

CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
# Blocks of 4 MiB, 4 in flight: a 64 MiB model is 16 staged blocks committed as one block list.
BLOCK_BYTES = 4 * 1024 * 1024
MAX_CONCURRENCY = 4


def credential() -> DefaultAzureCredential:
    """The caller's Entra identity, without an interactive browser prompt."""
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def upload_file(
    source: Path,
    account: str,
    container: str,
    key: str,
    *,
    environ: Mapping[str, str],
    progress: Callable[[int], None] | None = None,
) -> Uploaded:
    """Stage the file block by block (in parallel) and commit the block list: readers never see half."""
    options: dict[str, Any] = {"max_block_size": BLOCK_BYTES, "max_single_put_size": BLOCK_BYTES}
    if connection := environ.get(CONNECTION_STRING):
        blob = BlobClient.from_connection_string(connection, container, key, **options)
    else:
        url = f"https://{account}.blob.core.windows.net"
        blob = BlobClient(url, container, key, credential=credential(), **options)
    where = f"{blob.url.split('?', 1)[0]}"
    done = 0

    def hook(current: int, total: int | None) -> None:
        nonlocal done
        if progress is not None and current > done:
            progress(current - done)
        done = max(done, current)

    size = source.stat().st_size
    try:
        with blob, source.open("rb") as data:
            result = blob.upload_blob(
                data, length=size, overwrite=True, max_concurrency=MAX_CONCURRENCY, progress_hook=hook
            )
    except ClientAuthenticationError as error:
        raise NotConfigured(f"no usable Azure identity for {where}: {error.message}") from None
    except HttpResponseError as error:
        raise ClientError(f"cannot upload to {where}: {error.status_code} {error.reason}") from None
    except AzureError as error:
        raise ClientError(f"cannot upload to {where}: {type(error).__name__}") from None
    return Uploaded(where, key, str(result["etag"]), size)

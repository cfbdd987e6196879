"""The client's AWS side: SigV4 for API Gateway, uploads into S3, a stack's outputs.

Only imported when a profile needs AWS (`pip install 'modelrepo[aws]'`); credentials come from
botocore's own chain (environment, ~/.aws config and credentials, SSO, container and instance
roles), optionally for a named AWS profile. Nothing here logs a credential or a signature.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import boto3
import httpx
from boto3.s3.transfer import TransferConfig
from botocore.auth import SigV4Auth as BotocoreSigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from modelrepo.client.errors import ClientError as ModelRepoClientError
from modelrepo.client.errors import NotConfigured
from modelrepo.client.http import redact_logs
from modelrepo.client.uploads import Uploaded

SERVICE = "execute-api"
EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
# Headers that reach API Gateway as the client sent them; hop-by-hop and agent headers may be
# changed on the way and are left unsigned (SigV4 needs host and x-amz-date; the rest is ours).
SIGNED_HEADERS = ("host", "content-type", "idempotency-key")
# Multipart from 8 MiB in 8 MiB parts, 4 at a time: a 64 MiB model is 8 parts.
UPLOAD_CONFIG = TransferConfig(
    multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024, max_concurrency=4
)
CREDENTIAL_CHAIN = "environment, ~/.aws/credentials and config, SSO, container or instance role"


def region_from_url(url: str) -> str | None:
    """The region of an `https://{id}.execute-api.{region}.amazonaws.com/...` URL."""
    found = EXECUTE_API_HOST.match(httpx.URL(url).host)
    return found.group(1) if found else None


def session(aws_profile: str | None = None, region: str | None = None) -> boto3.session.Session:
    try:
        return boto3.session.Session(profile_name=aws_profile, region_name=region)
    except BotoCoreError as error:
        raise NotConfigured(f"AWS profile {aws_profile!r}: {error}") from None


class SigV4Auth(httpx.Auth):
    """Signs each request with SigV4 for API Gateway (service `execute-api`) using botocore's signer.

    The body is signed as sent (`requires_request_body`), so a retry with another body cannot
    reuse a signature. Refreshable credentials (SSO, roles) are frozen per request.
    """

    requires_request_body = True

    def __init__(self, credentials: Credentials, region: str, *, service: str = SERVICE) -> None:
        self._credentials = credentials
        self.region = region
        self.service = service
        redact_logs()  # botocore logs the canonical request, session token included, at DEBUG

    @classmethod
    def for_url(cls, url: str, *, region: str | None = None, aws_profile: str | None = None) -> SigV4Auth:
        """Credentials from botocore's chain; the region from the URL, else `region`, else the AWS profile."""
        aws = session(aws_profile, region)
        credentials = aws.get_credentials()
        if credentials is None:
            raise NotConfigured(f"no AWS credentials found ({CREDENTIAL_CHAIN})")
        chosen = region_from_url(url) or region or aws.region_name
        if not chosen:
            raise NotConfigured("cannot tell the API's AWS region: set `region` in the profile or AWS_REGION")
        return cls(credentials, chosen)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        headers = {name: request.headers[name] for name in SIGNED_HEADERS if name in request.headers}
        signature = sigv4_headers(
            self._credentials, self.region, request.method, str(request.url), request.content, headers, self.service
        )
        request.headers.update(signature)
        yield request

    def __repr__(self) -> str:
        return f"SigV4Auth(service={self.service!r}, region={self.region!r})"


def sigv4_headers(
    credentials: Credentials,
    region: str,
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    service: str = SERVICE,
) -> dict[str, str]:
    """The headers that sign one request (Authorization, X-Amz-Date and, with a session, its token)
    with botocore's signer; `headers` are the ones to sign beside host. Also used by MLflow's
    request-auth plugin (`modelrepo.mlflow_auth`), whose requests are made by `requests`."""
    signed = AWSRequest(method=method, url=url, data=body, headers=headers)
    BotocoreSigV4Auth(credentials.get_frozen_credentials(), service, region).add_auth(signed)
    return {
        name: signed.headers[name]
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")
        if name in signed.headers
    }


# --- uploads -------------------------------------------------------------------------------------


def upload_file(
    source: Path,
    bucket: str,
    key: str,
    *,
    region: str | None = None,
    aws_profile: str | None = None,
    progress: Callable[[int], None] | None = None,
    config: TransferConfig = UPLOAD_CONFIG,
) -> Uploaded:
    """Upload with boto3's managed transfer (multipart above the threshold, parts in parallel).

    The ETag is read back from the object: it is what the upload notification and so the
    recorded artifact carry (for a multipart upload, `<md5 of the part md5s>-<parts>`).
    """
    s3 = session(aws_profile, region).client(
        "s3", config=Config(signature_version="s3v4", retries={"mode": "standard"})
    )
    where = f"s3://{bucket}/{key}"
    try:
        with source.open("rb") as data:
            s3.upload_fileobj(data, bucket, key, Config=config, Callback=progress)
        head = s3.head_object(Bucket=bucket, Key=key)
    except NoCredentialsError:
        raise NotConfigured(f"no AWS credentials found ({CREDENTIAL_CHAIN})") from None
    except NoRegionError:
        raise NotConfigured("no AWS region: set `region` in the profile or AWS_REGION") from None
    except ClientError as error:
        raise ModelRepoClientError(f"cannot upload to {where}: {_aws_error(error)}") from None
    except BotoCoreError as error:
        raise ModelRepoClientError(f"cannot upload to {where}: {error}") from None
    return Uploaded(where, key, str(head["ETag"]), int(head["ContentLength"]))


# --- configure -----------------------------------------------------------------------------------


def stack_outputs(
    stack: str, *, region: str | None = None, aws_profile: str | None = None
) -> tuple[dict[str, str], str]:
    """A CloudFormation stack's outputs by key, and the region it was read in."""
    aws = session(aws_profile, region)
    try:
        found = aws.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except NoCredentialsError:
        raise NotConfigured(f"no AWS credentials found ({CREDENTIAL_CHAIN})") from None
    except NoRegionError:
        raise NotConfigured("no AWS region: pass --region or set AWS_REGION") from None
    except ClientError as error:
        raise ModelRepoClientError(f"cannot read the stack {stack!r}: {_aws_error(error)}") from None
    except BotoCoreError as error:
        raise ModelRepoClientError(f"cannot read the stack {stack!r}: {error}") from None
    outputs: list[dict[str, Any]] = list(found[0].get("Outputs", [])) if found else []
    return {str(o["OutputKey"]): str(o["OutputValue"]) for o in outputs}, str(aws.region_name)


def _aws_error(error: ClientError) -> str:
    details = error.response.get("Error", {})
    return f"{details.get('Code', 'error')}: {details.get('Message', '')}".rstrip(": ")

"""An independent SigV4 verifier, written from AWS's specification with hashlib and hmac only.

It shares no code with botocore (which the client signs with): `signature` rebuilds the canonical
request, the string to sign and the signing key from a request as it arrived, and
`tests/client/test_client_sigv4.py` first checks it against AWS's published SigV4 test vectors.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)


def _encode(text: str) -> str:
    """URI-encode every byte but the unreserved characters A-Z a-z 0-9 - _ . ~"""
    return quote(text, safe="-_.~")


def canonical_uri(raw_path: str, *, double_encode: bool) -> str:
    """The path as sent (encoded once); every service but S3 encodes it once more."""
    path = raw_path or "/"
    if not double_encode:
        return path
    return "/".join(_encode(segment) for segment in path.split("/"))


def canonical_query(raw_query: str) -> str:
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        name, _, value = part.partition("=")
        pairs.append((_encode(unquote(name)), _encode(unquote(value))))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed: list[str],
    payload: bytes,
    *,
    double_encode: bool = True,
) -> str:
    lines = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(raw_path, double_encode=double_encode),
            canonical_query(raw_query),
            lines,
            ";".join(signed),
            hashlib.sha256(payload).hexdigest(),
        ]
    )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signature(secret: str, amz_date: str, region: str, service: str, request: str) -> str:
    """The signature of a canonical request."""
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(request.encode("utf-8")).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), amz_date[:8]), region), service), "aws4_request")
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    signed_headers: tuple[str, ...] = ()
    region: str = ""
    service: str = ""


def verify(
    method: str,
    target_path: str,
    target_query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    credentials: Mapping[str, str],
    token: str | None = None,
    double_encode: bool = True,
) -> Verdict:
    """Whether a received request carries a valid SigV4 signature by one of `credentials` (key -> secret)."""
    found = AUTHORIZATION.match(headers.get("authorization", ""))
    if found is None:
        return Verdict(False, "no SigV4 Authorization header")
    secret = credentials.get(found["key"])
    if secret is None:
        return Verdict(False, f"unknown access key {found['key']}")
    amz_date = headers.get("x-amz-date", "")
    if amz_date[:8] != found["date"]:
        return Verdict(False, "X-Amz-Date and the credential scope disagree")
    signed = found["signed"].split(";")
    if signed != sorted(signed) or "host" not in signed or "x-amz-date" not in signed:
        return Verdict(False, f"signed headers {signed} must be sorted and include host and x-amz-date")
    if token is not None and (headers.get("x-amz-security-token") != token or "x-amz-security-token" not in signed):
        return Verdict(False, "the session token is missing, wrong or unsigned")
    if any(name not in headers for name in signed):
        return Verdict(False, "a signed header is missing")
    request = canonical_request(method, target_path, target_query, headers, signed, body, double_encode=double_encode)
    expected = signature(secret, amz_date, found["region"], found["service"], request)
    if not hmac.compare_digest(expected, found["signature"]):
        return Verdict(False, "signature mismatch")
    return Verdict(True, "ok", tuple(signed), found["region"], found["service"])

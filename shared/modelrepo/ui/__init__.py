"""The registry's web page: static files shipped in this package, served by the core's routes.

Every host answers the same bytes through `modelrepo.api` (`GET /` and `GET /api/ui/` for the page,
`GET /api/ui/{asset}` for its scripts and styles), so there is nothing to build and nothing fetched
from anywhere else at run time. The page is plain ES modules that render every value with DOM text
nodes; the headers below (a strict Content-Security-Policy among them) are what lets a browser hold
it to that: no inline script or style, no other origin, no framing.
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["ASSET_PATTERN", "CONTENT_SECURITY_POLICY", "Asset", "asset", "page", "security_headers"]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# File names the asset route accepts: flat, lower case, one known extension (nothing else is looked up).
ASSET_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,63}\.(?:js|css|svg)")
MEDIA = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
# Where the page's files are, relative to the page: the HTML is the same document at every
# address it is served from, only the way to its scripts differs.
UI_PATH = "/api/ui/"
PLACEHOLDER = "./%UI%/"


@dataclass(frozen=True)
class Asset:
    body: bytes
    media: str
    etag: str


def security_headers() -> dict[str, str]:
    """What every answer of the page carries; the policy matters on the HTML, the rest on all."""
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",  # revalidated (ETag) each time: a new release is never stale
    }


def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def _asset(body: bytes, media: str) -> Asset:
    return Asset(body, media, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


@functools.cache
def _assets() -> dict[str, Asset]:
    """Every servable file of the package, read once (a few KiB): names never reach the file system."""
    found: dict[str, Asset] = {}
    for entry in resources.files(__name__).iterdir():
        if entry.is_file() and ASSET_PATTERN.fullmatch(entry.name):
            found[entry.name] = _asset(entry.read_bytes(), MEDIA[posixpath.splitext(entry.name)[1]])
    return found


def asset(name: str) -> Asset | None:
    """A script, style sheet or icon of the page, or None if the package has no such file."""
    return _assets().get(name)


@functools.cache
def page(path: str) -> Asset:
    """The HTML for a request of `path` (`/` or `/api/ui/`), its links relative to it, so
    that a stage or route prefix in front of the path (API Gateway, Azure) changes nothing."""
    directory = path if path.endswith("/") else posixpath.dirname(path) + "/"
    relative = posixpath.relpath(UI_PATH, directory)
    prefix = "" if relative == "." else relative + "/"
    html = _read("index.html").decode("utf-8").replace(PLACEHOLDER, "./" + prefix)
    return _asset(html.encode("utf-8"), MEDIA[".html"])

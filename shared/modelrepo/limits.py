"""Every limit and pattern that the model, the API, the OpenAPI document and the CLI share.

A rule written in two places drifts; each number here is the one home of its rule. Modules that
check or describe a limit import it from here, and the parsers below are used by every entry point
(path segments, query strings, CLI arguments) so that they all refuse the same inputs the same way.
"""

from __future__ import annotations

import re

from modelrepo.errors import InvalidInput

# --- ids and names -------------------------------------------------------------------------------

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TARGET_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,31}")
# `<runId>~<26 base32 characters>`: locates the artifact's row without another lookup.
RUN_ARTIFACT_ID_PATTERN = re.compile(ID_PATTERN.pattern + r"~[a-z2-7]{26}")
MAX_RUN_ARTIFACT_ID_CHARS = 300
TAG_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
MAX_NAME_BYTES = 1024

# --- free text -----------------------------------------------------------------------------------

MAX_ACTOR_CHARS = 128
MAX_DESCRIPTION_CHARS = 4096
MAX_TAG_VALUE_CHARS = 512
MAX_TAGS = 50
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_COMMENT_CHARS = 1024  # an approval's comment, a deletion's reason

# --- version metadata ----------------------------------------------------------------------------

# Metric and parameter names as MLflow allows them (letters, digits, and `_ - . : /` and spaces).
METADATA_KEY_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-.:/ ]{0,249}")
MAX_METRICS = 200
MAX_PARAMS = 200
MAX_PARAM_VALUE_CHARS = 6000
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_DATASETS = 50
MAX_URI_CHARS = 2048
MAX_SOURCE_COMMIT_CHARS = 128

# --- folder versions -----------------------------------------------------------------------------

MAX_VERSION_FILES = 10_000
MAX_VERSION_BYTES = 1 << 40  # 1 TiB

# --- numbers -------------------------------------------------------------------------------------

# Versions and event sequences are stored as ten-digit inverted or padded row keys.
MAX_NUMBER = 9_999_999_999
VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,9}")
SEQUENCE_PATTERN = re.compile(r"0|[1-9][0-9]{0,9}")

# --- listings ------------------------------------------------------------------------------------

DEFAULT_PAGE = 50
MAX_PAGE = 1000
CURSOR_PATTERN = re.compile(r"[A-Za-z0-9_-]*")

# --- requests ------------------------------------------------------------------------------------

# A registration may carry a signature of MAX_SIGNATURE_BYTES and as much again of other metadata.
DEFAULT_MAX_BODY_BYTES = 256 * 1024


def parse_version(raw: str) -> int:
    """A version number as the API and the CLI accept it: 1 to MAX_NUMBER, ASCII digits, no sign."""
    if not isinstance(raw, str) or not VERSION_PATTERN.fullmatch(raw) or int(raw) > MAX_NUMBER:
        raise InvalidInput(f"version {raw!r} is invalid: use a whole number from 1 to {MAX_NUMBER}")
    return int(raw)


def check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_NUMBER:
        raise InvalidInput(f"version must be a whole number from 1 to {MAX_NUMBER}")
    return version


def parse_limit(raw: str | None) -> int:
    """A page size from a query string or a command line; None gives the default."""
    if raw is None:
        return DEFAULT_PAGE
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit():
        raise InvalidInput(f"limit {raw!r} is invalid: use a whole number from 1 to {MAX_PAGE}")
    return check_limit(int(raw))


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return limit


def parse_sequence(raw: str | None) -> int:
    """The `after` position of an event listing: 0 (from the start) to MAX_NUMBER."""
    if raw is None:
        return 0
    if not isinstance(raw, str) or not SEQUENCE_PATTERN.fullmatch(raw) or int(raw) > MAX_NUMBER:
        raise InvalidInput(f"after {raw!r} is invalid: use an event sequence number from 0 to {MAX_NUMBER}")
    return int(raw)


def check_idempotency_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise InvalidInput(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable characters")
    return key


def check_sha256(digest: str) -> str:
    if not isinstance(digest, str) or not SHA256_PATTERN.fullmatch(digest):
        raise InvalidInput(f"{digest!r} is not a sha256 hex digest")
    return digest

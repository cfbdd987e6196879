"""What modelrepo knows about: ids, the bucket layout, and the records it keeps. No I/O here."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from pydantic.alias_generators import to_camel

from modelrepo.errors import InvalidInput
from modelrepo.limits import (
    ID_PATTERN,
    MAX_ACTOR_CHARS,
    MAX_COMMENT_CHARS,
    MAX_DATASETS,
    MAX_DESCRIPTION_CHARS,
    MAX_METRICS,
    MAX_NAME_BYTES,
    MAX_NUMBER,
    MAX_PARAM_VALUE_CHARS,
    MAX_PARAMS,
    MAX_RUN_ARTIFACT_ID_CHARS,
    MAX_SIGNATURE_BYTES,
    MAX_SOURCE_COMMIT_CHARS,
    MAX_TAG_VALUE_CHARS,
    MAX_URI_CHARS,
    METADATA_KEY_PATTERN,
    RUN_ARTIFACT_ID_PATTERN,
    TAG_KEY_PATTERN,
    TARGET_PATTERN,
)

# Characters that reorder displayed text; a name containing them can look like a different name.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"{what} {value!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def check_experiment_id(value: str) -> str:
    return _check_id(value, "experimentId")


def check_run_id(value: str) -> str:
    return _check_id(value, "runId")


def check_target(value: str) -> str:
    if not isinstance(value, str) or not TARGET_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"target {value!r} is invalid: use 1-32 lowercase letters, digits or '-', starting with a letter"
        )
    return value


def check_tag_key(value: str) -> str:
    if not isinstance(value, str) or not TAG_KEY_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"tag key {value!r} is invalid: use 1-128 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit"
        )
    return value


# Control characters (Unicode category Cc, fixed by the standard), surrogates (Cs: not valid
# UTF-8) and bidirectional controls: one search per text, since actor names are checked on every
# request.
UNSAFE_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff" + "".join(sorted(BIDI_CONTROLS)) + "]")


def _unsafe_character(text: str) -> str | None:
    """Name the first character that must not appear in stored text, if any."""
    found = UNSAFE_CHARACTER.search(text)
    if found is None:
        return None
    char = found.group()
    if char in BIDI_CONTROLS:
        return f"bidirectional control character U+{ord(char):04X}"
    if unicodedata.category(char) == "Cs":
        return "a character that is not valid UTF-8"
    return f"control character U+{ord(char):04X}"


def _check_text(value: str, what: str, max_chars: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    if not allow_empty and not value.strip():
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > max_chars:
        raise InvalidInput(f"{what} is longer than {max_chars} characters")
    problem = _unsafe_character(value.replace("\n", "").replace("\t", ""))
    if problem:
        raise InvalidInput(f"{what} contains a {problem}")
    return value


def check_actor(value: str) -> str:
    _check_text(value, "the actor name", MAX_ACTOR_CHARS)
    if "\n" in value or "\t" in value:
        raise InvalidInput("the actor name must be one line")
    return value


def check_description(value: str) -> str:
    return _check_text(value, "description", MAX_DESCRIPTION_CHARS, allow_empty=True)


def check_tag_value(value: str) -> str:
    return _check_text(value, "tag value", MAX_TAG_VALUE_CHARS, allow_empty=True)


def check_comment(value: str) -> str:
    return _check_text(value, "comment", MAX_COMMENT_CHARS, allow_empty=True)


def _check_metadata_key(key: object, what: str) -> str:
    if not isinstance(key, str) or not METADATA_KEY_PATTERN.fullmatch(key):
        raise InvalidInput(
            f"{what} name {key!r} is invalid: use 1-250 letters, digits, spaces or '_-.:/', "
            "starting with a letter, digit or '_'"
        )
    return key


def check_metrics(metrics: dict[str, float]) -> dict[str, float]:
    if not isinstance(metrics, dict):
        raise InvalidInput("metrics must be an object of names to numbers")
    if len(metrics) > MAX_METRICS:
        raise InvalidInput(f"a version holds at most {MAX_METRICS} metrics, not {len(metrics)}")
    for key, value in metrics.items():
        _check_metadata_key(key, "metric")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInput(f"metric {key!r} must be a finite number")
    return metrics


def check_params(params: dict[str, str]) -> dict[str, str]:
    if not isinstance(params, dict):
        raise InvalidInput("params must be an object of names to strings")
    if len(params) > MAX_PARAMS:
        raise InvalidInput(f"a version holds at most {MAX_PARAMS} params, not {len(params)}")
    for key, value in params.items():
        _check_metadata_key(key, "param")
        _check_text(value, f"param {key!r}", MAX_PARAM_VALUE_CHARS, allow_empty=True)
    return params


def check_signature(signature: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(signature, dict):
        raise InvalidInput("signature must be a JSON object")
    size = len(json.dumps(signature, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_SIGNATURE_BYTES:
        raise InvalidInput(f"signature is {size} bytes of JSON, more than {MAX_SIGNATURE_BYTES}")
    return signature


def check_uri(value: str) -> str:
    _check_text(value, "dataset URI", MAX_URI_CHARS)
    parts = urlsplit(value)
    if not parts.scheme or any(c.isspace() for c in value):
        raise InvalidInput(f"dataset {value!r} is not a URI (scheme:..., no spaces)")
    return value


def check_source_commit(value: str) -> str:
    _check_text(value, "sourceCommit", MAX_SOURCE_COMMIT_CHARS)
    if any(c.isspace() for c in value):
        raise InvalidInput("sourceCommit must not contain spaces")
    return value


def check_artifact_name(name: str) -> str:
    """Return the name if it may be recorded as an artifact, else raise InvalidInput saying why."""
    if not name:
        raise InvalidInput("the artifact name is empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput("the artifact name is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise InvalidInput(f"the artifact name is {size} UTF-8 bytes, more than {MAX_NAME_BYTES}")
    if "\\" in name:
        raise InvalidInput("the artifact name contains a backslash")
    problem = _unsafe_character(name)
    if problem:
        raise InvalidInput(f"the artifact name contains a {problem}")
    for segment in name.split("/"):
        if segment == "":
            raise InvalidInput("the artifact name has an empty path segment ('//' or a leading or trailing '/')")
        if segment in (".", ".."):
            raise InvalidInput(f"the artifact name has a '{segment}' path segment")
    return name


@dataclass(frozen=True)
class ArtifactKey:
    """A bucket key that fits the layout `<experimentId>/<runId>/<artifactName>`."""

    experiment_id: str
    run_id: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.experiment_id}/{self.run_id}/{self.name}"

    @classmethod
    def parse(cls, key: str) -> ArtifactKey:
        parts = key.split("/", 2)
        if len(parts) < 3:
            raise InvalidInput(f"the key {key!r} does not fit the layout <experimentId>/<runId>/<artifactName>")
        experiment_id, run_id, name = parts
        return cls(check_experiment_id(experiment_id), check_run_id(run_id), check_artifact_name(name))


def _text_pattern(*, one_line: bool, required: bool) -> str:
    """The JSON Schema pattern of the text `_check_text` accepts (escapes, so ASCII-only source)."""
    controls = "\\x00-\\x1f" if one_line else "\\x00-\\x08\\x0b-\\x1f"
    bidi = "".join(f"\\u{ord(c):04x}" for c in sorted(BIDI_CONTROLS))
    forbidden = f"{controls}\\x7f-\\x9f{bidi}"
    if not required:
        return f"^[^{forbidden}]*$"
    return f"^[^{forbidden}]*[^\\s{forbidden}][^{forbidden}]*$"


def _string(**schema: Any) -> WithJsonSchema:
    """What the checks enforce, stated for OpenAPI (the checks themselves give the error text)."""
    return WithJsonSchema({"type": "string", **schema})


ExperimentId = Annotated[str, AfterValidator(check_experiment_id), _string(pattern=f"^{ID_PATTERN.pattern}$")]
RunId = Annotated[str, AfterValidator(check_run_id), _string(pattern=f"^{ID_PATTERN.pattern}$")]
RunArtifactId = Annotated[
    str, _string(pattern=f"^{RUN_ARTIFACT_ID_PATTERN.pattern}$", maxLength=MAX_RUN_ARTIFACT_ID_CHARS)
]
Target = Annotated[str, AfterValidator(check_target), _string(pattern=f"^{TARGET_PATTERN.pattern}$")]
Actor = Annotated[
    str,
    AfterValidator(check_actor),
    _string(minLength=1, maxLength=MAX_ACTOR_CHARS, pattern=_text_pattern(one_line=True, required=True)),
]
Description = Annotated[
    str,
    AfterValidator(check_description),
    _string(maxLength=MAX_DESCRIPTION_CHARS, pattern=_text_pattern(one_line=False, required=False)),
]
TagValue = Annotated[
    str,
    AfterValidator(check_tag_value),
    _string(maxLength=MAX_TAG_VALUE_CHARS, pattern=_text_pattern(one_line=False, required=False)),
]
Version = Annotated[int, Field(ge=1, le=MAX_NUMBER)]
Comment = Annotated[
    str,
    AfterValidator(check_comment),
    _string(maxLength=MAX_COMMENT_CHARS, pattern=_text_pattern(one_line=False, required=False)),
]
Metrics = Annotated[dict[str, float], AfterValidator(check_metrics), Field(max_length=MAX_METRICS)]
Params = Annotated[dict[str, str], AfterValidator(check_params), Field(max_length=MAX_PARAMS)]
Signature = Annotated[dict[str, Any], AfterValidator(check_signature)]
DatasetUri = Annotated[str, AfterValidator(check_uri), _string(minLength=1, maxLength=MAX_URI_CHARS)]
SourceCommit = Annotated[
    str, AfterValidator(check_source_commit), _string(minLength=1, maxLength=MAX_SOURCE_COMMIT_CHARS)
]


def describe_validation_error(error: ValidationError) -> str:
    """One line naming every field that is wrong and why (every host, the CLI and the client say
    it the same way; here, beside the models, so that reading settings needs no HTTP layer)."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "json_invalid":
            message = f"the body is not valid JSON ({item.get('ctx', {}).get('error', 'parse error')})"
        elif item["type"] == "model_type" or item["type"] == "model_attributes_type":
            message = "the body must be a JSON object"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


class Record(BaseModel):
    """Base of every record: camelCase on the wire, immutable in memory."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class RunArtifact(Record):
    run_artifact_id: str
    experiment_id: str
    run_id: str
    name: str
    key: str
    size: int
    etag: str
    sha256: str
    uploaded_at: datetime
    recorded_at: datetime
    vanished_at: datetime | None = None  # set by a sweep that found the object gone from the bucket


class Rejection(Record):
    """An object that was uploaded but cannot be an artifact, and why."""

    key: str
    reason: str
    size: int
    etag: str
    uploaded_at: datetime
    recorded_at: datetime


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class Approval(Record):
    """Whether a version may go where approval is required, who said so, when and why."""

    status: ApprovalStatus = ApprovalStatus.PENDING
    by: str | None = None
    at: datetime | None = None
    comment: str | None = None


class Lineage(Record):
    """Where a version came from: the code, the data, and free-form notes."""

    source_commit: SourceCommit | None = None
    datasets: list[DatasetUri] = Field(default_factory=list, max_length=MAX_DATASETS)
    notes: Description | None = None


class Tombstone(Record):
    """A deleted version: its number is never reused; its metadata and audit stay; its bytes go."""

    at: datetime
    by: str
    reason: str | None = None


class RegisteredModel(Record):
    experiment_id: str
    version: int
    run_artifact_id: str | None  # None for a folder version (its files are in its manifest)
    run_id: str
    artifact_name: str  # the artifact's name, or a folder version's prefix
    registered_by: str
    registered_at: datetime
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    sha256: str  # the artifact's, or a folder version's manifest's
    size: int  # bytes: the artifact's, or the sum of the folder's files
    files: int | None = None  # a folder version: how many files its manifest lists
    approval: Approval = Field(default_factory=Approval)
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    signature: dict[str, Any] | None = None
    lineage: Lineage | None = None
    archived_at: datetime | None = None
    archived_by: str | None = None
    deleted: Tombstone | None = None

    @property
    def live(self) -> bool:
        """Neither archived nor deleted: what `latest` and default listings show."""
        return self.deleted is None and self.archived_at is None


class Experiment(Record):
    """An experiment is a model: its versions, description and tags, and when it last changed."""

    experiment_id: str
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    latest_version: int | None = None  # the newest version that is neither archived nor deleted
    version_count: int = 0  # versions registered and not deleted
    created_at: datetime | None = None
    updated_at: datetime | None = None


class TargetPolicy(Record):
    """A deployment target's rules: versions must be approved before they may go there."""

    experiment_id: str
    target: str
    require_approval: bool = False
    updated_by: str | None = None
    updated_at: datetime | None = None


class Deployment(Record):
    experiment_id: str
    target: str
    version: int
    deployed_by: str
    deployed_at: datetime
    previous_version: int | None = None


class AuditEntry(Record):
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any] = Field(default_factory=dict)
    sequence: int | None = None  # the change's event in the partition's event sequence
    principal: str | None = None  # who the host authenticated, beside the actor the request named


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a listing; `next_cursor` is None on the last page."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    items: list[T]
    next_cursor: str | None = None

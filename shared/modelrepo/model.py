"""What modelrepo knows about: ids, the bucket layout, and the records it keeps. No I/O here."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from modelrepo.errors import InvalidInput
from modelrepo.limits import (
    ID_PATTERN,
    MAX_ACTOR_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_NAME_BYTES,
    MAX_NUMBER,
    MAX_RUN_ARTIFACT_ID_CHARS,
    MAX_TAG_VALUE_CHARS,
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


def _unsafe_character(text: str) -> str | None:
    """Name the first character that must not appear in stored text, if any."""
    for char in text:
        if unicodedata.category(char) == "Cc":
            return f"control character U+{ord(char):04X}"
        if char in BIDI_CONTROLS:
            return f"bidirectional control character U+{ord(char):04X}"
        if unicodedata.category(char) == "Cs":
            return "a character that is not valid UTF-8"
    return None


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


class RegisteredModel(Record):
    experiment_id: str
    version: int
    run_artifact_id: str
    run_id: str
    artifact_name: str
    registered_by: str
    registered_at: datetime
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    sha256: str
    size: int


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


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a listing; `next_cursor` is None on the last page."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    items: list[T]
    next_cursor: str | None = None

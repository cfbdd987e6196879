"""The one neutral fact every host turns its upload notifications into, and how two are ordered."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from modelrepo.ports import ObjectInfo


@dataclass(frozen=True)
class ObjectCreated:
    """An object version appeared in the uploads bucket.

    `sequencer` orders events for one key when the source provides it (S3, Event Grid, the local
    watcher); `sha256` is set when the source already computed it, which saves a second read.
    """

    key: str
    etag: str
    size: int
    uploaded_at: datetime
    sequencer: str | None = None
    sha256: str | None = None
    actor: str = "upload-event"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "uploaded_at": self.uploaded_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObjectCreated:
        return cls(**{**data, "uploaded_at": datetime.fromisoformat(data["uploaded_at"])})

    @classmethod
    def from_object(cls, info: ObjectInfo, actor: str) -> ObjectCreated:
        return cls(
            key=info.key,
            etag=info.etag,
            size=info.size,
            uploaded_at=info.modified_at,
            sequencer=info.sequencer,
            sha256=info.sha256,
            actor=actor,
        )


def happened_after(a_sequencer: str | None, a_time: datetime, b_sequencer: str | None, b_time: datetime) -> bool:
    """Whether upload A is strictly newer than upload B of the same key."""
    if a_sequencer and b_sequencer:
        # S3's rule: compare as hex strings after right-padding the shorter with zeros.
        width = max(len(a_sequencer), len(b_sequencer))
        return a_sequencer.upper().ljust(width, "0") > b_sequencer.upper().ljust(width, "0")
    return a_time > b_time

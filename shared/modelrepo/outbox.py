"""The outbox: every change is a CloudEvent, written in the same atomic write as the change.

An event row (`evt~<sequence>`) holds the CloudEvent (structured JSON mode, CloudEvents 1.0) and the
audit entry of the change, so the audit trail and the events can never disagree. Its `sequence`
extension counts the events of one partition (an experiment, or a run for artifact events) 1, 2,
3, ... without gaps: the counter row that holds it is part of every change's transaction. A
consumer dedupes by `id` (the same on every redelivery) and detects gaps and order by `sequence`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from modelrepo.model import AuditEntry

TYPE_PREFIX = "io.modelrepo."
ARTIFACT_RECORDED = TYPE_PREFIX + "artifact.recorded"
ARTIFACT_VANISHED = TYPE_PREFIX + "artifact.vanished"
VERSION_REGISTERED = TYPE_PREFIX + "version.registered"
VERSION_TAGGED = TYPE_PREFIX + "version.tagged"
VERSION_UNTAGGED = TYPE_PREFIX + "version.untagged"
VERSION_APPROVAL_CHANGED = TYPE_PREFIX + "version.approval_changed"
VERSION_UPDATED = TYPE_PREFIX + "version.updated"
VERSION_ARCHIVED = TYPE_PREFIX + "version.archived"
VERSION_RESTORED = TYPE_PREFIX + "version.restored"
VERSION_DELETED = TYPE_PREFIX + "version.deleted"
DEPLOYMENT_CREATED = TYPE_PREFIX + "deployment.created"
DEPLOYMENT_REMOVED = TYPE_PREFIX + "deployment.removed"
TARGET_UPDATED = TYPE_PREFIX + "target.updated"
EXPERIMENT_UPDATED = TYPE_PREFIX + "experiment.updated"

EVENT_TYPES: tuple[str, ...] = (
    ARTIFACT_RECORDED,
    ARTIFACT_VANISHED,
    VERSION_REGISTERED,
    VERSION_TAGGED,
    VERSION_UNTAGGED,
    VERSION_APPROVAL_CHANGED,
    VERSION_UPDATED,
    VERSION_ARCHIVED,
    VERSION_RESTORED,
    VERSION_DELETED,
    DEPLOYMENT_CREATED,
    DEPLOYMENT_REMOVED,
    TARGET_UPDATED,
    EXPERIMENT_UPDATED,
)


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode, with the extensions `sequence`, `actor` and,
    where the host authenticated the caller, `principal`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]
    sequence: int
    actor: str
    principal: str | None = None  # who the host authenticated, where it knows

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def event_of(row: dict[str, Any] | Any) -> CloudEvent:
    """The CloudEvent kept in an event row's document."""
    return CloudEvent.model_validate(row["event"])


def audit_entry_of(row: dict[str, Any] | Any) -> AuditEntry:
    """The audit entry kept in an event row's document: who did what, when, to what."""
    event = row["event"]
    return AuditEntry(
        at=event["time"],
        actor=event["actor"],
        action=row["action"],
        subject=row["subject"],
        details=row.get("details", {}),
        sequence=event["sequence"],
        principal=event.get("principal"),
    )

"""How the core lays its records out in a MetadataStore: partitions, row keys and documents.

Keys use only `[A-Za-z0-9._~-]`, valid on DynamoDB, Azure Table and SQLite alike. Rows that are
listed newest first carry an inverted number so that every backend can list them ascending.

Partition `exp~<experimentId>`: the counter (latest version and event sequence), the versions,
idempotency keys, deployments and their history, and the experiment's events (its outbox and its
audit trail in one). One partition, so a registration (counter + version + event) is one atomic
write on every backend.
Partition `run~<runId>`: the run's artifacts (one row per object version), the current version of
each key, a counter of the run's events, and the events. Partition `rejections`: uploads that are
not artifacts. Partitions `runs` and `experiments`: one row per run or experiment ever written, so
sweeps and dispatchers find every partition. Partition `sweeps`: where a resumable sweep stands.
"""

from __future__ import annotations

import base64
import hashlib

from modelrepo.errors import InvalidInput
from modelrepo.limits import MAX_NUMBER, RUN_ARTIFACT_ID_PATTERN
from modelrepo.ports import Put

COUNTER_ROW = "counter"
VERSION_PREFIX = "ver~"
IDEMPOTENCY_PREFIX = "idem~"
DEPLOYMENT_PREFIX = "dep~"
HISTORY_PREFIX = "hist~"
TARGET_PREFIX = "tgt~"
EVENT_PREFIX = "evt~"
DISPATCH_PREFIX = "dsp~"
ARTIFACT_PREFIX = "art~"
CURRENT_PREFIX = "cur~"
REJECTION_PREFIX = "rej~"
REJECTIONS_PARTITION = "rejections"
RUNS_PARTITION = "runs"
RUN_PREFIX = "run~"
EXPERIMENTS_PARTITION = "experiments"
EXPERIMENT_PREFIX = "exp~"
SWEEPS_PARTITION = "sweeps"
SEARCH_PARTITION = "search"
SEARCH_TAG_PREFIX = "tag~"
SEARCH_STATUS_PREFIX = "status~"
SEARCH_MANIFEST_PREFIX = "ver~"
# The partitions of changes: one per experiment and one per run.
EXPERIMENT_PARTITION_PREFIX = "exp~"
RUN_PARTITION_PREFIX = "run~"


def _digest32(text: str) -> str:
    """A 130-bit, lowercase base32 fingerprint: URL-safe, key-safe, collision-free in practice."""
    raw = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return base64.b32encode(raw).decode("ascii")[:26].lower()


def _inverted(number: int) -> str:
    return f"{MAX_NUMBER - number:010d}"


def experiment_partition(experiment_id: str) -> str:
    return EXPERIMENT_PARTITION_PREFIX + experiment_id


def run_partition(run_id: str) -> str:
    return RUN_PARTITION_PREFIX + run_id


def run_index_put(run_id: str) -> Put:
    """Idempotent: written before a run's first artifact, so every recorded run is listed."""
    return Put(RUNS_PARTITION, RUN_PREFIX + run_id, {"runId": run_id}, if_absent=True)


def experiment_index_put(experiment_id: str) -> Put:
    """Idempotent: written before an experiment's first change, so every experiment is listed."""
    return Put(
        EXPERIMENTS_PARTITION, experiment_index_row(experiment_id), {"experimentId": experiment_id}, if_absent=True
    )


def experiment_index_row(experiment_id: str) -> str:
    return EXPERIMENT_PREFIX + experiment_id


def is_experiment_partition(partition: str) -> bool:
    return partition.startswith(EXPERIMENT_PARTITION_PREFIX)


def index_put(partition: str) -> Put | None:
    """The index row that lists a partition of changes (an experiment or a run), if it has one."""
    if is_experiment_partition(partition):
        return experiment_index_put(partition.removeprefix(EXPERIMENT_PARTITION_PREFIX))
    if partition.startswith(RUN_PARTITION_PREFIX):
        return run_index_put(partition.removeprefix(RUN_PARTITION_PREFIX))
    return None


def version_row(version: int) -> str:
    return VERSION_PREFIX + _inverted(version)


def idempotency_row(idempotency_key: str) -> str:
    return IDEMPOTENCY_PREFIX + _digest32(idempotency_key)


def deployment_row(target: str) -> str:
    return DEPLOYMENT_PREFIX + target


def history_prefix(target: str) -> str:
    return f"{HISTORY_PREFIX}{target}~"


def history_row(target: str, sequence: int) -> str:
    return history_prefix(target) + _inverted(sequence)


def event_row(sequence: int) -> str:
    """Events are listed oldest first, so their rows count up."""
    return f"{EVENT_PREFIX}{sequence:010d}"


def target_row(target: str) -> str:
    return TARGET_PREFIX + target


def dispatch_row(subscriber: str) -> str:
    """Where a dispatcher stands in one partition's events."""
    return DISPATCH_PREFIX + subscriber


def current_row(experiment_id: str, name: str) -> str:
    return CURRENT_PREFIX + _digest32(f"{experiment_id}/{name}")


def rejection_row(key: str, etag: str) -> str:
    return REJECTION_PREFIX + _digest32(f"{key}\0{etag}")


def run_artifact_id(experiment_id: str, run_id: str, name: str, etag: str) -> str:
    """Stable for one object version: the same key and ETag always give the same id."""
    fingerprint = _digest32(f"{experiment_id}/{run_id}/{name}\0{etag}")
    return f"{run_id}~{fingerprint}"


def locate_run_artifact(artifact_id: str) -> tuple[str, str]:
    """(partition, row) of a runArtifactId, or InvalidInput if it is not one of ours."""
    if not isinstance(artifact_id, str) or not RUN_ARTIFACT_ID_PATTERN.fullmatch(artifact_id):
        raise InvalidInput(f"runArtifactId {artifact_id!r} is malformed")
    run_id, _, fingerprint = artifact_id.rpartition("~")
    return run_partition(run_id), ARTIFACT_PREFIX + fingerprint


def search_tag_prefix(key: str, value: str) -> str:
    """Index rows of versions carrying tag key=value (hashed: tag values are free text)."""
    return f"{SEARCH_TAG_PREFIX}{_digest32(f'{key}={value}')}~"


def search_status_prefix(status: str) -> str:
    return f"{SEARCH_STATUS_PREFIX}{status}~"


def search_row(prefix: str, experiment_id: str, version: int) -> str:
    return f"{prefix}{experiment_id}~{_inverted(version)}"


def search_manifest_row(experiment_id: str, version: int) -> str:
    """Which index rows a version has, and the change of the version they reflect."""
    return f"{SEARCH_MANIFEST_PREFIX}{experiment_id}~{_inverted(version)}"


def encode_cursor(row: str) -> str:
    return base64.urlsafe_b64encode(row.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, prefix: str) -> str:
    """The row a cursor continues after; it must belong to the listing it is used with."""
    try:
        row = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is invalid: pass back the nextCursor of a previous page") from None
    if not row.startswith(prefix):
        raise InvalidInput("cursor is invalid: it belongs to a different listing")
    return row

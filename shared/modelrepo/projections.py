"""The index partitions, kept from the outbox: the experiments listing and cross-experiment search.

The index is one more subscriber of the outbox (`Indexer`, subscriber `index`), driven by the same
`Dispatcher` as any other: per partition it reads the events after its cursor and brings the index
rows up to date with the records those events changed. It re-reads each record rather than trusting
the event, and writes guarded by the record's own event sequence, so a slow or repeated pass never
puts an older state over a newer one. The index therefore follows the records (within the
dispatcher's delay: a second on the local runtime; the stream or queue on the clouds) and a crash
between a commit and its projection is repaired by the next sweep.

It follows experiments' partitions only: an experiment that has only artifacts so far is listed by
the upload that brings it in (`modelrepo.commands.uploads`), so runs' events are not its business.

Rows, in partition `experiments`: `exp~<id>` with the experiment's summary. In partition `search`:
`tag~<hash of key=value>~<id>~<version>` and `status~<approval>~<id>~<version>` for every version
that is neither archived nor deleted, and `ver~<id>~<version>`, the manifest of a version's rows
(rows a version no longer has stay as dead rows that searches skip).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from modelrepo import tables
from modelrepo.commands.experiments import summary
from modelrepo.dispatch import DeliveryFailed
from modelrepo.errors import ConditionFailed, InvalidInput, StorageError
from modelrepo.model import ApprovalStatus, Page, RegisteredModel, check_tag_key, check_tag_value
from modelrepo.outbox import CloudEvent
from modelrepo.ports import MAX_WRITES_PER_TRANSACTION, Item, MetadataStore, Put, Write
from modelrepo.unit_of_work import Context, filtered_page

SUBSCRIBER = "index"
ATTEMPTS = 5
MAX_WRITES = MAX_WRITES_PER_TRANSACTION - 1  # a manifest beside them stays within one transaction


class Indexer:
    """A `Publisher` that projects events into the index partitions."""

    subscriber = SUBSCRIBER
    follows_runs = False

    def __init__(self, metadata: MetadataStore) -> None:
        self.metadata = metadata

    def publish(self, events: Sequence[CloudEvent]) -> None:
        experiments: set[str] = set()
        versions: set[tuple[str, int]] = set()
        for event in events:
            kind, _, rest = event.subject.partition("/")
            if kind == "experiments":
                experiment_id = rest.split("/", 1)[0]
                experiments.add(experiment_id)
                if "/versions/" in event.subject:
                    versions.add((experiment_id, int(event.data["version"])))
        try:
            for experiment_id in sorted(experiments):
                self._project_experiment(experiment_id)
            for experiment_id, version in sorted(versions):
                self._project_version(experiment_id, version)
        except StorageError as error:
            raise DeliveryFailed(f"the index could not be written: {error.detail}") from None

    # --- the experiments listing ---

    def _project_experiment(self, experiment_id: str) -> None:
        partition = tables.experiment_partition(experiment_id)
        row = tables.experiment_index_row(experiment_id)
        for _ in range(ATTEMPTS):
            counter = self.metadata.get(partition, tables.COUNTER_ROW)
            if counter is None:
                return  # nothing counted yet: the listing stays as the first upload wrote it
            indexed = self.metadata.get(tables.EXPERIMENTS_PARTITION, row)
            sequence = int(counter.data.get("sequence", 0))
            if indexed is not None and "experiment" in indexed.data and indexed.data.get("sequence", 0) >= sequence:
                return
            described = summary(experiment_id, counter.data)
            document = {"experimentId": experiment_id, "experiment": described.to_json(), "sequence": sequence}
            if _guarded_write(self.metadata, tables.EXPERIMENTS_PARTITION, row, indexed, document):
                return
        raise DeliveryFailed(f"the listing of {experiment_id!r} kept changing while it was projected")

    # --- search ---

    def _project_version(self, experiment_id: str, version: int) -> None:
        manifest_row = tables.search_manifest_row(experiment_id, version)
        for _ in range(ATTEMPTS):
            item = self.metadata.get(tables.experiment_partition(experiment_id), tables.version_row(version))
            manifest = self.metadata.get(tables.SEARCH_PARTITION, manifest_row)
            if item is None:
                return
            sequence = int(item.data.get("sequence", 0))
            if manifest is not None and manifest.data.get("sequence", -1) >= sequence:
                return
            model = RegisteredModel.model_validate(item.data["model"])
            wanted = index_rows(model)
            had = set(manifest.data["rows"]) if manifest is not None else set()
            # Rows no longer wanted are overwritten as dead ({"model": null}) rather than deleted: a
            # put never fails on a missing row, so every write can share the manifest's guard.
            writes: list[Write] = [
                Put(tables.SEARCH_PARTITION, row, {"model": None}) for row in sorted(had - set(wanted))
            ]
            writes += [Put(tables.SEARCH_PARTITION, row, {"model": model.to_json()}) for row in wanted]
            chunks = [writes[i : i + MAX_WRITES] for i in range(0, len(writes), MAX_WRITES)] or [[]]
            for chunk in chunks[:-1]:  # only when more than MAX_WRITES rows change at once
                self.metadata.transact(chunk)
            document = {"rows": wanted, "sequence": sequence}
            if _guarded_write(self.metadata, tables.SEARCH_PARTITION, manifest_row, manifest, document, chunks[-1]):
                return
        raise DeliveryFailed(f"version {version} of {experiment_id!r} kept changing while it was projected")


def index_rows(model: RegisteredModel) -> list[str]:
    """The search rows a version has: one per tag and one for its approval; none once archived or deleted."""
    if not model.live:
        return []
    experiment_id, version = model.experiment_id, model.version
    rows = [tables.search_row(tables.search_tag_prefix(k, v), experiment_id, version) for k, v in model.tags.items()]
    rows.append(tables.search_row(tables.search_status_prefix(model.approval.status.value), experiment_id, version))
    return rows


def _guarded_write(
    metadata: MetadataStore,
    partition: str,
    row: str,
    current: Item | None,
    document: dict[str, Any],
    alongside: Iterable[Write] = (),
) -> bool:
    """Write `document` only over what was read; False if someone else wrote it meanwhile."""
    put = (
        Put(partition, row, document, if_match=current.etag)
        if current
        else Put(partition, row, document, if_absent=True)
    )
    try:
        metadata.transact([*alongside, put])
    except ConditionFailed:
        return False
    return True


def search_models(
    ctx: Context,
    *,
    tags: Sequence[tuple[str, str]] = (),
    status: ApprovalStatus | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page[RegisteredModel]:
    """Versions of every experiment with these tags and approval status, from the search index
    (versions neither archived nor deleted). The first tag (else the status) picks the index rows;
    further conditions are judged on them, at most SCAN_BUDGET rows a page."""
    for key, value in tags:
        check_tag_key(key)
        check_tag_value(value)
    if tags:
        prefix = tables.search_tag_prefix(*tags[0])
    elif status is not None:
        prefix = tables.search_status_prefix(ApprovalStatus(status).value)
    else:
        raise InvalidInput("search needs a tag.<key>=<value> or a status")

    def keep(item: Item) -> bool:
        model = item.data["model"]
        if model is None:  # a row the version no longer has
            return False
        if status is not None and model["approval"]["status"] != ApprovalStatus(status).value:
            return False
        return all(model["tags"].get(key) == value for key, value in tags[1:])

    items, next_cursor = filtered_page(ctx.metadata, tables.SEARCH_PARTITION, prefix, limit, cursor, keep)
    return Page[RegisteredModel](
        items=[RegisteredModel.model_validate(i.data["model"]) for i in items], next_cursor=next_cursor
    )


def indexer_listener(metadata: MetadataStore) -> Callable[[str], None]:
    """Project a partition's new events right after its commit (for processes without a worker)."""
    from modelrepo.dispatch import Dispatcher

    dispatcher = Dispatcher(metadata, Indexer(metadata))

    def project(partition: str) -> None:
        dispatcher.drain(partition)

    return project

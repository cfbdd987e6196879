"""One measurement of scenario 4 in a process of its own, so that its peak RSS is its own.

`python -m bench.large_worker MODE ROOT KEY` prints one JSON line: seconds, bytes, peak RSS and
the RSS the process had before the measured work (interpreter and imports).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from modelrepo.adapters.folder import FolderArtifactStore
from modelrepo.adapters.sqlite import SqliteMetadataStore
from modelrepo.events import ObjectCreated
from modelrepo.ports import iter_chunks
from modelrepo.service import ModelRepository

MODES = ("raw", "record-event", "record-drop", "register")


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that across exec from the
    parent, so a child would report the benchmark's own footprint."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(mode: str, root: Path, key: str) -> dict[str, float]:
    uploads, registry = root / "artifacts", root / "registry"
    baseline = _peak_rss_mb()
    size = (uploads / key).stat().st_size
    if mode == "raw":
        began = time.perf_counter()
        digest = hashlib.sha256()
        with (uploads / key).open("rb") as stream:
            for chunk in iter_chunks(stream):
                digest.update(chunk)
        seconds = time.perf_counter() - began
    else:
        repo = ModelRepository(
            FolderArtifactStore(uploads, registry), SqliteMetadataStore(root / f"metadata-{mode}.sqlite3")
        )
        if mode == "record-drop":
            # What the drop-folder watcher does: head() digests the file (the folder's ETag is its
            # sha256), and the event carries that digest to the core.
            began = time.perf_counter()
            info = repo.artifacts.head(key)
            assert info is not None
            result = repo.record_artifact(ObjectCreated.from_object(info, "bench"))
            seconds = time.perf_counter() - began
        else:
            info = repo.artifacts.head(key)
            assert info is not None
            event = ObjectCreated.from_object(info, "bench")
            if mode == "record-event":
                # What a cloud host does: its notification has no digest, so the core streams the
                # object through ArtifactStore.open and digests it.
                began = time.perf_counter()
                result = repo.record_artifact(replace(event, sha256=None))
                seconds = time.perf_counter() - began
            else:
                result = repo.record_artifact(event)
                assert result.artifact is not None
                began = time.perf_counter()
                repo.register_model(result.artifact.experiment_id, result.artifact.run_artifact_id, "bench")
                seconds = time.perf_counter() - began
        assert result.artifact is not None and result.artifact.size == size, result
        repo.metadata.close()
    return {"seconds": seconds, "bytes": size, "peak_rss_mb": _peak_rss_mb(), "baseline_rss_mb": baseline}


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in MODES:
        sys.exit(f"usage: python -m bench.large_worker {{{','.join(MODES)}}} ROOT KEY")
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3])))

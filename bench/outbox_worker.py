"""One register run in a process of its own, with whichever `modelrepo` is first on the path.

`bench.outbox` runs this with the current core and with the core of the last commit before the
outbox, so both measure the same workload in the same run. It uses only what both cores offer.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

from bench.common import run_concurrently
from modelrepo.events import ObjectCreated
from modelrepo.local.bootstrap import build_repository
from modelrepo.settings import LocalSettings

EXPERIMENT = "bench"


def main(root: Path, count: int, writers: int) -> dict[str, object]:
    repo = build_repository(LocalSettings(root=root))
    try:
        info = repo.artifacts.put(f"{EXPERIMENT}/run-1/model.bin", io.BytesIO(b"model bytes\n"))
        recorded = repo.record_artifact(ObjectCreated.from_object(info, "bench"))
        assert recorded.artifact is not None
        artifact_id = recorded.artifact.run_artifact_id
        repo.register_model(EXPERIMENT, artifact_id, "bench")  # pinned and warmed, as in scenario 1
        cpu = time.process_time()
        measured = run_concurrently(lambda i: repo.register_model(EXPERIMENT, artifact_id, "bench"), count, writers)
        cpu_us = (time.process_time() - cpu) / count * 1e6
        versions = sorted(m.version for m in repo.list_models(EXPERIMENT, limit=1000).items)
        page = repo.list_models(EXPERIMENT, limit=1)
        latest = page.items[0].version if page.items else 0
    finally:
        repo.metadata.close()
    verified = latest == count + 1 and len(set(versions)) == len(versions)
    return {**measured.summary(), "cpu_us": round(cpu_us, 1), "verified": verified}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))

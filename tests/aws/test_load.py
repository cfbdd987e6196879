"""A burst of upload events through the AWS event path on moto: real `put_object`s, moto's S3
notifications into SQS, the record function invoked by the SQS poller. Every upload must end
recorded exactly once. `make test` runs 1,000 uploads; `make bench-aws` runs 5,000
(MODELREPO_AWS_BURST) and prints the time."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modelrepo import tables
from tests.aws.conftest import EventSourceMapping, Stack
from tests.fixtures.aws import aws_client

BURST = int(os.environ.get("MODELREPO_AWS_BURST", "1000"))
RUNS = 50
UPLOADERS = 4
REPORT = Path(__file__).resolve().parents[2] / "build" / "aws-load.json"


def test_a_burst_of_uploads_is_recorded_once_each(stack: Stack, trigger: EventSourceMapping) -> None:
    import aws_bootstrap

    repository = aws_bootstrap.repository()
    keys = [f"load/run-{n % RUNS:02d}/model-{n:05d}.bin" for n in range(BURST)]
    uploaded = threading.Event()

    def upload_all() -> None:
        with ThreadPoolExecutor(UPLOADERS) as pool:
            list(
                pool.map(lambda key: stack.s3.put_object(Bucket=stack.uploads_bucket, Key=key, Body=key.encode()), keys)
            )
        uploaded.set()

    started = time.perf_counter()
    uploader = threading.Thread(target=upload_all)
    uploader.start()
    while trigger.poll_once() or not uploaded.is_set():
        pass
    uploader.join()
    trigger.drain()
    elapsed = time.perf_counter() - started

    assert trigger.failures == []
    assert stack.messages(stack.dead_letter_url) == []
    # One scan of the table (moto's Query sorts the whole table on every call).
    current: list[str] = []
    audited: list[str] = []
    for page in aws_client("dynamodb", stack.endpoint).get_paginator("scan").paginate(TableName=stack.table):
        for item in page["Items"]:
            row, doc = item["rk"]["S"], json.loads(item["doc"]["S"])
            if row.startswith(tables.CURRENT_PREFIX):
                current.append(doc["artifact"]["key"])
            elif row.startswith(tables.EVENT_PREFIX):
                assert doc["action"] == "artifact.recorded"
                audited.append(doc["details"]["key"])
    assert sorted(current) == sorted(keys), "every upload recorded"
    assert sorted(audited) == sorted(keys), "each upload recorded once"
    [sample] = repository.list_run_artifacts("run-07")[:1]
    assert sample.sha256 == hashlib.sha256(sample.key.encode()).hexdigest()

    REPORT.parent.mkdir(exist_ok=True)
    figures = {"uploads": BURST, "seconds": round(elapsed, 1), "per_second": round(BURST / elapsed, 1)}
    REPORT.write_text(json.dumps(figures) + "\n")
    print(f"AWS event path on moto: {BURST} uploads recorded once each in {elapsed:.1f} s ({BURST / elapsed:.0f}/s)")

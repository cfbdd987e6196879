"""Lambda containers for the event tests, as separate processes.

`register_series` runs in a process forked from the fork server that `tests.aws.lambda_worker`
preloads (the API function imported once): one writer registering several versions in turn.
`python -m tests.aws.event_workers EVENT.json` is one invocation of the dispatcher in a fresh
process, so that a test can kill it with SIGKILL halfway through its batch. Kept free of pytest and
moto imports so that a container starts quickly.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.aws.lambda_worker import FakeLambdaContext, api_function, aws_bootstrap


def register_series(environment: dict[str, str], events: list[dict[str, Any]], barrier: Any, results: Any) -> None:
    """A warm API container that waits for the other writers, then answers `events` one after another."""
    try:
        os.environ.update(environment)
        aws_bootstrap.repository()  # clients built before the barrier, so the writers truly overlap
        barrier.wait(timeout=60)
        for event in events:
            results.put(api_function.handler(event, FakeLambdaContext()))
    except BaseException as error:
        results.put({"error": repr(error)})
        raise


def dispatch_once(event_file: Path) -> int:
    """Wait for a line on stdin (the test is ready to kill us), invoke the dispatcher, print its answer."""
    import dispatch_function  # the function's CodeUri is on sys.path (lambda_worker puts it there)

    event = json.loads(event_file.read_text(encoding="utf-8"))
    sys.stdin.readline()
    answer = dispatch_function.handler(event, FakeLambdaContext(function_name="modelrepo-dispatch"))
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(dispatch_once(Path(sys.argv[1])))

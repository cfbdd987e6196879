"""What a cold Functions worker imports before its first answer (bench/README.md, Cold start)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from modelrepo.adapters.azure import EVENTS_QUEUE_SETTING, hint_message
from tests.azure.conftest import AzureApp
from tests.fixtures.azure import unique_name

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
sys.path[:0] = [{repo!r}, {shared!r}]
import function_app
from modelrepo.adapters.azure import AzureSettings, connect, event_delivery, build_repository
settings = AzureSettings.from_environment({{"ModelRepoStorage": "UseDevelopmentStorage=true",
                                            "MODELREPO_UPLOADS_CONTAINER": "uploads"}})
storage = connect(settings)
event_delivery(settings, storage, build_repository(settings, storage).metadata)
print(json.dumps(sorted({{m.split(".")[0] + "." + m.split(".")[1] for m in sys.modules if m.startswith("azure.")}})))
"""


def test_an_app_on_a_connection_string_never_imports_azure_identity() -> None:
    """azure.identity (and msal under it) is for a managed identity only: an app on a connection
    string (Azurite, development) builds its clients, repository and event delivery without it."""
    script = SCRIPT.format(repo=str(REPO), shared=str(REPO / "shared"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    imported = set(json.loads(done.stdout))
    assert {"azure.functions", "azure.data", "azure.storage"} <= imported
    assert "azure.identity" not in imported


READS_THEN_COMMITS = """
import json, os, sys
sys.path[:0] = [{repo!r}, {shared!r}]
import function_app
from functions_azure import bootstrap
runtime = bootstrap.runtime()
http_at_start = "modelrepo.api" in sys.modules
from modelrepo.api import Request
answer = runtime.api.handle(Request("GET", "/api/experiments", {{}}))
after_read = "azure.storage.queue" in sys.modules
runtime.events.hints.notify("exp~cold")  # what a commit does
assert runtime.events.hints.flush(60)
print(json.dumps([http_at_start, answer.status, after_read]))
"""


def test_a_worker_that_only_reads_never_loads_the_queue_sdk(azure_app: AzureApp) -> None:
    """The hint queue's client (and azure.storage.queue) is built by the first hint, which also
    creates the queue in development: a cold worker answering a GET never loads it. The core's
    HTTP layer is loaded by the first request: a worker built for a blob trigger never loads it."""
    script = READS_THEN_COMMITS.format(repo=str(REPO), shared=str(REPO / "shared"))
    queue = unique_name("hints-")
    environment = {**os.environ, **azure_app.settings, EVENTS_QUEUE_SETTING: queue}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO, env=environment
    )
    assert json.loads(done.stdout) == [False, 200, False]  # the HTTP layer, too, waits for a request
    [hint] = azure_app.queues.get_queue_client(queue).peek_messages()  # the queue exists, with the hint
    assert base64.b64decode(hint.content).decode() == hint_message("exp~cold")

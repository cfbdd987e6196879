"""What a cold Functions worker imports before its first answer (bench/README.md, Cold start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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

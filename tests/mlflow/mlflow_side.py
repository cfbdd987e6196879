"""The MLflow side of tests/mlflow: MLflow's own client, run in .venv-mlflow (mk/mlflow.mk).

    python mlflow_side.py save-model DIR   # a tiny python_function model, saved by MLflow
    python mlflow_side.py run CONFIG.json   # the registry scenario; prints its observations as JSON

Only MLflow's public API is used, the way a training or serving script uses it; the test in the
project's virtualenv judges what this prints. The registry, its auth and the tracking store come
from the environment, as for any MLflow user (MLFLOW_REGISTRY_URI, MLFLOW_TRACKING_AUTH, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow  # type: ignore[import-not-found,unused-ignore]
from mlflow import MlflowClient  # type: ignore[import-not-found,unused-ignore]
from mlflow.exceptions import MlflowException  # type: ignore[import-not-found,unused-ignore]


class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined,unused-ignore]
    def predict(self, context: Any, model_input: list[float], params: dict[str, Any] | None = None) -> list[float]:
        return [2 * value for value in model_input]


def save_model(folder: str) -> None:
    mlflow.pyfunc.save_model(folder, python_model=Doubler())


def digests(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def error_code(call: Any) -> str | None:
    try:
        call()
    except MlflowException as error:
        return str(error.error_code)
    return None


def run(config: dict[str, Any]) -> dict[str, Any]:
    name, source, run_id = config["name"], config["source"], config["run_id"]
    client = MlflowClient(registry_uri=config["registry_uri"])
    seen: dict[str, Any] = {}

    model = client.create_registered_model(name, tags={"team": "ml"}, description="churn, by MLflow")
    seen["created"] = {"name": model.name, "tags": model.tags, "description": model.description}
    seen["create_again"] = error_code(lambda: client.create_registered_model(name))

    first = client.create_model_version(name, source, run_id=run_id, tags={"stage": "candidate"}, description="v1")
    while client.get_model_version(name, first.version).status != "READY":  # the wait register_model does
        time.sleep(0.1)
    got = client.get_model_version(name, first.version)
    seen["first"] = {"version": first.version, "status": got.status, "tags": got.tags, "run_id": got.run_id}
    again = client.create_model_version(name, source, run_id=run_id, tags={"stage": "candidate"}, description="v1")
    seen["same_request_again"] = again.version
    # The test's front forwards this one, then loses its answer: MLflow's client sends it again.
    lost = client.create_model_version(name, source, run_id=run_id, description="lost-answer")
    seen["lost_answer"] = lost.version

    client.set_registered_model_alias(name, "champion", first.version)
    seen["alias"] = client.get_model_version_by_alias(name, "champion").version
    seen["model_aliases"] = client.get_registered_model(name).aliases
    downloaded = mlflow.artifacts.download_artifacts(f"models:/{name}@champion", dst_path=config["download_to"])
    files = digests(Path(downloaded))
    seen["meta_added"] = files.pop("registered_model_meta", None) is not None  # MLflow notes the name it loaded
    seen["downloaded"] = files
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    seen["predicted"] = list(loaded.predict([1.0, 2.5]))
    client.delete_registered_model_alias(name, "champion")
    seen["alias_after_delete"] = error_code(lambda: client.get_model_version_by_alias(name, "champion"))

    seen["by_name"] = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    seen["by_name_and_tag"] = sorted(
        int(v.version) for v in client.search_model_versions(f"name = '{name}' AND tags.stage = 'candidate'")
    )
    if config.get("search_index"):  # across models, from the search index (it follows within a second)
        deadline = time.monotonic() + 10
        while True:
            found = client.search_model_versions("tags.stage = 'candidate'")
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        seen["by_tag"] = sorted((v.name, int(v.version)) for v in found)

    seen["bad_name"] = error_code(lambda: client.create_registered_model("not a valid name"))
    seen["bad_alias"] = error_code(lambda: client.set_registered_model_alias(name, "Champion!", first.version))
    seen["outside_bucket"] = error_code(lambda: client.create_model_version(name, "s3://elsewhere/model"))
    seen["missing_version"] = error_code(lambda: client.get_model_version(name, "999"))

    burst, burst_source = config["burst_name"], config["burst_source"]
    client.create_registered_model(burst)
    versions: list[str] = []
    failures: list[str] = []
    start = threading.Barrier(16)

    def create(index: int) -> None:
        own = MlflowClient(registry_uri=config["registry_uri"])
        start.wait()
        try:
            made = own.create_model_version(burst, burst_source, run_id=run_id, description=f"burst {index}")
            versions.append(made.version)
        except MlflowException as error:
            failures.append(str(error))

    threads = [threading.Thread(target=create, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen["burst"] = sorted(int(v) for v in versions)
    seen["burst_failures"] = failures
    return seen


def main() -> None:
    command, argument = sys.argv[1], sys.argv[2]
    if command == "save-model":
        save_model(argument)
        return
    report = run(json.loads(Path(argument).read_text()))
    print(json.dumps(report))


if __name__ == "__main__":
    main()

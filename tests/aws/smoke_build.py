"""After `sam build`: import every function's handler from the build output alone.

Run by `make test` with the SAM virtualenv's Python 3.12 (the functions' runtime). Each handler is
imported in an isolated interpreter (-I -S: no site-packages at all) whose path holds only the
function's built code and its built layers' `python/` folders, which is what Lambda gives it, so
a dependency missing from the layer fails here instead of at the first invocation in AWS.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

PROBE = """
import importlib, sys
assert sys.version_info[:2] == (3, 12), sys.version
sys.path[:0] = {paths!r}
module = importlib.import_module({module!r})
assert callable(getattr(module, {attribute!r})), "the handler is not callable"
import boto3, modelrepo, pydantic_core
for dependency in (modelrepo, boto3, pydantic_core):
    assert any(dependency.__file__.startswith(p) for p in sys.path[:{count}]), dependency.__file__
"""

ENVIRONMENT = {
    "PATH": "/usr/bin:/bin",
    "POWERTOOLS_SERVICE_NAME": "modelrepo",
    "POWERTOOLS_METRICS_NAMESPACE": "modelrepo",
    "POWERTOOLS_TRACE_DISABLED": "true",
}


def handlers(build: Path) -> dict[str, tuple[str, list[str]]]:
    """Each function's handler and the folders Lambda puts on its path."""
    template: dict[str, Any] = yaml.safe_load((build / "template.yaml").read_text(encoding="utf-8"))
    defaults = template.get("Globals", {}).get("Function", {})
    found = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = {**defaults, **resource["Properties"]}
        paths = [str(build / properties["CodeUri"])]
        for layer in properties.get("Layers", []):
            paths.append(str(build / template["Resources"][layer["Ref"]]["Properties"]["ContentUri"] / "python"))
        found[name] = (properties["Handler"], paths)
    return found


def main(build: Path) -> int:
    found = handlers(build)
    if not found:
        print(f"no functions in {build / 'template.yaml'}")
        return 1
    failed = 0
    for name, (handler, paths) in sorted(found.items()):
        module, _, attribute = handler.rpartition(".")
        probe = PROBE.format(paths=paths, module=module, attribute=attribute, count=len(paths))
        result = subprocess.run(
            [sys.executable, "-I", "-S", "-c", probe],
            capture_output=True,
            text=True,
            timeout=120,
            env=ENVIRONMENT,
            check=False,
        )
        if result.returncode == 0:
            print(f"{name}: {handler} imports from the build output")
        else:
            failed += 1
            print(f"{name}: {handler} does not import from the build output:\n{result.stderr}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))

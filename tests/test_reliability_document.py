"""RELIABILITY.md names the tests that prove each promise: every one it names must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_the_reliability_document_names_exists() -> None:
    text = (REPO / "RELIABILITY.md").read_text()
    references = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text)
    assert len(references) > 40
    previous_file: Path | None = None
    for file, name in references:
        path = REPO / file
        assert path.is_file(), file
        if name:
            assert name in _test_names(path), f"{file}::{name}"
        previous_file = path
    # `…::name` refers to the file named just before it on the same line.
    for line in text.splitlines():
        files = re.findall(r"`(tests/[\w/]+\.py)", line)
        for name in re.findall(r"`…::(\w+)`", line):
            assert files, line
            assert name in _test_names(REPO / files[0]), f"{files[0]}::{name}"
    assert previous_file is not None

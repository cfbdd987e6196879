"""Which storage an operator command (reconcile, dead letters) works on: local, AWS or Azure.

Each cloud adapter module offers `open_backend(environ)`, reading the same settings its function
host reads, so `modelrepo reconcile --backend aws` sweeps exactly what the deployed functions use.
Only the chosen cloud's SDK is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from modelrepo.errors import InvalidInput
from modelrepo.ports import DeadLetterQueue
from modelrepo.service import ModelRepository
from modelrepo.settings import LocalSettings

BACKENDS = ("local", "aws", "azure")


@dataclass
class Backend:
    repository: ModelRepository
    dead_letters: DeadLetterQueue

    def close(self) -> None:
        self.repository.close()


def open_backend(name: str, environ: Mapping[str, str], local: LocalSettings) -> Backend:
    if name == "local":
        from modelrepo.adapters.folder import FolderDeadLetterQueue
        from modelrepo.local.bootstrap import build_repository

        return Backend(build_repository(local), FolderDeadLetterQueue(local.dead_letters))
    if name not in BACKENDS:
        raise InvalidInput(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    try:
        module = importlib.import_module(f"modelrepo.adapters.{name}")
    except ImportError as error:
        raise InvalidInput(f"the {name} backend needs its SDK: pip install 'modelrepo[{name}]' ({error})") from None
    opener = cast(Callable[[Mapping[str, str]], Backend], getattr(module, "open_backend", None))
    if opener is None:
        raise InvalidInput(f"the {name} adapters offer no operator backend yet")
    return opener(environ)

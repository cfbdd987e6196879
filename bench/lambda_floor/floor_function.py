"""The cold-start floor on Lambda: a function whose only work is importing the SDK.

`bench/coldstart.py` runs it exactly like the real handlers (the runtime interface client, the
loopback runtime API, the same environment and layer), so the difference between it and a real
handler is what modelrepo adds: its imports, building its clients and the first request's work.
"""

from typing import Any

import boto3  # noqa: F401  # the floor: the SDK import alone


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    return {}

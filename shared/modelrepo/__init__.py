"""modelrepo: a versioned model repository whose rules live once, here, for every host."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from modelrepo.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    """`modelrepo.Client` on first use, so that importing the core stays light."""
    if name == "Client":
        from modelrepo.client import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

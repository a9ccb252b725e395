"""Qdrant access: one interface (`Store`), an embedded backend and a server backend.

`open_store` picks the backend, once: the server backend (`ServerStore`, qdrant-client) when
given a URL, else the embedded one (`EdgeStore`, Qdrant Edge) under a home folder.
"""

from __future__ import annotations

from pathlib import Path

from jointspace.store.base import VECTOR_NAMES, CollectionInfo, Hit, Point, Snapshot, Store
from jointspace.store.filters import Where, parse_conditions
from jointspace.store.options import ServerOptions
from jointspace.store.retry import RetryPolicy

__all__ = [
    "DEFAULT_HOME",
    "VECTOR_NAMES",
    "CollectionInfo",
    "Hit",
    "Point",
    "RetryPolicy",
    "ServerOptions",
    "Snapshot",
    "Store",
    "Where",
    "open_store",
    "parse_conditions",
]

DEFAULT_HOME = Path("jointspace-data")


def open_store(
    home: Path | str | None = None,
    url: str | None = None,
    options: ServerOptions | None = None,
    owner: str | None = None,
) -> Store:
    """The server backend when `url` is given (checked to answer, to accept
    `options.api_key` and to run a compatible version; `options` also tune it), else the
    embedded Qdrant Edge backend under `home` (default ./jointspace-data), for which `options`
    mean nothing. `owner` names this process in the embedded store's collection locks (what a
    refused process is told is holding a collection)."""
    # Imported here so that importing jointspace.store loads neither Qdrant library.
    if url:
        from jointspace.store.server import ServerStore

        return ServerStore.connect(url, options)
    from jointspace.store.edge import EdgeStore

    return EdgeStore(Path(home) if home is not None else DEFAULT_HOME, owner=owner)

"""Qdrant access: one interface (`Store`), an embedded backend and a server backend."""

from __future__ import annotations

from pathlib import Path

from jointspace.store.base import VECTOR_NAMES, CollectionInfo, Hit, Point, Store

__all__ = ["VECTOR_NAMES", "CollectionInfo", "Hit", "Point", "Store", "open_store"]

DEFAULT_HOME = Path("jointspace-data")


def open_store(
    home: Path | None = None, url: str | None = None, api_key: str | None = None
) -> Store:
    """The server backend when `url` is given (checked to answer and to accept `api_key`),
    else the embedded Qdrant Edge backend under `home` (default ./jointspace-data)."""
    # Imported here so that importing jointspace.store loads neither Qdrant library.
    if url:
        from jointspace.store.server import ServerStore

        return ServerStore.connect(url, api_key)
    from jointspace.store.edge import EdgeStore

    return EdgeStore(home if home is not None else DEFAULT_HOME)

"""Qdrant access: one interface (`Store`), an embedded backend and a server backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jointspace.store.base import VECTOR_NAMES, CollectionInfo, Hit, Point, Store
from jointspace.store.retry import RetryPolicy

__all__ = ["VECTOR_NAMES", "CollectionInfo", "Hit", "Point", "RetryPolicy", "Store", "open_store"]

DEFAULT_HOME = Path("jointspace-data")


def open_store(
    home: Path | None = None,
    url: str | None = None,
    api_key: str | None = None,
    **server_options: Any,
) -> Store:
    """The server backend when `url` is given (checked to answer, to accept `api_key` and to run
    a compatible version), else the embedded Qdrant Edge backend under `home` (default
    ./jointspace-data). `server_options` go to ServerStore.connect (shards, replicas,
    batch_size, parallel, retry, prefer_grpc, timeout) and are ignored for Edge."""
    # Imported here so that importing jointspace.store loads neither Qdrant library.
    if url:
        from jointspace.store.server import ServerStore

        return ServerStore.connect(url, api_key, **server_options)
    from jointspace.store.edge import EdgeStore

    return EdgeStore(home if home is not None else DEFAULT_HOME)

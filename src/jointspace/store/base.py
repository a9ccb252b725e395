"""The store interface: the dozen calls jointspace needs from Qdrant, and its records.

Besides the abstract core, the interface has optional parts with working defaults, so that a
backend only overrides what it can do better:
- bulk uploads: `begin_bulk` / `end_bulk` (or `with store.bulk(name):`) bracket a large upload so
  that a backend may defer index building; the defaults do nothing;
- aliases, for zero-downtime re-ingest (ingest into a new collection, then switch an alias that
  readers use): `list_aliases`, `resolve`, `set_alias`, `delete_alias`. The defaults describe a
  backend without aliases: none exist, every name is a collection, and creating one raises a
  JointspaceError.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jointspace.errors import JointspaceError

VECTOR_NAMES = ("unit", "image", "text")


@dataclass(frozen=True)
class Point:
    """A stored point: a deterministic UUID string, named vectors (a missing modality's vector is
    simply absent) and its payload."""

    id: str
    vectors: Mapping[str, Sequence[float]]
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result, best first."""

    id: str
    score: float
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection holds: its point count, vector names and dims, and jointspace metadata
    (which model embedded it, etc.)."""

    name: str
    points: int
    vectors: Mapping[str, int]
    metadata: Mapping[str, Any]


class Store(ABC):
    """A Qdrant store. Every collection has the named cosine vectors of `vectors` and keyword
    payload indexes; `where` filters are exact matches on payload keys (a list-valued field
    matches when any element equals the value)."""

    @abstractmethod
    def create_collection(
        self,
        name: str,
        vectors: Mapping[str, int],
        metadata: Mapping[str, Any],
        keyword_fields: Sequence[str] = (),
    ) -> None:
        """Create the collection; raises JointspaceError if it already exists."""

    @abstractmethod
    def has_collection(self, name: str) -> bool:
        """Whether the collection exists."""

    @abstractmethod
    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""

    @abstractmethod
    def info(self, name: str) -> CollectionInfo:
        """Point count, vector dims and metadata; raises JointspaceError if there is no such
        collection."""

    @abstractmethod
    def set_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Replace the collection's jointspace metadata."""

    @abstractmethod
    def drop_collection(self, name: str) -> None:
        """Delete the collection and its points; raises JointspaceError if it does not exist."""

    @abstractmethod
    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or replace points by id; durable when it returns."""

    @abstractmethod
    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` already stored."""

    @abstractmethod
    def count(self, name: str) -> int:
        """Exact number of points."""

    @abstractmethod
    def search(
        self,
        name: str,
        vector_name: str,
        vector: Sequence[float],
        k: int,
        where: Mapping[str, str] | None = None,
    ) -> list[Hit]:
        """The k nearest points by cosine similarity on one named vector, best first; points
        without that vector are never returned."""

    @abstractmethod
    def scroll(self, name: str, batch_size: int = 256) -> Iterator[Point]:
        """Every point with its vectors and payload, in id order."""

    @abstractmethod
    def close(self) -> None:
        """Release files and connections; the store is unusable afterwards."""

    # -- bulk uploads (optional) ---------------------------------------------------------------

    def begin_bulk(self, name: str) -> None:  # noqa: B027 - an optional hook, no-op by default
        """A large upload into `name` starts: the backend may defer index building until
        end_bulk. Searches keep working meanwhile (perhaps slower). Default: nothing."""

    def end_bulk(self, name: str) -> None:  # noqa: B027 - an optional hook, no-op by default
        """The bulk upload into `name` is over: restore what begin_bulk changed. Calling it
        without begin_bulk is harmless. Default: nothing."""

    @contextlib.contextmanager
    def bulk(self, name: str) -> Iterator[None]:
        """begin_bulk(name) ... end_bulk(name), the end also when the upload fails, so that a
        failed run does not leave indexing switched off."""
        self.begin_bulk(name)
        try:
            yield
        finally:
            self.end_bulk(name)

    # -- aliases (optional) --------------------------------------------------------------------

    def list_aliases(self) -> dict[str, str]:
        """Every alias and the collection it points to. Default: none (no alias support)."""
        return {}

    def resolve(self, name: str) -> str:
        """The collection an alias points to, or `name` itself when it is not an alias."""
        return self.list_aliases().get(name, name)

    def set_alias(self, alias: str, collection: str) -> None:
        """Point `alias` at `collection`, atomically: a reader using the alias sees the old
        collection or the new one, never neither. Default: raises (no alias support)."""
        raise JointspaceError(
            f"{type(self).__name__} does not support aliases; use the collection name "
            f"'{collection}' directly."
        )

    def delete_alias(self, alias: str) -> None:
        """Remove `alias` (its collection stays). Default: raises (no alias support)."""
        raise JointspaceError(
            f"{type(self).__name__} does not support aliases, so there is no alias '{alias}'."
        )

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

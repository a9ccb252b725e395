"""The store interface: the dozen calls jointspace needs from Qdrant, and its records."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The store interface: the dozen calls jointspace needs from Qdrant, and its records.

Besides the abstract core, the interface has optional parts with working defaults, so that a
backend only overrides what it can do better:
- approximate search: `build_index` builds an HNSW index (see store/indexing.py for when, and
  the parameters); `CollectionInfo.indexed` tells whether a collection has one, `search` then
  walks it unless given `exact=True`; `create_collection(..., quantize="int8")` keeps int8
  copies of the vectors for indexed searches (rescored with the originals);
- bulk uploads: `begin_bulk` / `end_bulk` (or `with store.bulk(name):`) bracket a large upload so
  that a backend may defer index building; the defaults do nothing;
- aliases, for zero-downtime re-ingest (ingest into a new collection, then switch an alias that
  readers use): `list_aliases`, `resolve`, `set_alias`, `delete_alias`. The defaults describe a
  backend without aliases: none exist, every name is a collection, and creating one raises a
  JointspaceError;
- snapshots, where `supports_snapshots` is true (a Qdrant server): `create_snapshot`,
  `list_snapshots`, `restore_snapshot`. The defaults raise a JointspaceError that says to
  back up the embedded store's folder instead.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jointspace.errors import JointspaceError
from jointspace.store.filters import FieldKind, WhereLike

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
    (which model embedded it, etc.). `state` is "ready", "busy" (another process holds it) or
    "broken" (it cannot be read); `detail` says why when it is not ready, and `points` is then
    None (unknown), as are `vectors` and `metadata` ({}) when they cannot be read.
    `indexed`: whether searches use an HNSW index (built by build_index; on a server, whether
    the server has indexed any of its vectors); `quantize`: "int8" for a quantized
    collection, else None."""

    name: str
    points: int | None
    vectors: Mapping[str, int]
    metadata: Mapping[str, Any]
    state: str = "ready"
    detail: str = ""
    indexed: bool = False
    quantize: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """A snapshot file of a collection on one server node."""

    name: str
    size: int
    created: str


_NO_SNAPSHOTS = (
    "Snapshots are for server collections: set --qdrant-url or QDRANT_URL (the embedded store "
    "is a folder; back up --home instead)."
)


class Store(ABC):
    """A Qdrant store. Every collection has the named cosine vectors of `vectors` and a payload
    index per filterable field, which its metadata records (`filters.FILTERABLE_KEY`); a
    `where` (see store/filters.py) may name only those fields."""

    supports_snapshots: bool = False

    @abstractmethod
    def create_collection(
        self,
        name: str,
        vectors: Mapping[str, int],
        metadata: Mapping[str, Any],
        keyword_fields: Sequence[str] = (),
        fields: Mapping[str, FieldKind] | None = None,
        quantize: str | None = None,
    ) -> None:
        """Create the collection; raises JointspaceError if it already exists. Its filterable
        fields, indexed and recorded in its metadata under "filterable" (key -> kind), are
        `keyword_fields` (kind "keyword"), `fields` ("keyword", "integer", "float" or "bool")
        and those that `metadata` already records (a copied collection's). `quantize="int8"`
        makes it keep int8 copies of its vectors once indexed (`info().quantize` shows it);
        None: full precision only."""

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

    def list_infos(self) -> list[CollectionInfo]:
        """The info of every collection, sorted by name, even when some cannot be read: such a
        collection comes back with state "broken" (or "busy", where a backend can tell) and the
        reason in `detail`, instead of failing the whole listing."""
        infos = []
        for name in self.list_collections():
            try:
                infos.append(self.info(name))
            except JointspaceError as exc:
                infos.append(
                    CollectionInfo(
                        name=name,
                        points=None,
                        vectors={},
                        metadata={},
                        state="broken",
                        detail=str(exc),
                    )
                )
        return infos

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
        where: WhereLike = None,
        *,
        exact: bool | None = None,
        hnsw_ef: int | None = None,
    ) -> list[Hit]:
        """The k nearest points by cosine similarity on one named vector that pass `where`,
        best first; points without that vector are never returned. An indexed collection
        (see build_index) is searched through its HNSW index, with `hnsw_ef` candidates
        (default indexing.HNSW_EF, FILTERED_HNSW_EF with a `where`; a `where` that matches few
        units is searched exactly), an unindexed one exactly; `exact=True` forces an exact
        search, `exact=False` the index where there is one. `where` maps payload keys
        to conditions that must all hold: a value (equality; a list-valued field matches when
        any element equals it), a list (any of), a range {"gte": 200, "lt": 1000} (gt, gte,
        lt, lte) or {"all": [condition, ...]}; see store/filters.py. Raises JointspaceError
        for a malformed where or a key the collection cannot filter on (naming those it
        can)."""

    @abstractmethod
    def scroll(self, name: str, batch_size: int = 256) -> Iterator[Point]:
        """Every point with its vectors and payload, in id order."""

    @abstractmethod
    def close(self) -> None:
        """Release files and connections; the store is unusable afterwards."""

    # -- approximate search (optional) ---------------------------------------------------------

    def build_index(self, name: str) -> None:
        """Build the HNSW index of every named vector of `name` (and its int8 copies if it is
        quantized); searches use it afterwards. Points upserted later are searched exactly
        until the next build_index. Default: raises (no index support)."""
        raise JointspaceError(f"{type(self).__name__} cannot build a search index.")

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

    # -- filterable fields (optional) ----------------------------------------------------------

    def filterable_fields(self, name: str) -> dict[str, str] | None:
        """The payload fields a `where` may name (key -> kind), as the collection records
        them; None when it records none (any key is then taken as it is). Default: None."""
        return None

    def add_filterable_fields(self, name: str, fields: Mapping[str, str]) -> None:  # noqa: B027
        """Index more payload fields (key -> kind) and record them as filterable; a field
        already filterable keeps its kind. Default: nothing (a backend that records no fields
        filters on any key)."""

    # -- snapshots (optional) ------------------------------------------------------------------

    def create_snapshot(self, name: str) -> Snapshot:
        """Snapshot a collection. Default: raises (no snapshots: see supports_snapshots)."""
        raise JointspaceError(_NO_SNAPSHOTS)

    def list_snapshots(self, name: str) -> list[Snapshot]:
        """The collection's snapshots, oldest first. Default: raises (no snapshots)."""
        raise JointspaceError(_NO_SNAPSHOTS)

    def restore_snapshot(self, name: str, location: str) -> None:
        """Restore a collection from a snapshot name or URL. Default: raises (no snapshots)."""
        raise JointspaceError(_NO_SNAPSHOTS)

    # -- points by id (optional) ---------------------------------------------------------------

    def retrieve(self, name: str, ids: Sequence[str]) -> list[Point]:
        """The stored points among `ids`, with vectors and payload (missing ids are left out).
        Default: one pass over the collection; backends override it with a lookup by id."""
        wanted = {str(i) for i in ids}
        return [point for point in self.scroll(name) if point.id in wanted]

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The shared backend: a Qdrant server or cluster through `qdrant-client` (1.20).

The same class serves qdrant-client's local mode (`QdrantClient(path=...)`), a pure-Python
implementation of the same API that the tests use as a stand-in for a server.

Opening the connection (gRPC or REST), checking the server's version, retrying transient
failures and turning client exceptions into one-sentence errors without the API key are the
business of `ServerConnection` (server_connection.py); this module is the Store's operations.
Which calls are retried is decided here: those that are safe to repeat (reads, upserts by id,
payload-index creation, metadata/optimizer updates, alias switches). create_collection,
drop_collection and restore_snapshot are not: after a lost response a retry would report
"already exists" / "no such collection" for its own success.

Collection metadata (which model embedded a collection, etc.) lives in the collection's own
`metadata` field, which qdrant-client 1.20 accepts on create_collection and update_collection
(Qdrant server 1.16 or later keeps it; local mode does too). No side collection is needed.
An update *merges* top-level keys and deletes keys whose value is None, so set_metadata sends
None for every key it drops, and None values are never stored (the Edge backend does the same).
The metadata's `filterable` entry (filters.FILTERABLE_KEY) is the store's own record of the
payload fields a `where` may name, written at creation with their payload indexes and kept by
set_metadata.

- Bulk uploads. `upsert` sends large batches in chunks (`batch_size` points per request, wait=True),
  `parallel` chunks at a time from threads. qdrant-client's upload_points is not used: its
  parallel mode starts worker processes that re-open the connection, and it retries every
  exception (a 400 too) without backoff. `begin_bulk` switches HNSW indexing off
  (`optimizers_config.indexing_threshold=0`, Qdrant's "fastest upload" setting), `end_bulk`
  restores the previous threshold (Qdrant's default, 20000 KB, if it was off already, e.g. left so
  by a run that died). Payload indexes are created with the collection, so before any upload.
- The HNSW index and quantization. Collections are created with HNSW parameters
  (indexing.HNSW_M, HNSW_EF_CONSTRUCT) and, for `quantize="int8"`, scalar int8 quantization
  kept in RAM. The server builds the index itself, in the background, for segments above its
  indexing threshold; `build_index` switches indexing back on if a bulk upload left it off
  and waits until the collection is green (optimized). `indexed` is whether the server
  reports indexed vectors; searches pass hnsw_ef (FILTERED_HNSW_EF with a filter; rescore=True with
  oversampling when quantized) and leave
  it to the server to scan the segments it has not indexed; `exact=True` asks for exact.
  qdrant-client's local mode accepts these settings and ignores them (it has neither index
  nor quantization: `info()` shows neither).
- Sharding. `shards` and `replicas` set shard_number and replication_factor on collections this
  store creates; None leaves the server's defaults.
- Aliases. `set_alias` switches an alias in one update_collection_aliases call (delete the old
  alias + create the new one), which Qdrant applies atomically. Point operations (upsert, count,
  retrieve, query, scroll) pass an alias to the server, which resolves it; collection-level
  calls (info, vector dims, metadata, optimizer settings) resolve it here first, and
  drop_collection refuses an alias. Dropping a collection drops its aliases (Qdrant does).
- Snapshots. On a server (`supports_snapshots`); local mode has none and says so.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.local.qdrant_local import QdrantLocal

from jointspace.errors import JointspaceError
from jointspace.store._common import (
    as_floats,
    canonical_ids,
    check_dims,
    check_name,
    clean_metadata,
    uuid_ids,
)
from jointspace.store.base import CollectionInfo, Hit, Point, Snapshot, Store
from jointspace.store.filters import (
    FILTERABLE_KEY,
    AnyOf,
    Clause,
    Either,
    Equals,
    FieldKind,
    Range,
    Where,
    WhereLike,
    filterable_fields,
    keep_filterable,
    recorded_fields,
)
from jointspace.store.indexing import (
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    QUANTIZATION_OVERSAMPLING,
    check_quantize,
    full_scan_threshold_kb,
    search_ef,
)
from jointspace.store.options import ServerOptions
from jointspace.store.server_connection import (
    ServerConnection,
    already_exists,
    capitalise,
    is_transient,
    no_such_collection,
    version_gap,
)

__all__ = [
    "DEFAULT_INDEXING_THRESHOLD_KB",
    "ServerConnection",
    "ServerOptions",
    "ServerStore",
    "is_transient",
    "version_gap",
]

T = TypeVar("T")

_RETRIEVE_CHUNK = 1000
# build_index: how often to ask whether the server has finished indexing, and for how long.
_INDEX_POLL_S = 0.5
DEFAULT_INDEX_WAIT_S = 3600.0
# Qdrant's default indexing threshold (KB of vectors per segment before HNSW is built), as
# documented on OptimizersConfigDiff.indexing_threshold in qdrant-client 1.20.
DEFAULT_INDEXING_THRESHOLD_KB = 20_000
_INDEX_SCHEMA = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "integer": qm.PayloadSchemaType.INTEGER,
    "float": qm.PayloadSchemaType.FLOAT,
    "bool": qm.PayloadSchemaType.BOOL,
}


class ServerStore(Store):
    """Collections on a Qdrant server (or in qdrant-client's local mode), over a connection
    that the store owns and closes in close()."""

    supports_snapshots = True

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        self._dims: dict[str, dict[str, int]] = {}  # vector dims, cached per name used
        self._filterable: dict[str, dict[str, str] | None] = {}  # idem, filterable fields
        self._bulk_restore: dict[str, int] = {}  # collection -> indexing threshold to restore
        self._quantize: dict[str, str | None] = {}  # idem, quantization ("int8" or None)
        # Local mode: brute force only, and it warns on every search given search params.
        self._exact_only = isinstance(getattr(connection.client, "_client", None), QdrantLocal)

    @classmethod
    def connect(cls, url: str, options: ServerOptions | None = None) -> ServerStore:
        """A store on the server at `url`, checked to answer, to accept `options.api_key` and
        to run a compatible version."""
        return cls(ServerConnection.open(url, options))

    @classmethod
    def local(cls, path: Path | str, options: ServerOptions | None = None) -> ServerStore:
        """A store on qdrant-client's local mode in the folder `path` (the tests' server
        stand-in): no snapshots, no parallel uploads."""
        store = cls(ServerConnection.local(path, options))
        store.supports_snapshots = False
        return store

    @property
    def client(self) -> QdrantClient:
        return self.connection.client

    @property
    def where(self) -> str:
        """The words that name the server in messages."""
        return self.connection.where

    @property
    def options(self) -> ServerOptions:
        return self.connection.options

    @property
    def server_version(self) -> str | None:
        """The server's version, once connect() has read it."""
        return self.connection.server_version

    @property
    def server_version_warning(self) -> str | None:
        """Why the server's and qdrant-client's versions may not get along, if they may not."""
        return self.connection.server_version_warning

    # -- collections ---------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        vectors: Mapping[str, int],
        metadata: Mapping[str, Any],
        keyword_fields: Sequence[str] = (),
        fields: Mapping[str, FieldKind] | None = None,
        quantize: str | None = None,
    ) -> None:
        """Create the collection (with the store's shards and replicas, the HNSW parameters
        and int8 quantization if `quantize="int8"`) and a payload index per filterable
        field, recorded in its metadata; raises JointspaceError if a collection or alias of
        that name exists."""
        quantize = check_quantize(quantize)
        aliases = self.list_aliases()
        if name in aliases:
            raise JointspaceError(
                f"'{name}' already exists on {self.where} as an alias of collection "
                f"'{aliases[name]}'; choose another name."
            )
        if self.has_collection(name):
            raise already_exists(name, self.where)
        filterable = filterable_fields(keyword_fields, fields, metadata.get(FILTERABLE_KEY))
        stored = {**clean_metadata(metadata), FILTERABLE_KEY: filterable}
        params = {
            vname: qm.VectorParams(size=int(size), distance=qm.Distance.COSINE)
            for vname, size in vectors.items()
        }
        quantization = None
        if quantize == "int8":
            quantization = qm.ScalarQuantization(
                scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, always_ram=True)
            )
        self.connection.call(
            lambda: self.client.create_collection(
                name,
                vectors_config=params,
                metadata=stored,
                hnsw_config=qm.HnswConfigDiff(
                    m=HNSW_M,
                    ef_construct=HNSW_EF_CONSTRUCT,
                    full_scan_threshold=full_scan_threshold_kb(vectors),
                ),
                quantization_config=quantization,
                **self._sharding(),
            ),
            what=f"creating collection '{name}'",
            name=name,
            retry=False,
        )
        for field_name, kind in filterable.items():
            self._create_index(name, field_name, kind)
        self._dims[name] = {vname: int(size) for vname, size in vectors.items()}
        self._filterable[name] = filterable
        self._quantize[name] = quantize
        if not self._metadata(name):
            self.client.delete_collection(name)
            raise JointspaceError(
                f"{capitalise(self.where)} does not keep collection metadata; upgrade it to "
                "Qdrant 1.16 or later."
            )

    def _sharding(self) -> dict[str, int]:
        """create_collection's sharding arguments; absent ones keep the server's defaults."""
        extra: dict[str, int] = {}
        if self.options.shards is not None:
            extra["shard_number"] = self.options.shards
        if self.options.replicas is not None:
            extra["replication_factor"] = self.options.replicas
        return extra

    def _create_index(self, name: str, field_name: str, kind: str) -> None:
        def create() -> None:
            with warnings.catch_warnings():
                # Local mode warns that indexes do nothing there; true, and irrelevant to a test.
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                self.client.create_payload_index(
                    name, field_name, field_schema=_INDEX_SCHEMA[kind], wait=True
                )

        # Creating an index that exists is a no-op for Qdrant, so a retry is harmless.
        self.connection.call(create, what=f"indexing field '{field_name}' of '{name}'", name=name)

    def has_collection(self, name: str) -> bool:
        """Whether the collection (or an alias of that name) exists."""
        check_name(name)
        exists = self.connection.call(
            lambda: bool(self.client.collection_exists(name)), what=f"looking up '{name}'"
        )
        return exists or name in self.list_aliases()

    def list_collections(self) -> list[str]:
        """Names of all collections on the server, sorted (other tools' collections too;
        aliases are not collections: see list_aliases)."""
        response = self.connection.call(self.client.get_collections, what="listing collections")
        return sorted(c.name for c in response.collections)

    def info(self, name: str) -> CollectionInfo:
        """Point count, vector dims and metadata (of the collection an alias points to);
        raises JointspaceError if there is no such collection."""
        self._require(name)
        collection = self._collection(self.resolve(name))
        config = collection.config
        return CollectionInfo(
            name=name,
            points=self.count(name),
            vectors=_dims_of(config.params.vectors),
            metadata=dict(config.metadata or {}),
            indexed=bool(collection.indexed_vectors_count),
            quantize=_quantize_of(config),
        )

    def _collection(self, collection: str) -> Any:
        return self.connection.call(
            lambda: self.client.get_collection(collection),
            what=f"reading the configuration of '{collection}'",
            name=collection,
        )

    def _config(self, collection: str) -> Any:
        return self._collection(collection).config

    def _metadata(self, collection: str) -> dict[str, Any]:
        return dict(self._config(collection).metadata or {})

    def set_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Replace the collection's jointspace metadata (an alias's collection's), except its
        record of filterable fields, which stays."""
        self._require(name)
        collection = self.resolve(name)
        old = self._metadata(collection)
        new = keep_filterable(clean_metadata(metadata), old)
        # An update merges; sending None for the keys to drop makes it a replacement.
        update: dict[str, Any] = {key: None for key in old if key not in new}
        update.update(new)
        if not update:
            return
        self.connection.call(
            lambda: self.client.update_collection(collection, metadata=update),
            what=f"updating the metadata of '{collection}'",
            name=collection,
        )

    def add_filterable_fields(self, name: str, fields: Mapping[str, FieldKind]) -> None:
        """Index more payload fields (key -> kind) and record them as filterable; a field
        already filterable keeps its kind."""
        self._require(name)
        collection = self.resolve(name)
        recorded = self._filterable_of(collection, refresh=True) or {}
        new = filterable_fields((), {k: v for k, v in fields.items() if k not in recorded})
        if not new:
            return
        for field_name, kind in new.items():
            self._create_index(collection, field_name, kind)
        merged = {**recorded, **new}
        self.connection.call(
            lambda: self.client.update_collection(collection, metadata={FILTERABLE_KEY: merged}),
            what=f"recording the filterable fields of '{collection}'",
            name=collection,
        )
        for cached in (collection, *(a for a, t in self.list_aliases().items() if t == collection)):
            self._filterable.pop(cached, None)  # re-read by the next search

    def drop_collection(self, name: str) -> None:
        """Delete the collection, its points and its aliases; raises JointspaceError if it does
        not exist or if `name` is an alias (drop the collection itself, deliberately)."""
        self._require(name)
        aliases = self.list_aliases()
        if name in aliases:
            raise _is_an_alias(name, aliases[name], self.where)
        self.connection.call(
            lambda: self.client.delete_collection(name),
            what=f"dropping '{name}'",
            name=name,
            retry=False,
        )
        self._forget(name, *(alias for alias, target in aliases.items() if target == name))

    def _forget(self, *names: str) -> None:
        for cached in names:
            self._dims.pop(cached, None)
            self._filterable.pop(cached, None)
            self._quantize.pop(cached, None)
            self._bulk_restore.pop(cached, None)

    def _require(self, name: str) -> None:
        if not self.has_collection(name):
            raise no_such_collection(name, self.where)

    def _vector_dims(self, name: str, refresh: bool = False) -> dict[str, int]:
        if refresh or name not in self._dims:
            self._read_config(name)
        return self._dims[name]

    def _filterable_of(self, name: str, refresh: bool = False) -> dict[str, str] | None:
        if refresh or name not in self._filterable:
            self._read_config(name)
        return self._filterable[name]

    def _read_config(self, name: str) -> None:
        """Cache what searches need of a collection's configuration (by the name used)."""
        config = self._config(self.resolve(name))
        self._dims[name] = _dims_of(config.params.vectors)
        self._filterable[name] = recorded_fields(config.metadata or {})
        self._quantize[name] = _quantize_of(config)

    def filterable_fields(self, name: str) -> dict[str, str] | None:
        """The payload fields a `where` may name (key -> kind), as the collection (or the one
        an alias points to) records them; None if it records none."""
        return self._filterable_of(name, refresh=True)

    # -- bulk uploads --------------------------------------------------------------------------

    def begin_bulk(self, name: str) -> None:
        """Switch HNSW indexing of the collection off until end_bulk (indexing_threshold=0):
        uploads are then plain appends; searches stay exact meanwhile."""
        collection = self.resolve(name)
        current = self._indexing_threshold(collection)
        # Off already means a run died between begin and end: restore the default then.
        self._bulk_restore.setdefault(collection, current or DEFAULT_INDEXING_THRESHOLD_KB)
        self._set_indexing_threshold(collection, 0)

    def end_bulk(self, name: str) -> None:
        """Restore the indexing threshold begin_bulk saved; the server then builds the HNSW
        index in the background. Without a begin_bulk in this store, indexing left off by
        another (dead) run is switched back on with Qdrant's default."""
        collection = self.resolve(name)
        restore = self._bulk_restore.pop(collection, None)
        if restore is None:
            if self._indexing_threshold(collection) != 0:
                return
            restore = DEFAULT_INDEXING_THRESHOLD_KB
        self._set_indexing_threshold(collection, restore)

    def build_index(self, name: str, wait_s: float = DEFAULT_INDEX_WAIT_S) -> None:
        """Let the server index the collection (switch indexing back on if a bulk upload left
        it off) and wait until it is green, i.e. done, or `wait_s` seconds (then raises:
        the server goes on indexing, and searches work meanwhile). The server indexes only
        segments above its indexing threshold; smaller ones are scanned, as fast."""
        collection = self.resolve(name)
        self._require(collection)
        if not self._indexing_threshold(collection):
            self._bulk_restore.pop(collection, None)
            self._set_indexing_threshold(collection, DEFAULT_INDEXING_THRESHOLD_KB)
        deadline = time.monotonic() + wait_s
        nudged = False
        while True:
            status = str(getattr(self._collection(collection).status, "value", "green"))
            if status == "green":
                return
            if status == "red":
                raise JointspaceError(
                    f"{capitalise(self.where)} reports an error while optimizing "
                    f"'{collection}' (status red); see the server's log."
                )
            if status == "grey" and not nudged:  # optimizations pending: an update starts them
                self._set_indexing_threshold(collection, DEFAULT_INDEXING_THRESHOLD_KB)
                nudged = True
            if time.monotonic() >= deadline:
                raise JointspaceError(
                    f"{capitalise(self.where)} is still indexing '{collection}' after "
                    f"{wait_s:.0f} s (status {status}); searches work meanwhile, exactly on "
                    "what is not indexed yet."
                )
            time.sleep(_INDEX_POLL_S)

    def _indexing_threshold(self, collection: str) -> int | None:
        optimizer = self._config(collection).optimizer_config
        return getattr(optimizer, "indexing_threshold", None)

    def _set_indexing_threshold(self, collection: str, kilobytes: int) -> None:
        diff = qm.OptimizersConfigDiff(indexing_threshold=kilobytes)
        self.connection.call(
            lambda: self.client.update_collection(collection, optimizers_config=diff),
            what=f"setting the indexing threshold of '{collection}' to {kilobytes} KB",
            name=collection,
        )

    # -- aliases -------------------------------------------------------------------------------

    def list_aliases(self) -> dict[str, str]:
        """Every alias on the server and the collection it points to."""
        response = self.connection.call(self.client.get_aliases, what="listing aliases")
        return {a.alias_name: a.collection_name for a in response.aliases}

    def set_alias(self, alias: str, collection: str) -> None:
        """Point `alias` at `collection` in one atomic update_collection_aliases call (delete
        the old alias and create the new one): every request sees one collection or the
        other. Raises JointspaceError if `collection` is not a collection or `alias` is one."""
        check_name(alias)
        check_name(collection)

        def switch() -> None:
            # Re-read on every try: after a lost response the first try may have applied.
            aliases = self.list_aliases()
            operations = _alias_switch(alias, collection, aliases)
            if operations:
                self._check_alias_target(alias, collection, aliases)
                self.client.update_collection_aliases(change_aliases_operations=operations)

        self.connection.call(switch, what=f"pointing alias '{alias}' at '{collection}'")
        self._forget(alias)

    def _check_alias_target(self, alias: str, collection: str, aliases: Mapping[str, str]) -> None:
        if collection in aliases:
            raise JointspaceError(
                f"'{collection}' is itself an alias (of '{aliases[collection]}'); point "
                f"'{alias}' at a collection."
            )
        if not self.client.collection_exists(collection):
            raise no_such_collection(collection, self.where)
        if alias not in aliases and self.client.collection_exists(alias):
            raise JointspaceError(
                f"'{alias}' is a collection on {self.where}, so it cannot become an alias; "
                "choose another alias name."
            )

    def delete_alias(self, alias: str) -> None:
        """Remove `alias`; its collection stays. Raises JointspaceError if there is none."""
        check_name(alias)
        if alias not in self.list_aliases():
            raise _no_such_alias(alias, self.where)
        operation = qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias))
        # Qdrant deletes an alias "if exists", so a retry after a lost response is harmless.
        self.connection.call(
            lambda: self.client.update_collection_aliases(change_aliases_operations=[operation]),
            what=f"deleting alias '{alias}'",
        )
        self._forget(alias)

    # -- snapshots -----------------------------------------------------------------------------

    def create_snapshot(self, name: str) -> Snapshot:
        """Snapshot a collection on the node this client talks to (in a cluster, run it
        against every node: each holds its own shards)."""
        collection = self.resolve(name)
        result = self._snapshot_call(
            lambda: self.client.create_snapshot(collection, wait=True),
            f"creating a snapshot of '{collection}'",
            retry=False,
        )
        return Snapshot(result.name, result.size, str(result.creation_time))

    def list_snapshots(self, name: str) -> list[Snapshot]:
        """The collection's snapshots on this node, oldest first."""
        collection = self.resolve(name)
        found = self._snapshot_call(
            lambda: self.client.list_snapshots(collection), f"listing snapshots of '{collection}'"
        )
        snapshots = [Snapshot(s.name, s.size, str(s.creation_time)) for s in found]
        return sorted(snapshots, key=lambda s: s.created)

    def restore_snapshot(self, name: str, location: str) -> None:
        """Restore a collection from a snapshot: a snapshot name on this node, or a URL the
        server can fetch (http(s):// or file:// on the server's disk)."""
        collection = self.resolve(name)
        if "://" not in location:
            location = f"file:///qdrant/snapshots/{collection}/{location}"
        self._snapshot_call(
            lambda: self.client.recover_snapshot(collection, location, wait=True),
            f"restoring '{collection}' from {location}",
            retry=False,
        )
        self._forget(name, collection)

    def _snapshot_call(self, fn: Callable[[], T], what: str, retry: bool = True) -> T:
        try:
            return self.connection.call(fn, what=what, retry=retry)
        except NotImplementedError:
            raise JointspaceError(
                f"Snapshots need a Qdrant server; {self.where} has none (qdrant-client's local "
                "mode): point --qdrant-url at a server."
            ) from None

    # -- points --------------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or replace points by id; durable when it returns (wait=True). Sent in chunks
        of `batch_size`, `parallel` at a time; each chunk is retried on transient failures (an
        upsert by id is idempotent). On a persistent failure, chunks already sent stay written
        and the first error is raised."""
        if not points:
            return
        size = self.options.batch_size
        chunks = [points[start : start + size] for start in range(0, len(points), size)]
        if self.options.parallel == 1 or len(chunks) == 1:
            for chunk in chunks:
                self._upsert_chunk(name, chunk)
            return
        self._upsert_parallel(name, chunks)

    def _upsert_parallel(self, name: str, chunks: Sequence[Sequence[Point]]) -> None:
        workers = min(self.options.parallel, len(chunks))
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upsert") as pool:
            futures = [pool.submit(self._upsert_chunk, name, chunk) for chunk in chunks]
            done, pending = cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
            for future in pending:  # a failure: stop sending what has not started
                future.cancel()
        for future in futures:  # the first error in upload order, once all threads are idle
            if not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def _upsert_chunk(self, name: str, chunk: Sequence[Point]) -> None:
        structs = [
            qm.PointStruct(
                id=str(p.id),
                vector={vname: as_floats(vec) for vname, vec in p.vectors.items()},
                payload=dict(p.payload),
            )
            for p in chunk
        ]
        self.connection.call(
            lambda: self.client.upsert(name, points=structs, wait=True),
            what=f"upserting {len(structs)} points into '{name}'",
            name=name,
        )

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` already stored."""
        wanted = canonical_ids(ids)
        keys = list(wanted)
        found: set[str] = set()
        for start in range(0, len(keys), _RETRIEVE_CHUNK):
            part = keys[start : start + _RETRIEVE_CHUNK]
            records = self.connection.call(
                lambda part=part: self.client.retrieve(
                    name, ids=part, with_payload=False, with_vectors=False
                ),
                what=f"looking up {len(part)} point ids in '{name}'",
                name=name,
            )
            found.update(wanted[str(r.id)] for r in records if str(r.id) in wanted)
        return found

    def retrieve(self, name: str, ids: Sequence[str]) -> list[Point]:
        """The stored points among `ids`, with vectors and payload, looked up by id (an id
        that is not a UUID is simply not there)."""
        wanted = uuid_ids(ids)
        if not wanted:
            return []
        records = self.connection.call(
            lambda: self.client.retrieve(
                name, ids=list(wanted), with_payload=True, with_vectors=True
            ),
            what=f"reading {len(wanted)} points of '{name}'",
            name=name,
        )
        return [
            Point(id=wanted[str(r.id)], vectors=_vectors_of(r.vector), payload=r.payload or {})
            for r in records
            if str(r.id) in wanted
        ]

    def count(self, name: str) -> int:
        """Exact number of points."""
        result = self.connection.call(
            lambda: self.client.count(name, exact=True),
            what=f"counting the points of '{name}'",
            name=name,
        )
        return int(result.count)

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
        best first; points without that vector are never returned. The server walks the
        HNSW index of the segments it has indexed (`hnsw_ef` candidates, default HNSW_EF;
        rescored when quantized) and scans the others; `exact=True` scans all."""
        query = as_floats(vector)
        self._check_query(name, vector_name, query)
        checked = self._check_where(name, Where.of(where))
        ef = search_ef(hnsw_ef, bool(checked))
        if k <= 0:
            return []
        params = None if self._exact_only else self._search_params(name, exact, ef)
        response = self.connection.call(
            lambda: self.client.query_points(
                name,
                query=query,
                using=vector_name,
                limit=int(k),
                query_filter=_server_filter(checked),
                search_params=params,
                with_payload=True,
                with_vectors=False,
            ),
            what=f"searching '{name}'",
            name=name,
        )
        return [
            Hit(id=str(p.id), score=float(p.score), payload=p.payload or {})
            for p in response.points
        ]

    def _search_params(self, name: str, exact: bool | None, ef: int) -> Any:
        """Exact, or the server's choice (HNSW where indexed) with `ef` candidates and
        oversampled rescoring of int8 scores."""
        if exact:
            return qm.SearchParams(exact=True)
        rescore = None
        if self._quantize_for(name):
            rescore = qm.QuantizationSearchParams(
                rescore=True, oversampling=QUANTIZATION_OVERSAMPLING
            )
        return qm.SearchParams(hnsw_ef=ef, quantization=rescore)

    def _quantize_for(self, name: str) -> str | None:
        """The collection's quantization, cached per name (an alias switch is picked up when
        the dims are re-read: see _check_query)."""
        if name not in self._quantize:
            self._read_config(name)
        return self._quantize[name]

    def _check_query(self, name: str, vector_name: str, query: Sequence[float]) -> None:
        """check_dims against the cached dims, re-read once on a mismatch: an alias may have
        been switched to a collection with other vectors since they were cached."""
        try:
            check_dims(name, vector_name, self._vector_dims(name), query)
        except JointspaceError:
            check_dims(name, vector_name, self._vector_dims(name, refresh=True), query)

    def _check_where(self, name: str, where: Where) -> Where:
        """where.for_fields against the cached fields, re-read once on an error: an alias may
        have been switched since they were cached."""
        if not where:
            return where
        try:
            return where.for_fields(self._filterable_of(name), name)
        except JointspaceError:
            return where.for_fields(self._filterable_of(name, refresh=True), name)

    def scroll(self, name: str, batch_size: int = 256) -> Iterator[Point]:
        """Every point with its vectors and payload, in id order."""
        offset: Any = None
        while True:
            records, offset = self.connection.call(
                lambda offset=offset: self.client.scroll(
                    name,
                    limit=int(batch_size),
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                ),
                what=f"reading the points of '{name}'",
                name=name,
            )
            for r in records:
                yield Point(id=str(r.id), vectors=_vectors_of(r.vector), payload=r.payload or {})
            if offset is None:
                return

    def close(self) -> None:
        """Close the client's connections (and, in local mode, release its folder)."""
        self.client.close()


# -- module helpers ------------------------------------------------------------------------------


def _alias_switch(alias: str, collection: str, aliases: Mapping[str, str]) -> list[Any]:
    """The operations that point `alias` at `collection`: none if it already does, else a
    create, preceded by a delete if the alias exists (applied together, atomically)."""
    current = aliases.get(alias)
    if current == collection:
        return []
    create = qm.CreateAliasOperation(
        create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
    )
    if current is None:
        return [create]
    return [qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)), create]


def _no_such_alias(alias: str, where: str) -> JointspaceError:
    return JointspaceError(f"There is no alias '{alias}' on {where}.")


def _is_an_alias(name: str, collection: str, where: str) -> JointspaceError:
    return JointspaceError(
        f"'{name}' is an alias of collection '{collection}' on {where}, not a collection; drop "
        f"'{collection}' itself if that is what you mean."
    )


def _server_filter(where: Where) -> qm.Filter | None:
    """The qdrant-client filter of a checked `where`: every clause must hold."""
    clauses = where.clauses()
    return qm.Filter(must=[_server_condition(c) for c in clauses]) if clauses else None


def _server_condition(clause: Clause) -> qm.FieldCondition | qm.Filter:
    if isinstance(clause, Equals):
        return qm.FieldCondition(key=clause.key, match=qm.MatchValue(value=clause.value))
    if isinstance(clause, AnyOf):
        return qm.FieldCondition(key=clause.key, match=qm.MatchAny(any=list(clause.values)))
    if isinstance(clause, Range):
        return qm.FieldCondition(key=clause.key, range=qm.Range(**clause.bounds()))
    assert isinstance(clause, Either)
    return qm.Filter(should=[_server_condition(option) for option in clause.options])


def _quantize_of(config: Any) -> str | None:
    """ "int8" if the collection config has scalar int8 quantization, else None."""
    quantization = getattr(config, "quantization_config", None)
    scalar = getattr(getattr(quantization, "scalar", None), "type", None)
    return (
        "int8" if scalar is not None and str(getattr(scalar, "value", scalar)) == "int8" else None
    )


def _dims_of(vectors: Any) -> dict[str, int]:
    if isinstance(vectors, Mapping):
        return {vname: int(params.size) for vname, params in vectors.items()}
    return {"": int(vectors.size)}  # a single unnamed vector; jointspace never creates those


def _vectors_of(vector: Any) -> dict[str, list[float]]:
    if not vector:
        return {}
    if isinstance(vector, Mapping):
        return {vname: list(vec) for vname, vec in vector.items()}
    return {"": list(vector)}

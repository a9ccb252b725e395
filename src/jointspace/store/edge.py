"""The embedded backend: Qdrant Edge (`qdrant-edge-py` 0.9, beta), Qdrant's engine in-process.

Layout under the store's home directory::

    {home}/collections/{name}/collection.json   vector dims, keyword fields, jointspace metadata
    {home}/collections/{name}/shard/             the Edge shard (segments + WAL)
    {home}/locks/{name}.lock                     our lock of the collection (see store/lock.py)
    {home}/aliases.json                          alias -> collection (absent: no aliases)

One Edge shard is one collection. Edge keeps no collection metadata, so `collection.json` holds
it; it is written atomically (temporary file + os.replace) and written last on creation, so a
directory without it is an unfinished creation, not a collection.

A collection is used by one store (one process) at a time. Edge locks a shard's WAL while it is
open, but a refused `EdgeShard.load` still touches the files of the shard that another process
holds, and that used to kill the holder (a running ingest) at its next flush. So every call that
opens a shard (load, create) or removes one (drop) first takes our own per-collection lock,
`jointspace.store.lock.CollectionLock` (flock on `{home}/locks/{name}.lock`), and a refused
process never calls Edge for that collection: it gets one sentence naming the holder's pid,
command and start time. Shards are opened lazily and kept open, with their locks, until close()
(or `_release`); a refused opener waits up to 2 s if the holder is only reading (see lock.py).
`list_infos` reports a held collection as "busy" without waiting and without touching Edge.

Disk space. Edge maps its files, so a full disk kills the process with SIGBUS (no message)
instead of raising: every write is preceded by a check of the free space (shutil.disk_usage)
against what Edge was measured to need (create: ~3 MiB plus ~2 MiB per keyword index; an upsert:
about twice the batch's raw size), with generous margins, and raises one sentence that says how
much is free and needed; an Edge error that says ENOSPC becomes the same kind of sentence. On
tmpfs, loading a shard also fills the holes of its pre-sized 32 MiB vector chunk files (reading a
hole allocates there), so a load on tmpfs first checks that those holes fit.

Aliases. Edge has none, so this module keeps them in `aliases.json`, replaced atomically
(temporary file + os.replace) under an advisory lock (`.aliases.lock`, so that two processes
switching aliases do not lose each other's change). Every call that takes a collection name
resolves it anew (one stat of the file; it is re-read only when it changed), so a switch is
atomic for every call that starts after it, in this process and in others: each call sees the
old collection or the new one, never a mix; a call already running finishes on the collection it
started on. Edge's one-opener lock still applies: a process can only follow an alias to a
collection that no other process holds open, so the ingesting process should close its store
after switching, and the old collection can be dropped only once readers have let go of it.
Dropping a collection removes the aliases that point to it (as Qdrant does).

Bulk uploads. begin_bulk/end_bulk keep the base no-ops: an Edge shard builds no index unless
optimize() is called, which only `build_index` does (ingest calls it above
indexing.INDEX_THRESHOLD units; the numbers are in store/indexing.py).

The HNSW index. Shards are created with HNSW parameters (indexing.HNSW_M, HNSW_EF_CONSTRUCT),
a full-scan threshold of indexing.FULL_SCAN_UNITS units (segments and filter matches below it
are scanned), an indexing threshold of 1 KB (so that optimize() indexes every segment, however
small) and, for `quantize="int8"`, scalar int8 quantization
kept in RAM; collection.json records them ("hnsw", "quantize"). `build_index` runs optimize()
(blocking: it merges the segments and builds one graph per named vector, plus the int8
copies), then records "index" in collection.json: that is what `indexed` reads, and what makes
`search` pass hnsw_ef (FILTERED_HNSW_EF with a filter; rescore=True with oversampling when
quantized) instead of exact=True; a filter that the payload index estimates to match at most
indexing.FILTER_EXACT_UNITS units is searched exactly all the same (a count with exact=False
first). A shard created with other settings (before they existed)
is reloaded with ours first (EdgeShard.load with a config rewrites the shard's). Checked
against 0.9.0 (benchmarks/scale.py): an optimized shard answers through the graph (300k units:
0.6 ms vs 31.5 ms with exact=True, recall@10 1.000; optimize() took 11 min on 2 busy cores,
4 min with int8); points upserted afterwards go to a new appendable, unindexed segment that
every search scans too, so they are found at once (and the next build_index indexes them); a
reloaded shard keeps its index; on a quantized shard a search without rescore=True returns
int8 scores. optimize() merges into one indexed segment plus an empty appendable one, built in
shard/temp_segments beside the old segments (at 1M units 6.5 GB beside 6.4 GB) before they are
deleted, so it is given the shard's size again (x1.5) in free space, checked first.
optimize() holds the GIL until it returns: no other thread of the process runs meanwhile (a
progress message must be printed before it starts, not by a thread during it).

Edge quirks this module relies on (checked against 0.9.0):
- a point may lack some named vectors (or all of them); a search on a vector it lacks skips it;
- MatchValue on a list-valued payload field matches when any element equals the value;
- MatchValue(True) means MatchValue(1) unless given numpy's bool (see _edge_condition); an
  integer payload index leaves float values out, so a range misses them (hence typed fields);
- point ids come back as `uuid.UUID`, cosine vectors come back L2-normalised;
- every failure is a bare `Exception`; `retrieve` takes `with_payload` positionally.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from jointspace.errors import JointspaceError, NotFound
from jointspace.store._common import (
    as_floats,
    canonical_ids,
    check_dims,
    check_name,
    clean_metadata,
    uuid_ids,
)
from jointspace.store.base import CollectionInfo, Hit, Point, Store
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
    FILTER_EXACT_UNITS,
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    QUANTIZATION_OVERSAMPLING,
    check_quantize,
    full_scan_threshold_kb,
    search_ef,
)
from jointspace.store.lock import DEFAULT_WAIT_S, READING, WRITING, CollectionBusy, CollectionLock

_META_FILE = "collection.json"
_ALIASES_FILE = "aliases.json"
_ALIASES_LOCK = ".aliases.lock"
_SHARD_DIR = "shard"
_FORMAT = 1
_INDEX_SCHEMA = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
}
# Serialises alias updates between threads of this process; flock (below) does it between
# processes. Where fcntl is missing (Windows) only the former protects.
_ALIAS_THREAD_LOCK = threading.Lock()

# Free space that each kind of write requires (measured with qdrant-edge 0.9 on tmpfs: an empty
# shard takes ~3 MiB plus ~2 MiB per keyword index; an upsert grows the shard by 1.1-2.2 times
# the batch's raw size, WAL included). The margins are deliberate: running out means SIGBUS.
_MiB = 1 << 20
_CREATE_NEED = 32 * _MiB
_CREATE_NEED_PER_INDEX = 2 * _MiB
_UPSERT_NEED = 16 * _MiB
_UPSERT_FACTOR = 3
_LOAD_NEED = 4 * _MiB
# build_index: optimize() writes the indexed segment (vectors, graph, int8 copies) in
# shard/temp_segments before it deletes the old ones: the shard briefly doubles (seen at 1M
# units: 6.5 GB of temp_segments beside 6.4 GB of segments; at 3k units 43 -> 63 MB peak).
_INDEX_NEED = 64 * _MiB
_INDEX_FACTOR = 1.5
# Segments of at least this many KB of vectors are indexed by optimize(): all of them, since
# only build_index calls it.
_INDEXING_THRESHOLD_KB = 1


class EdgeStore(Store):
    """Collections stored under `home` with Qdrant Edge. A collection is open in one store at a
    time (in one process): the first call that touches its points opens and locks it until
    close(); has_collection and list_collections need no lock."""

    def __init__(
        self, home: Path, owner: str | None = None, *, wait: float = DEFAULT_WAIT_S
    ) -> None:
        """`owner` describes this process to the processes it refuses (default: its command
        line, shortened); `wait`: how long an opener waits for a collection that another
        process holds only for reading (see store/lock.py)."""
        self.home = Path(home)
        self.owner = owner
        self.wait = wait
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, dict[str, int]] = {}  # vector dims of open collections
        # (indexed, quantize) of open collections: how search queries them
        self._modes: dict[str, tuple[bool, str | None]] = {}
        self._held: dict[str, CollectionLock] = {}  # our locks of the open collections
        self._opening: dict[str, threading.Lock] = {}  # one opener per collection at a time
        self._lock = threading.Lock()
        self._closed = False
        # (identity of aliases.json when read, its aliases): re-read only when the file changes.
        self._aliases_seen: tuple[tuple[int, int, int] | None, dict[str, str]] = (None, {})

    # -- paths and metadata file -------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        check_name(name)
        return self.home / "collections" / name

    def _no_such(self, name: str) -> NotFound:
        return NotFound(
            f"There is no collection '{name}' in {self.home}; "
            "list them with `jointspace collections list`."
        )

    def _read_meta(self, name: str) -> dict[str, Any]:
        """collection.json, checked; a missing one means no such collection, a corrupt one
        raises one sentence that names the file."""
        path = self._dir(name) / _META_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise self._no_such(name) from None
        except OSError as exc:
            raise JointspaceError(
                f"Cannot read the collection file {path} ({exc.strerror or exc}); check its "
                "permissions."
            ) from None
        try:
            meta = json.loads(raw.decode("utf-8"))
            problem = _meta_problem(meta)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            problem = f"not valid JSON: {exc}"
        if problem:
            raise JointspaceError(
                f"The collection file {path} is corrupt ({problem}); restore it from a backup, "
                f"or drop the collection (`jointspace collections drop {name}`) and ingest it "
                "again."
            )
        return meta

    def _write_meta(self, name: str, meta: Mapping[str, Any]) -> None:
        try:
            _write_json_atomically(self._dir(name) / _META_FILE, meta)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(self.home, self._dir(name)) from None
            raise

    # -- shards --------------------------------------------------------------------------------

    def _shard(self, name: str, wait: float | None = None) -> qe.EdgeShard:
        """The open shard of an existing collection, opened on first use, after taking our
        lock of the collection (refused: CollectionBusy, and Edge is never called)."""
        self._check_open()
        with self._lock:
            shard = self._shards.get(name)
        if shard is not None:
            return shard
        if not self._is_collection(name):
            raise self._no_such(name)
        with self._opening_lock(name):
            with self._lock:
                shard = self._shards.get(name)
            if shard is not None:
                return shard
            shard, lock, meta = self._open_shard(name, self.wait if wait is None else wait)
            with self._lock:
                closed = self._closed
                if not closed:
                    self._shards[name] = shard
                    self._dims[name] = dict(meta["vectors"])
                    self._modes[name] = _mode_of(meta)
                    self._held[name] = lock
            if closed:  # close() ran meanwhile (another thread)
                shard.close()
                lock.release()
                self._check_open()
            return shard

    def _open_shard(
        self, name: str, wait: float
    ) -> tuple[qe.EdgeShard, CollectionLock, dict[str, Any]]:
        """Take our lock of the collection, then load its shard (the caller keeps both)."""
        lock = CollectionLock(self.home, name, self.owner)
        lock.acquire(READING, wait)
        try:
            meta = self._read_meta(name)  # checked under the lock: it may have been dropped
            shard_path = self._dir(name) / _SHARD_DIR
            _check_space(self.home, shard_path, _load_need(shard_path))
            with self._edge_errors(name):
                shard = qe.EdgeShard.load(str(shard_path))
        except BaseException:
            lock.release()
            raise
        return shard, lock, meta

    def _opening_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._opening.setdefault(name, threading.Lock())

    def _forget(self, name: str) -> tuple[qe.EdgeShard | None, CollectionLock | None]:
        with self._lock:
            self._dims.pop(name, None)
            self._modes.pop(name, None)
            return self._shards.pop(name, None), self._held.pop(name, None)

    def _release(self, name: str) -> None:
        """Close the collection's shard (if open here), then let go of its lock."""
        shard, lock = self._forget(name)
        try:
            if shard is not None:
                shard.close()
        finally:
            if lock is not None:
                lock.release()

    def _mark_writing(self, name: str) -> None:
        """Tell processes that we refuse that we write (they then stop waiting at once)."""
        with self._lock:
            lock = self._held.get(name)
        if lock is not None:
            lock.mark(WRITING)

    @contextlib.contextmanager
    def _edge_errors(self, name: str) -> Iterator[None]:
        """Turn Edge's bare exceptions into one-sentence JointspaceErrors."""
        try:
            yield
        except JointspaceError:
            raise
        except Exception as exc:
            raise _translate(exc, name, self.home) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise JointspaceError("This store has been closed; open a new one.")

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
        """Create the collection with a payload index per filterable field (`keyword_fields`,
        `fields` by kind, and those that `metadata` records, e.g. when copied), recorded in its
        metadata, and int8 quantization if `quantize="int8"` (recorded in collection.json);
        raises JointspaceError if it already exists."""
        self._check_open()
        quantize = check_quantize(quantize)
        filterable = filterable_fields(keyword_fields, fields, metadata.get(FILTERABLE_KEY))
        aliases = self.list_aliases()
        if name in aliases:
            raise JointspaceError(
                f"'{name}' already exists in {self.home} as an alias of collection "
                f"'{aliases[name]}'; choose another name."
            )
        if self._is_collection(name):
            raise JointspaceError(
                f"A collection named '{name}' already exists in {self.home}; choose another "
                f"name or drop it first (`jointspace collections drop {name}`)."
            )
        shard_path = self._dir(name) / _SHARD_DIR
        dims = {vname: int(size) for vname, size in vectors.items()}
        _check_space(self.home, shard_path, _CREATE_NEED + _CREATE_NEED_PER_INDEX * len(filterable))
        self._release(name)  # a create that failed in this very store may still hold it
        with self._opening_lock(name):
            lock = CollectionLock(self.home, name, self.owner)
            lock.acquire(WRITING, self.wait)
            shard = None
            try:
                if self._is_collection(name):  # created meanwhile by the process we waited for
                    raise JointspaceError(
                        f"A collection named '{name}' already exists in {self.home}; choose "
                        f"another name or drop it first (`jointspace collections drop {name}`)."
                    )
                # What an interrupted create left behind (a shard without collection.json):
                # nobody else can be using it, we hold its lock.
                if shard_path.exists():
                    shutil.rmtree(shard_path)
                config = _edge_config(dims, quantize)
                with self._edge_errors(name):
                    shard = qe.EdgeShard.create(str(shard_path), config)
                    for field_name, kind in filterable.items():
                        shard.update(
                            qe.UpdateOperation.create_field_index(field_name, _INDEX_SCHEMA[kind])
                        )
                    shard.flush()
                # Written last: its presence is what makes the directory a collection.
                self._write_meta(
                    name,
                    {
                        "format": _FORMAT,
                        "vectors": dims,
                        "keyword_fields": [f for f, k in filterable.items() if k == "keyword"],
                        "metadata": {**clean_metadata(metadata), FILTERABLE_KEY: filterable},
                        "quantize": quantize,
                        "hnsw": _hnsw_record(dims),
                    },
                )
            except BaseException:
                # An unfinished directory stays; the next create of this name removes it.
                with contextlib.suppress(Exception):
                    if shard is not None:
                        shard.close()
                lock.release()
                raise
            with self._lock:
                self._shards[name] = shard
                self._dims[name] = dims
                self._modes[name] = (False, quantize)
                self._held[name] = lock

    def has_collection(self, name: str) -> bool:
        """Whether the collection exists (or `name` is an alias of one)."""
        return self._is_collection(self.resolve(name))

    def _is_collection(self, name: str) -> bool:
        return (self._dir(name) / _META_FILE).is_file()

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        root = self.home / "collections"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if (p / _META_FILE).is_file())

    def list_infos(self) -> list[CollectionInfo]:
        """Every collection, each "ready" with its count, "busy" (another process holds it:
        `detail` says which; not waited for, Edge not touched) or "broken" (`detail` says why,
        e.g. a corrupt collection.json). Collections this store did not have open are closed
        again afterwards, so that listing does not keep them locked."""
        self._check_open()
        return [self._list_info(name) for name in self.list_collections()]

    def _list_info(self, name: str) -> CollectionInfo:
        try:
            meta = self._read_meta(name)
        except JointspaceError as exc:
            return CollectionInfo(
                name=name, points=None, vectors={}, metadata={}, state="broken", detail=str(exc)
            )
        vectors, metadata = dict(meta["vectors"]), dict(meta["metadata"])
        indexed, quantize = _mode_of(meta)
        try:
            with self._opening_lock(name):
                with self._lock:
                    shard = self._shards.get(name)
                if shard is not None:  # open here already: count it
                    with self._edge_errors(name):
                        points = int(shard.count(qe.CountRequest(exact=True)))
                else:  # open it just for the count, without waiting and without keeping it
                    shard, lock, _ = self._open_shard(name, wait=0.0)
                    try:
                        with self._edge_errors(name):
                            points = int(shard.count(qe.CountRequest(exact=True)))
                    finally:
                        try:
                            shard.close()
                        finally:
                            lock.release()
        except CollectionBusy as exc:
            return CollectionInfo(
                name, None, vectors, metadata, "busy", str(exc), indexed, quantize
            )
        except JointspaceError as exc:
            return CollectionInfo(
                name, None, vectors, metadata, "broken", str(exc), indexed, quantize
            )
        return CollectionInfo(
            name=name,
            points=points,
            vectors=vectors,
            metadata=metadata,
            indexed=indexed,
            quantize=quantize,
        )

    def info(self, name: str) -> CollectionInfo:
        """Point count, vector dims and metadata (of the collection an alias points to);
        raises JointspaceError if there is no such collection (or if another process holds it:
        counting needs the shard)."""
        target = self.resolve(name)
        meta = self._read_meta(target)
        indexed, quantize = _mode_of(meta)
        return CollectionInfo(
            name=name,
            points=self.count(target),
            vectors=dict(meta["vectors"]),
            metadata=dict(meta["metadata"]),
            indexed=indexed,
            quantize=quantize,
        )

    def set_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Replace the collection's jointspace metadata (an alias's collection's), except its
        record of filterable fields, which stays."""
        target = self._shard_name_for_write(name)
        meta = self._read_meta(target)
        meta["metadata"] = keep_filterable(clean_metadata(metadata), meta["metadata"])
        self._write_meta(target, meta)

    def add_filterable_fields(self, name: str, fields: Mapping[str, FieldKind]) -> None:
        """Index more payload fields (key -> kind) and record them as filterable; a field
        already filterable keeps its kind."""
        target = self._shard_name_for_write(name)
        shard = self._shard(target)
        meta = self._read_meta(target)
        recorded = recorded_fields(meta["metadata"]) or {}
        new = filterable_fields((), {k: v for k, v in fields.items() if k not in recorded})
        if not new:
            return
        with self._edge_errors(name):
            for field_name, kind in new.items():
                shard.update(qe.UpdateOperation.create_field_index(field_name, _INDEX_SCHEMA[kind]))
            shard.flush()
        meta["metadata"][FILTERABLE_KEY] = {**recorded, **new}
        meta["keyword_fields"] = [f for f, k in {**recorded, **new}.items() if k == "keyword"]
        self._write_meta(target, meta)

    def drop_collection(self, name: str) -> None:
        """Delete the collection, its points and the aliases pointing to it; raises
        JointspaceError if it does not exist or if `name` is an alias (drop the collection
        itself, deliberately)."""
        aliases = self.list_aliases()
        if name in aliases:
            raise JointspaceError(
                f"'{name}' is an alias of collection '{aliases[name]}' in {self.home}, not a "
                f"collection; drop '{aliases[name]}' itself if that is what you mean."
            )
        self._check_open()
        if not self._is_collection(name):
            raise self._no_such(name)
        # Our lock, not the shard: a collection whose collection.json or shard is broken can be
        # dropped too, and no other process can be using it meanwhile.
        with self._opening_lock(name):
            with self._lock:
                lock = self._held.get(name)
            if lock is None:
                lock = CollectionLock(self.home, name, self.owner)
                lock.acquire(WRITING, self.wait)
            else:
                lock.mark(WRITING)
            try:
                shard, _ = self._forget(name)
                if shard is not None:
                    shard.close()
                if not self._is_collection(name):  # dropped by the process we waited for
                    raise self._no_such(name)
                # Aliases first: an alias left pointing at a half-deleted collection would
                # break readers.
                self._update_aliases(lambda current: _without_target(current, name))
                # Unlink the marker first: if the rmtree below is interrupted, what is left is an
                # unfinished directory that the next create of this name cleans up.
                (self._dir(name) / _META_FILE).unlink(missing_ok=True)
                shutil.rmtree(self._dir(name), ignore_errors=True)
            finally:
                lock.release()  # the lock file stays (see store/lock.py)

    # -- points --------------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or replace points by id; durable when it returns (the shard is flushed)."""
        if not points:
            return
        target = self._shard_name_for_write(name)
        shard = self._shard(target)
        _check_space(
            self.home,
            self._dir(target) / _SHARD_DIR,
            _UPSERT_NEED + _UPSERT_FACTOR * _raw_size(points),
        )
        edge_points = [
            qe.Point(
                str(p.id),
                {vname: as_floats(vec) for vname, vec in p.vectors.items()},
                dict(p.payload),
            )
            for p in points
        ]
        with self._edge_errors(name):
            shard.update(qe.UpdateOperation.upsert_points(edge_points))
            shard.flush()

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` already stored."""
        if not ids:
            return set()
        shard = self._shard(self.resolve(name))
        wanted = canonical_ids(ids)
        with self._edge_errors(name):
            records = shard.retrieve(list(wanted), False, False)
        return {wanted[str(r.id)] for r in records if str(r.id) in wanted}

    def retrieve(self, name: str, ids: Sequence[str]) -> list[Point]:
        """The stored points among `ids`, with vectors and payload, looked up by id (an id
        that is not a UUID is simply not there)."""
        wanted = uuid_ids(ids)
        if not wanted:
            return []
        shard = self._shard(self.resolve(name))
        with self._edge_errors(name):
            records = shard.retrieve(list(wanted), True, True)
        return [
            Point(id=wanted[str(r.id)], vectors=_vectors_of(r), payload=r.payload or {})
            for r in records
            if str(r.id) in wanted
        ]

    def count(self, name: str) -> int:
        """Exact number of points."""
        shard = self._shard(self.resolve(name))
        with self._edge_errors(name):
            return int(shard.count(qe.CountRequest(exact=True)))

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
        best first; points without that vector are never returned. Through the HNSW index
        (`hnsw_ef` candidates, default HNSW_EF) if the collection is indexed and `exact` is
        not True, else exact (`exact=False` on an unindexed collection is exact too)."""
        target = self.resolve(name)
        shard = self._shard(target)
        query = as_floats(vector)
        check_dims(name, vector_name, self._dims[target], query)
        checked = Where.of(where)
        if checked:
            checked = checked.for_fields(self.filterable_fields(target), name)
        mode = self._modes.get(target, (False, None))
        params = _search_params(mode, exact, hnsw_ef, bool(checked))
        if k <= 0:
            return []
        edge_filter = _edge_filter(checked)
        if edge_filter is not None and exact is None and mode[0]:
            # A filter that matches few units: exact through the payload index (its estimate,
            # no vector read), where the graph walk could miss some of them.
            with self._edge_errors(name):
                matches = shard.count(qe.CountRequest(exact=False, filter=edge_filter))
            if matches <= FILTER_EXACT_UNITS:
                params = qe.SearchParams(exact=True)
        request = qe.QueryRequest(
            limit=int(k),
            query=qe.Query.Nearest(query, using=vector_name),
            filter=edge_filter,
            with_payload=True,
            with_vector=False,
            params=params,
        )
        with self._edge_errors(name):
            scored = shard.query(request)
        return [Hit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in scored]

    def build_index(self, name: str) -> None:
        """Build the HNSW index of every named vector (and the int8 copies of a quantized
        collection) with optimize(), blocking until it is done (holding the GIL: the
        process's other threads wait too), and record it in collection.json; searches use it
        from then on. Points upserted afterwards are searched exactly until the next
        build_index, which indexes them too. Checks first that the free space covers the
        rewrite (about the shard's size again)."""
        target = self._shard_name_for_write(name)
        meta = self._read_meta(target)
        shard_path = self._dir(target) / _SHARD_DIR
        _check_space(
            self.home, shard_path, _INDEX_NEED + int(_INDEX_FACTOR * _disk_bytes(shard_path))
        )
        dims = dict(meta["vectors"])
        if meta.get("hnsw") != _hnsw_record(dims):  # other (older) HNSW settings: apply ours
            self._reload_with(target, _edge_config(dims, None))
            meta["hnsw"] = _hnsw_record(dims)
        shard = self._shard(target)
        with self._edge_errors(name):
            shard.optimize()
            shard.flush()
            points = int(shard.count(qe.CountRequest(exact=True)))
        meta["index"] = {"kind": "hnsw", "points": points}
        self._write_meta(target, meta)
        with self._lock:
            if target in self._shards:
                self._modes[target] = _mode_of(meta)

    def _reload_with(self, name: str, config: qe.EdgeConfig) -> None:
        """Close the open shard of `name` and load it again with `config` (which Edge writes
        into the shard), keeping our lock of the collection throughout."""
        with self._opening_lock(name):
            with self._lock:
                shard = self._shards.pop(name, None)
            try:
                if shard is not None:
                    shard.close()
                with self._edge_errors(name):
                    shard = qe.EdgeShard.load(str(self._dir(name) / _SHARD_DIR), config)
            except BaseException:
                self._release(name)  # let go of the lock too: the next call reopens cleanly
                raise
            with self._lock:
                self._shards[name] = shard

    def filterable_fields(self, name: str) -> dict[str, str] | None:
        """The payload fields a `where` may name (key -> kind), as the collection (or the one
        an alias points to) records them; None if it records none (made before they were)."""
        return recorded_fields(self._read_meta(self.resolve(name))["metadata"])

    def scroll(self, name: str, batch_size: int = 256) -> Iterator[Point]:
        """Every point with its vectors and payload, in id order."""
        shard = self._shard(self.resolve(name))
        offset: Any = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=int(batch_size), with_payload=True, with_vector=True
            )
            with self._edge_errors(name):
                records, offset = shard.scroll(request)
            for r in records:
                yield Point(id=str(r.id), vectors=_vectors_of(r), payload=r.payload or {})
            if offset is None:
                return

    # -- aliases -------------------------------------------------------------------------------

    def list_aliases(self) -> dict[str, str]:
        """Every alias and the collection it points to (read from aliases.json)."""
        path = self.home / _ALIASES_FILE
        try:
            stat = path.stat()
        except FileNotFoundError:
            return {}
        identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        seen, aliases = self._aliases_seen
        if identity != seen:
            aliases = _read_aliases(path)
            self._aliases_seen = (identity, aliases)
        return dict(aliases)

    def resolve(self, name: str) -> str:
        """The collection an alias points to, or `name` itself when it is not an alias."""
        check_name(name)
        return self.list_aliases().get(name, name)

    def set_alias(self, alias: str, collection: str) -> None:
        """Point `alias` at `collection` by replacing aliases.json atomically: every call that
        starts afterwards, in any process, uses the new collection. Raises JointspaceError if
        `collection` is not a collection or `alias` is one."""
        check_name(alias)
        check_name(collection)
        self._check_open()

        def switch(current: dict[str, str]) -> dict[str, str]:
            if collection in current:
                raise JointspaceError(
                    f"'{collection}' is itself an alias (of '{current[collection]}'); point "
                    f"'{alias}' at a collection."
                )
            if not self._is_collection(collection):
                raise JointspaceError(
                    f"There is no collection '{collection}' in {self.home}; "
                    "list them with `jointspace collections list`."
                )
            if self._is_collection(alias):
                raise JointspaceError(
                    f"'{alias}' is a collection in {self.home}, so it cannot become an alias; "
                    "choose another alias name."
                )
            return {**current, alias: collection}

        self._update_aliases(switch)

    def delete_alias(self, alias: str) -> None:
        """Remove `alias`; its collection stays. Raises JointspaceError if there is none."""
        check_name(alias)
        self._check_open()

        def remove(current: dict[str, str]) -> dict[str, str]:
            if alias not in current:
                raise JointspaceError(f"There is no alias '{alias}' in {self.home}.")
            return {key: value for key, value in current.items() if key != alias}

        self._update_aliases(remove)

    def _update_aliases(self, change: Callable[[dict[str, str]], dict[str, str]]) -> None:
        """Read, change and atomically rewrite aliases.json, holding its lock throughout so
        that concurrent switches (other processes) are applied one after the other."""
        path = self.home / _ALIASES_FILE
        self.home.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.home / _ALIASES_LOCK):
            current = _read_aliases(path) if path.exists() else {}
            new = change(dict(current))
            if new != current:
                _write_json_atomically(path, {"format": _FORMAT, "aliases": new})

    def _shard_name_for_write(self, name: str) -> str:
        """The collection `name` resolves to, opened here and marked as being written."""
        target = self.resolve(name)
        self._shard(target)
        self._mark_writing(target)
        return target

    def close(self) -> None:
        """Flush and close every open shard, then release our locks of them."""
        with self._lock:
            shards, self._shards, self._dims = list(self._shards.values()), {}, {}
            self._modes = {}
            locks, self._held = list(self._held.values()), {}
            self._closed = True
        try:
            for shard in shards:
                shard.close()
        finally:
            for lock in locks:
                lock.release()


# -- module helpers ------------------------------------------------------------------------------


def _hnsw_record(dims: Mapping[str, int]) -> dict[str, int]:
    """What collection.json records of the HNSW settings a shard was given (_edge_config)."""
    return {
        "m": HNSW_M,
        "ef_construct": HNSW_EF_CONSTRUCT,
        "full_scan_threshold_kb": full_scan_threshold_kb(dims),
        "indexing_threshold_kb": _INDEXING_THRESHOLD_KB,
    }


def _edge_config(dims: Mapping[str, int], quantize: str | None) -> qe.EdgeConfig:
    """A shard's configuration: cosine vectors of `dims`, the HNSW settings that build_index
    uses, and int8 quantization (kept in RAM) when `quantize` says so (None: as it is)."""
    quantization = None
    if quantize == "int8":
        quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True)
    return qe.EdgeConfig(
        vectors={
            vname: qe.EdgeVectorParams(size=int(size), distance=qe.Distance.Cosine)
            for vname, size in dims.items()
        },
        hnsw_config=qe.HnswIndexConfig(
            m=HNSW_M,
            ef_construct=HNSW_EF_CONSTRUCT,
            full_scan_threshold=full_scan_threshold_kb(dims),
        ),
        quantization_config=quantization,
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=_INDEXING_THRESHOLD_KB),
    )


def _mode_of(meta: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(indexed, quantize) as collection.json records them."""
    return bool(meta.get("index")), meta.get("quantize")


def _search_params(
    mode: tuple[bool, str | None], exact: bool | None, hnsw_ef: int | None, filtered: bool
) -> qe.SearchParams:
    """Exact, or through the index with search_ef candidates and oversampled rescoring of
    int8 scores."""
    indexed, quantize = mode
    ef = search_ef(hnsw_ef, filtered)
    if exact or (exact is None and not indexed):
        return qe.SearchParams(exact=True)
    rescore = None
    if quantize:
        rescore = qe.QuantizationSearchParams(rescore=True, oversampling=QUANTIZATION_OVERSAMPLING)
    return qe.SearchParams(hnsw_ef=ef, quantization=rescore)


def _edge_filter(where: Where) -> qe.Filter | None:
    """The Edge filter of a checked `where`: every clause must hold."""
    clauses = where.clauses()
    return qe.Filter(must=[_edge_condition(c) for c in clauses]) if clauses else None


def _edge_condition(clause: Clause) -> qe.FieldCondition | qe.Filter:
    if isinstance(clause, Equals):
        # The 0.9 bindings read a Python bool as the integer 1 or 0 (it is an int subclass), so
        # `true` would match 1 and miss true; numpy's bool reaches them as a boolean.
        value = np.bool_(clause.value) if isinstance(clause.value, bool) else clause.value
        return qe.FieldCondition(clause.key, match=qe.MatchValue(value))
    if isinstance(clause, AnyOf):
        return qe.FieldCondition(clause.key, match=qe.MatchAny(list(clause.values)))
    if isinstance(clause, Range):
        bounds = {op: float(bound) for op, bound in clause.bounds().items()}
        return qe.FieldCondition(clause.key, range=qe.RangeFloat(**bounds))
    assert isinstance(clause, Either)
    return qe.Filter(should=[_edge_condition(option) for option in clause.options])


def _vectors_of(record: Any) -> dict[str, list[float]]:
    vectors = record.vector or {}
    if not isinstance(vectors, dict):  # an unnamed vector; jointspace never creates those
        return {"": list(vectors)}
    return {vname: list(vec) for vname, vec in vectors.items()}


def _read_aliases(path: Path) -> dict[str, str]:
    """The alias map of an aliases.json (written whole by os.replace, so never partial)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise JointspaceError(
            f"The alias file {path} is unreadable ({exc}); fix or delete it."
        ) from None
    return {str(alias): str(target) for alias, target in data.get("aliases", {}).items()}


def _without_target(aliases: dict[str, str], collection: str) -> dict[str, str]:
    return {alias: target for alias, target in aliases.items() if target != collection}


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (blocking), released on exit or process death."""
    with _ALIAS_THREAD_LOCK, open(path, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _is_lock_error(exc: BaseException) -> bool:
    return "WouldBlock" in str(exc)


def _is_disk_full_error(exc: BaseException) -> bool:
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text


def _translate(exc: Exception, name: str, home: Path) -> JointspaceError:
    if _is_lock_error(exc):  # only a process that bypasses our lock (an older jointspace)
        return JointspaceError(
            f"The collection '{name}' in {home} is in use by another process (a running "
            "ingest?); wait for it to finish or stop it, then try again."
        )
    if _is_disk_full_error(exc):
        return _disk_full(home, Path(home) / "collections" / name)
    return JointspaceError(f"Qdrant Edge failed on collection '{name}' in {home}: {exc}")


# -- collection.json and disk space ---------------------------------------------------------------


def _meta_problem(meta: Any) -> str | None:
    """What is wrong with a parsed collection.json, or None."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    vectors = meta.get("vectors")
    if (
        not isinstance(vectors, dict)
        or not vectors
        or not all(
            isinstance(size, int) and not isinstance(size, bool) and size > 0
            for size in vectors.values()
        )
    ):
        return "'vectors' must map vector names to positive sizes"
    if not isinstance(meta.get("metadata"), dict):
        return "'metadata' must be a JSON object"
    fields = meta.get("keyword_fields", [])
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        return "'keyword_fields' must be a list of names"
    if not isinstance(meta.get("format", _FORMAT), int):
        return "'format' must be a number"
    if meta.get("quantize") not in (None, "int8"):
        return "'quantize' must be null or \"int8\""
    if not isinstance(meta.get("index") or {}, dict):
        return "'index' must be a JSON object"
    return None


def _free_bytes(path: Path) -> int | None:
    """Free bytes (for unprivileged users) on the file system of `path` or of its nearest
    existing ancestor; None if that cannot be told."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _disk_full(home: Path, where: Path, needed: int | None = None) -> JointspaceError:
    free = _free_bytes(where)
    have = "an unknown amount" if free is None else f"{free // _MiB} MB"
    want = "" if needed is None else f", {math.ceil(needed / _MiB)} MB needed"
    return JointspaceError(
        f"Not enough free space in {home} ({have} free{want}); free some space and re-run: "
        "what was written is kept."
    )


def _check_space(home: Path, where: Path, needed: int) -> None:
    """Raise the disk-full sentence unless `needed` bytes are free where `where` lives."""
    free = _free_bytes(where)
    if free is not None and free < needed:
        raise _disk_full(home, where, needed)


def _raw_size(points: Sequence[Point]) -> int:
    """Bytes of a batch before Edge stores it: its float32 vectors and its payloads as JSON."""
    total = 0
    for p in points:
        total += 64 + 4 * sum(len(vec) for vec in p.vectors.values())
        total += len(json.dumps(p.payload, default=str, ensure_ascii=False).encode())
    return total


def _disk_bytes(path: Path) -> int:
    """Bytes the files under `path` occupy on disk (allocated blocks, not apparent sizes)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for file_name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, file_name)).st_blocks * 512
    return total


def _load_need(shard_path: Path) -> int:
    """Free space that loading the shard takes. On tmpfs, loading fills the holes of the
    shard's sparse, pre-sized files (the 32 MiB vector chunks, measured; reading a hole there
    allocates it), all but the paged payload storage, which stays sparse."""
    need = _LOAD_NEED
    if _fs_type(shard_path) not in ("tmpfs", "ramfs"):
        return need
    for root, _dirs, files in os.walk(shard_path / "segments"):
        if "payload_storage" in Path(root).parts:
            continue
        for file_name in files:
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(root, file_name))
                need += max(0, st.st_size - st.st_blocks * 512)
    return need


def _fs_type(path: Path) -> str:
    """The type of the file system `path` is on ("tmpfs", "ext4", ...), "" if unknown (Linux:
    the longest matching mount point of /proc/mounts; a later mount there hides an earlier)."""
    try:
        real = os.path.realpath(path)
        with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    best, kind = "", ""
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, parts[2]
    return kind


def _write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

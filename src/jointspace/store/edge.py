"""The embedded backend: Qdrant Edge (`qdrant-edge-py` 0.9, beta), Qdrant's engine in-process.

Layout under the store's home directory::

    {home}/collections/{name}/collection.json   vector dims, keyword fields, jointspace metadata
    {home}/collections/{name}/shard/             the Edge shard (segments + WAL)

One Edge shard is one collection. Edge keeps no collection metadata, so `collection.json` holds
it; it is written atomically (temporary file + os.replace) and written last on creation, so a
directory without it is an unfinished creation, not a collection.

Edge locks a shard's WAL while it is open: a second opener, in this or another process, fails
with a plain `Exception` whose message contains "WouldBlock". Shards are opened lazily and kept
open until close(), so a process holding a store holds its collections' locks. Every call that
writes (create, set_metadata, drop, upsert) goes through the shard, hence through that lock.

Edge quirks this module relies on (checked against 0.9.0):
- a point may lack some named vectors (or all of them); a search on a vector it lacks skips it;
- MatchValue on a list-valued payload field matches when any element equals the value;
- point ids come back as `uuid.UUID`, cosine vectors come back L2-normalised;
- every failure is a bare `Exception`; `retrieve` takes `with_payload` positionally.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from jointspace.errors import JointspaceError
from jointspace.store._common import (
    as_floats,
    canonical_ids,
    check_dims,
    check_name,
    clean_metadata,
)
from jointspace.store.base import CollectionInfo, Hit, Point, Store

_META_FILE = "collection.json"
_SHARD_DIR = "shard"
_FORMAT = 1


class EdgeStore(Store):
    """Collections stored under `home` with Qdrant Edge. A collection is open in one store at a
    time (in one process): the first call that touches its points opens and locks it until
    close(); has_collection and list_collections need no lock."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, dict[str, int]] = {}  # vector dims of open collections
        self._lock = threading.Lock()
        self._closed = False

    # -- paths and metadata file -------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        check_name(name)
        return self.home / "collections" / name

    def _read_meta(self, name: str) -> dict[str, Any]:
        path = self._dir(name) / _META_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise JointspaceError(
                f"There is no collection '{name}' in {self.home}; "
                "list them with `jointspace collections list`."
            ) from None

    def _write_meta(self, name: str, meta: Mapping[str, Any]) -> None:
        _write_json_atomically(self._dir(name) / _META_FILE, meta)

    # -- shards --------------------------------------------------------------------------------

    def _shard(self, name: str) -> qe.EdgeShard:
        """The open shard of an existing collection, opened (and locked) on first use."""
        self._check_open()
        with self._lock:
            shard = self._shards.get(name)
            if shard is None:
                meta = self._read_meta(name)  # raises the "no such collection" error
                with self._edge_errors(name):
                    shard = qe.EdgeShard.load(str(self._dir(name) / _SHARD_DIR))
                self._shards[name] = shard
                self._dims[name] = dict(meta["vectors"])
            return shard

    def _release(self, name: str) -> None:
        with self._lock:
            shard = self._shards.pop(name, None)
            self._dims.pop(name, None)
        if shard is not None:
            shard.close()

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
    ) -> None:
        """Create the collection; raises JointspaceError if it already exists."""
        self._check_open()
        if self.has_collection(name):
            raise JointspaceError(
                f"A collection named '{name}' already exists in {self.home}; choose another "
                f"name or drop it first (`jointspace collections drop {name}`)."
            )
        shard_path = self._dir(name) / _SHARD_DIR
        self._remove_unfinished(name)
        config = qe.EdgeConfig(
            vectors={
                vname: qe.EdgeVectorParams(size=int(size), distance=qe.Distance.Cosine)
                for vname, size in vectors.items()
            }
        )
        with self._edge_errors(name):
            shard = qe.EdgeShard.create(str(shard_path), config)
            with self._lock:
                self._shards[name] = shard
                self._dims[name] = {vname: int(size) for vname, size in vectors.items()}
            for field_name in keyword_fields:
                shard.update(
                    qe.UpdateOperation.create_field_index(field_name, qe.PayloadSchemaType.Keyword)
                )
            shard.flush()
        # Written last: its presence is what makes the directory a collection.
        self._write_meta(
            name,
            {
                "format": _FORMAT,
                "vectors": {vname: int(size) for vname, size in vectors.items()},
                "keyword_fields": list(keyword_fields),
                "metadata": clean_metadata(metadata),
            },
        )

    def _remove_unfinished(self, name: str) -> None:
        """Delete what an interrupted create left behind (a shard without collection.json)."""
        shard_path = self._dir(name) / _SHARD_DIR
        self._release(name)  # a create that failed in this very store may still hold it
        if not shard_path.exists():
            return
        # Opening it first takes its lock, so a create running right now elsewhere is not wiped.
        try:
            qe.EdgeShard.load(str(shard_path)).close()
        except Exception as exc:
            if _is_lock_error(exc):
                raise _translate(exc, name, self.home) from exc
            # Any other failure means a half-written shard: nothing to protect.
        shutil.rmtree(shard_path)

    def has_collection(self, name: str) -> bool:
        """Whether the collection exists."""
        return (self._dir(name) / _META_FILE).is_file()

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        root = self.home / "collections"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if (p / _META_FILE).is_file())

    def info(self, name: str) -> CollectionInfo:
        """Point count, vector dims and metadata; raises JointspaceError if there is no such
        collection (or if another process holds it: counting needs the shard)."""
        meta = self._read_meta(name)
        return CollectionInfo(
            name=name,
            points=self.count(name),
            vectors=dict(meta["vectors"]),
            metadata=dict(meta["metadata"]),
        )

    def set_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Replace the collection's jointspace metadata."""
        self._shard(name)  # holding the shard's lock serialises writers across processes
        meta = self._read_meta(name)
        meta["metadata"] = clean_metadata(metadata)
        self._write_meta(name, meta)

    def drop_collection(self, name: str) -> None:
        """Delete the collection and its points; raises JointspaceError if it does not exist."""
        self._shard(name)  # fails if another process is using it
        # Unlink the marker first: if the rmtree below is interrupted, what is left is an
        # unfinished directory that the next create of this name cleans up.
        (self._dir(name) / _META_FILE).unlink()
        self._release(name)
        shutil.rmtree(self._dir(name), ignore_errors=True)

    # -- points --------------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or replace points by id; durable when it returns (the shard is flushed)."""
        if not points:
            return
        shard = self._shard(name)
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
        shard = self._shard(name)
        wanted = canonical_ids(ids)
        with self._edge_errors(name):
            records = shard.retrieve(list(wanted), False, False)
        return {wanted[str(r.id)] for r in records if str(r.id) in wanted}

    def count(self, name: str) -> int:
        """Exact number of points."""
        shard = self._shard(name)
        with self._edge_errors(name):
            return int(shard.count(qe.CountRequest(exact=True)))

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
        shard = self._shard(name)
        query = as_floats(vector)
        check_dims(name, vector_name, self._dims[name], query)
        if k <= 0:
            return []
        request = qe.QueryRequest(
            limit=int(k),
            query=qe.Query.Nearest(query, using=vector_name),
            filter=_edge_filter(where),
            with_payload=True,
            with_vector=False,
        )
        with self._edge_errors(name):
            scored = shard.query(request)
        return [Hit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in scored]

    def scroll(self, name: str, batch_size: int = 256) -> Iterator[Point]:
        """Every point with its vectors and payload, in id order."""
        shard = self._shard(name)
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

    def close(self) -> None:
        """Flush and close every open shard, releasing their locks."""
        with self._lock:
            shards, self._shards, self._dims = list(self._shards.values()), {}, {}
            self._closed = True
        for shard in shards:
            shard.close()


# -- module helpers ------------------------------------------------------------------------------


def _edge_filter(where: Mapping[str, str] | None) -> qe.Filter | None:
    """An Edge filter requiring each payload key to equal its value (any element, for lists)."""
    if not where:
        return None
    return qe.Filter(
        must=[qe.FieldCondition(key, match=qe.MatchValue(value)) for key, value in where.items()]
    )


def _vectors_of(record: Any) -> dict[str, list[float]]:
    vectors = record.vector or {}
    if not isinstance(vectors, dict):  # an unnamed vector; jointspace never creates those
        return {"": list(vectors)}
    return {vname: list(vec) for vname, vec in vectors.items()}


def _is_lock_error(exc: BaseException) -> bool:
    return "WouldBlock" in str(exc)


def _translate(exc: Exception, name: str, home: Path) -> JointspaceError:
    if _is_lock_error(exc):
        return JointspaceError(
            f"The collection '{name}' in {home} is in use by another process (a running "
            "ingest?); wait for it to finish or stop it, then try again."
        )
    return JointspaceError(f"Qdrant Edge failed on collection '{name}' in {home}: {exc}")


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

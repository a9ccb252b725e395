"""The embedded backend: Qdrant Edge (`qdrant-edge-py` 0.9, beta), Qdrant's engine in-process.

Layout under the store's home directory::

    {home}/collections/{name}/collection.json   vector dims, keyword fields, jointspace metadata
    {home}/collections/{name}/shard/             the Edge shard (segments + WAL)
    {home}/aliases.json                          alias -> collection (absent: no aliases)

One Edge shard is one collection. Edge keeps no collection metadata, so `collection.json` holds
it; it is written atomically (temporary file + os.replace) and written last on creation, so a
directory without it is an unfinished creation, not a collection.

Edge locks a shard's WAL while it is open: a second opener, in this or another process, fails
with a plain `Exception` whose message contains "WouldBlock". Shards are opened lazily and kept
open until close(), so a process holding a store holds its collections' locks. Every call that
writes (create, set_metadata, drop, upsert) goes through the shard, hence through that lock.

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
optimize() is called, and that is not cheap: on 20k points with three 512-d vectors (2 cores),
optimize() took 110 s to cut the median exact top-10 search from 2.5 ms to 2.0 ms (and, on
random vectors, recall@10 fell to 0.37). Exact search stays fast at this scale (21 ms at 100k
points, see ENVIRONMENT.md), so the store never calls it.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

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
_ALIASES_FILE = "aliases.json"
_ALIASES_LOCK = ".aliases.lock"
_SHARD_DIR = "shard"
_FORMAT = 1
# Serialises alias updates between threads of this process; flock (below) does it between
# processes. Where fcntl is missing (Windows) only the former protects.
_ALIAS_THREAD_LOCK = threading.Lock()


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
        # (identity of aliases.json when read, its aliases): re-read only when the file changes.
        self._aliases_seen: tuple[tuple[int, int, int] | None, dict[str, str]] = (None, {})

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

    def info(self, name: str) -> CollectionInfo:
        """Point count, vector dims and metadata (of the collection an alias points to);
        raises JointspaceError if there is no such collection (or if another process holds it:
        counting needs the shard)."""
        target = self.resolve(name)
        meta = self._read_meta(target)
        return CollectionInfo(
            name=name,
            points=self.count(target),
            vectors=dict(meta["vectors"]),
            metadata=dict(meta["metadata"]),
        )

    def set_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Replace the collection's jointspace metadata (an alias's collection's)."""
        target = self.resolve(name)
        self._shard(target)  # holding the shard's lock serialises writers across processes
        meta = self._read_meta(target)
        meta["metadata"] = clean_metadata(metadata)
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
        self._shard(name)  # fails if another process is using it
        # Aliases first: an alias left pointing at a half-deleted collection would break readers.
        self._update_aliases(lambda current: _without_target(current, name))
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
        shard = self._shard(self.resolve(name))
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
        where: Mapping[str, str] | None = None,
    ) -> list[Hit]:
        """The k nearest points by cosine similarity on one named vector, best first; points
        without that vector are never returned."""
        target = self.resolve(name)
        shard = self._shard(target)
        query = as_floats(vector)
        check_dims(name, vector_name, self._dims[target], query)
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

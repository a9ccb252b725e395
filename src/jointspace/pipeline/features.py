"""Backbone features for a stream of items, cached on disk so nothing is encoded twice.

The cache is one SQLite file per backbone fingerprint; rows are keyed by content hash (the
image file's bytes, or the text), so moving or renaming a corpus keeps its features. Image
decoding and preprocessing run in worker processes, overlapping backbone inference. A damaged
cache is moved aside and rebuilt with a warning (see `FeatureCache`); it never stops a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from ..corpus.images import decode_image, read_image_bytes
from ..corpus.item import Item, Skipped, bytes_hash, text_hash
from ..errors import BadItem, JointspaceError

PR_SET_PDEATHSIG = 1
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
logger = logging.getLogger("jointspace")


class FeatureEncoder(Protocol):
    """What turns images and texts into backbone features: the open_clip `Backbone`, or its
    towers exported for fast loading (`pipeline.towers.ExportedTowers`)."""

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def encode_images(self, batch: torch.Tensor) -> np.ndarray: ...

    def encode_texts(self, texts: list[str]) -> np.ndarray: ...


class _Damaged(Exception):
    """The cache file cannot be read as a feature cache (`reason`); it is to be rebuilt."""

    def __init__(self, reason: str, inode: tuple[int, int] | None) -> None:
        super().__init__(reason)
        self.reason, self.inode = reason, inode


class FeatureCache:
    """Feature vectors (float16 on disk) by content hash, for one backbone fingerprint.

    A cache is only a cache: a damaged file (not a database, truncated, garbled pages) is moved
    aside as FILE.corrupt-TIMESTAMP and rebuilt empty with a warning, and damaged rows are
    dropped, so their features are recomputed. A full disk or an unusable location stops the
    run with a `JointspaceError` that names the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._widths: dict[str, int] = {}  # vector bytes per kind, learned from the rows
        self._db, self._inode = self._open_or_rebuild()

    @classmethod
    def for_backbone(cls, home: Path, fingerprint: str) -> FeatureCache:
        """The cache of one backbone under a jointspace home folder."""
        return cls(home / "features" / f"{fingerprint}.sqlite")

    def get_many(self, kind: str, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, int, int]]:
        """Cached (vector, width, height) by hash for those of `hashes` present."""
        with self._lock:
            try:
                return self._get_many(kind, hashes)
            except sqlite3.ProgrammingError:  # a bug here, not a damaged file
                raise
            except sqlite3.Error as error:
                self._recover(error)
                return {}  # a rebuilt cache holds nothing yet

    def put_many(
        self, kind: str, rows: Iterable[tuple[str, np.ndarray, int | None, int | None]]
    ) -> None:
        """Store (hash, vector, width, height) rows."""
        values = [(kind, key, vec.astype(np.float16).tobytes(), w, h) for key, vec, w, h in rows]
        if not values:
            return
        with self._lock:
            if _identity(self.path) != self._inode:  # rebuilt or removed by another process
                self._db.close()
                self._widths.clear()
                self._db, self._inode = self._open_or_rebuild()
            try:
                self._put_many(values)
            except sqlite3.ProgrammingError:
                raise
            except sqlite3.Error as error:
                self._recover(error)
                try:
                    self._put_many(values)
                except sqlite3.Error as again:
                    raise self._fatal(again) from None
            self._widths.setdefault(kind, len(values[0][2]))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reading and writing ------------------------------------------------------------------

    def _get_many(self, kind: str, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, int, int]]:
        found: dict[str, tuple[np.ndarray, int, int]] = {}
        damaged: list[str] = []
        width = self._width(kind)
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT hash, vector, width, height FROM features "
                f"WHERE kind=? AND hash IN ({marks})",
                [kind, *chunk],
            )
            good: list[tuple[str, bytes, int, int]] = []
            for row in rows:
                _, blob, w, h = row
                # the usual case checked inline: this loop runs once per cached vector
                usual = (
                    type(blob) is bytes
                    and len(blob) == width
                    and (w is None or type(w) is int)
                    and (h is None or type(h) is int)
                )
                if usual or (problem := _row_problem(blob, w, h, width)) is None:
                    good.append(row)
                else:
                    damaged.append(problem)
            if not good:
                continue
            if width is None:  # nothing to compare lengths with: one row at a time
                vectors = [np.frombuffer(g[1], dtype=np.float16).astype(np.float32) for g in good]
                finite = [bool(np.isfinite(v).all()) for v in vectors]
            else:  # one array per chunk: far cheaper than NumPy calls per row
                joined = np.frombuffer(b"".join(g[1] for g in good), dtype=np.float16)
                vectors = joined.reshape(len(good), -1).astype(np.float32)
                finite = np.isfinite(vectors).all(axis=1).tolist()
            for (key, _, w, h), vector, ok in zip(good, vectors, finite, strict=True):
                if ok:
                    found[key] = (vector, w, h)
                else:
                    damaged.append("a vector that is not finite")
        if damaged:
            logger.warning(
                f"Feature cache {self.path} had {len(damaged)} damaged {kind} row(s) "
                f"({damaged[0]}); dropped them: their features will be recomputed."
            )
        return found

    def _width(self, kind: str) -> int | None:
        """The byte length of a `kind` vector: the commonest among a few stored rows."""
        if kind not in self._widths:
            lengths = Counter(
                length
                for (length,) in self._db.execute(
                    "SELECT length(vector) FROM features WHERE kind=? LIMIT 64", [kind]
                )
                if isinstance(length, int)
            )
            if lengths:
                self._widths[kind] = lengths.most_common(1)[0][0]
        return self._widths.get(kind)

    def _put_many(self, values: list[tuple[str, str, bytes, int | None, int | None]]) -> None:
        try:
            self._db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?)", values)
            self._db.commit()
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
            raise

    # --- opening, damage and rebuilding -------------------------------------------------------

    def _open_or_rebuild(self) -> tuple[sqlite3.Connection, tuple[int, int] | None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise self._unusable(error.strerror or str(error)) from None
        try:
            return self._open()
        except _Damaged as damaged:
            self._set_aside(damaged.reason, damaged.inode)
        try:
            return self._open()
        except _Damaged as damaged:  # damaged again at once: not something a rebuild mends
            raise self._fatal(damaged) from None

    def _open(self) -> tuple[sqlite3.Connection, tuple[int, int] | None]:
        """A connection to a healthy cache file (created if missing), and the file's identity;
        `_Damaged` if the file is not one."""
        inode = _identity(self.path)
        if inode is not None:
            problem = _header_problem(self.path)
            if problem is not None:
                raise _Damaged(problem, inode)
        # several processes (ingest workers, a concurrent train) may read while one writes
        try:
            db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        except sqlite3.Error as error:
            raise self._fatal(error) from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            columns = [row[1] for row in db.execute("PRAGMA table_info(features)")]
            if columns and columns != list(_COLUMNS):
                raise _Damaged(f"its features table has columns {', '.join(columns)}", inode)
            db.execute(
                "CREATE TABLE IF NOT EXISTS features (kind TEXT, hash TEXT, vector BLOB, "
                "width INTEGER, height INTEGER, PRIMARY KEY (kind, hash))"
            )
            db.commit()
        except (sqlite3.Error, _Damaged) as error:
            db.close()
            failure = self._failure(error, inode or _identity(self.path))
            raise failure from None
        return db, _identity(self.path)

    def _recover(self, error: sqlite3.Error) -> None:
        """Rebuild the cache if `error` says the file is damaged; otherwise stop the run."""
        failure = self._failure(error, self._inode)
        if not isinstance(failure, _Damaged):
            raise failure from None
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._widths.clear()
        self._set_aside(failure.reason, failure.inode)
        try:
            self._db, self._inode = self._open()
        except _Damaged as damaged:
            raise self._fatal(damaged) from None

    def _set_aside(self, reason: str, inode: tuple[int, int] | None) -> None:
        """Move the damaged file (and its -wal, -shm) aside, unless another process did."""
        with _folder_lock(self.path.parent):
            if inode is None or _identity(self.path) != inode:
                return  # gone, or already replaced by a fresh cache
            stamp = time.strftime("%Y%m%d-%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            for n in itertools.count(1):
                if not aside.exists():
                    break
                aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            try:
                os.replace(self.path, aside)
                for suffix in ("-wal", "-shm"):
                    side = self.path.with_name(self.path.name + suffix)
                    if side.exists():
                        os.replace(side, aside.with_name(aside.name + suffix))
            except OSError as error:
                raise JointspaceError(
                    f"Feature cache {self.path} is unreadable ({reason}) and cannot be moved "
                    f"aside ({error.strerror or error}); delete it and re-run."
                ) from None
        logger.warning(
            f"Feature cache {self.path} was unreadable ({reason}); rebuilt it, keeping the bad "
            f"file as {aside.name}: features will be recomputed."
        )

    def _failure(
        self, error: BaseException, inode: tuple[int, int] | None
    ) -> _Damaged | JointspaceError:
        """What an error means: a damaged file (to rebuild) or a run that must stop."""
        if isinstance(error, _Damaged):
            return error
        if isinstance(error, sqlite3.Error) and _error_code(error) in _DAMAGED:
            return _Damaged(str(error), inode)
        return self._fatal(error)

    def _fatal(self, error: BaseException) -> JointspaceError:
        code = _error_code(error) if isinstance(error, sqlite3.Error) else None
        if code == _SQLITE_FULL:
            return JointspaceError(
                f"No space left for the feature cache at {self.path}; free some space and "
                "re-run: what was written is kept."
            )
        if code in _UNUSABLE:
            return self._unusable(str(error))
        if code in _BUSY:
            return JointspaceError(
                f"The feature cache {self.path} stayed locked by another process ({error}); "
                "re-run when that one is done."
            )
        if isinstance(error, _Damaged):
            return JointspaceError(
                f"Feature cache {self.path} is unreadable ({error.reason}) even after a rebuild; "
                "delete it and re-run."
            )
        return JointspaceError(
            f"Cannot use the feature cache {self.path} ({error}); check the disk and re-run."
        )

    def _unusable(self, reason: str) -> JointspaceError:
        """The cache's location cannot hold it: say why, in words about the path if we can."""
        existing = next((p for p in (self.path, *self.path.parents) if p.exists()), None)
        if existing == self.path and self.path.is_dir():
            reason = "a folder is in the way"
        elif existing is not None and existing != self.path and not existing.is_dir():
            reason = f"{existing} is a file, not a folder"
        elif existing is not None and not os.access(existing, os.W_OK):
            reason = f"{existing} is read-only"
        return JointspaceError(
            f"Cannot keep the feature cache at {self.path} ({reason}); choose a home folder "
            "that can be written."
        )


_COLUMNS = ("kind", "hash", "vector", "width", "height")
# SQLite's primary result codes (https://sqlite.org/rescode.html)
_SQLITE_FULL = 13
_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_UNUSABLE = {3, 8, 14, 23}  # SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_AUTH
_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_MESSAGES = {  # Python < 3.11 has no sqlite_errorcode
    "database disk image is malformed": 11,
    "file is not a database": 26,
    "database or disk is full": 13,
    "unable to open database file": 14,
    "attempt to write a readonly database": 8,
    "database is locked": 5,
}


def _error_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    return next((c for text, c in _MESSAGES.items() if text in str(error)), None)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _header_problem(path: Path) -> str | None:
    """Why `path` is not a whole SQLite database, from its header and size (no full read)."""
    try:
        size = path.stat().st_size
        if size == 0:
            return None  # SQLite makes an empty file a new database
        with path.open("rb") as file:
            header = file.read(100)
        wal, journal = (path.with_name(path.name + end) for end in ("-wal", "-journal"))
        pending = (wal.exists() and wal.stat().st_size > 0) or journal.exists()
    except OSError:
        return None  # SQLite's own error will say what is wrong with the file
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return "not an SQLite database"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return "a damaged SQLite header"
    if pending:  # pages may still live in the write-ahead log or a hot journal
        return None
    pages = int.from_bytes(header[28:32], "big")
    header_is_current = header[24:28] == header[92:96]
    if size % page_size or (header_is_current and pages * page_size > size):
        return f"truncated: {size} bytes where its header says {pages * page_size}"
    return None


def _row_problem(blob: object, width: object, height: object, expected: int | None) -> str | None:
    if not isinstance(blob, bytes) or not blob or len(blob) % 2:
        return "a vector that is not float16 bytes"
    if expected is not None and len(blob) != expected:
        return f"a vector of {len(blob)} bytes where the others have {expected}"
    if not all(v is None or isinstance(v, int) for v in (width, height)):
        return "an image size that is not a number"
    return None


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Held while a damaged cache is moved aside, so two processes never both do it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class EncodedItem:
    """An item with its backbone features (None for a missing modality)."""

    item: Item
    image_features: np.ndarray | None
    text_features: np.ndarray | None
    image_sha256: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class _Prepared:
    item: Item
    image_sha256: str | None = None
    # numpy, not torch: a torch tensor crosses the process boundary through a shared-memory
    # file per tensor (measured: ~8 ms of the main process's CPU per image, more than the bf16
    # image tower itself), a numpy array as plain bytes (~0.3 ms)
    pixels: np.ndarray | None = None
    cached: np.ndarray | None = None
    width: int | None = None
    height: int | None = None


class _ImagePreparer:
    """Reads, hashes, cache-checks and decodes one record's image (in a worker process)."""

    def __init__(self, preprocess: Callable, cache_path: Path, max_pixels: int) -> None:
        self.preprocess = preprocess
        self.cache_path = cache_path
        self.max_pixels = max_pixels
        self._cache: FeatureCache | None = None

    def __call__(self, record: Item | Skipped) -> _Prepared | Skipped:
        if isinstance(record, Skipped):
            return record
        if record.image is None and record.image_bytes is None:
            return _Prepared(record)
        if self._cache is None:
            self._cache = FeatureCache(self.cache_path)
        try:
            data = read_image_bytes(record)
            digest = bytes_hash(data)
            hit = self._cache.get_many("image", [digest]).get(digest)
            if hit is not None:
                return _Prepared(record, digest, cached=hit[0], width=hit[1], height=hit[2])
            image = decode_image(data, record.image or record.key, max_pixels=self.max_pixels)
            pixels = self.preprocess(image).numpy()
            return _Prepared(record, digest, pixels, None, *image.size)
        except BadItem as bad:
            return Skipped(record.source, record.key, bad.reason)

    def close(self) -> None:
        """Close this preparer's own connection to the cache (it is not `encode_items`' one)."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None


_worker_preparer: _ImagePreparer | None = None


def _start_worker(preparer: _ImagePreparer, parent: int) -> None:
    global _worker_preparer
    _worker_preparer = preparer
    _die_with_parent(parent)
    # the main process owns Ctrl-C; one thread per worker, the cores go to the backbone
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def _die_with_parent(parent: int) -> None:
    """A worker forked after a store was opened holds its files (an Edge shard's lock): it must
    not outlive a parent killed with SIGKILL, or a re-run finds the collection "in use"."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown has to do
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _prepare_in_worker(record: Item | Skipped) -> _Prepared | Skipped:
    assert _worker_preparer is not None
    return _worker_preparer(record)


def keep_freed_memory() -> None:
    """Let glibc keep the memory the towers free. By default it maps every block above 128 KB
    afresh and returns freed memory to the system, and the towers allocate and free tens of MB
    of activations per batch: each batch page-faulted them in again (measured on a 512-image
    ingest: 4.2 s of system CPU out of 12, 6.2 s in all; with this, 1.2 s and 4.1 s). The
    process keeps its peak memory instead, which a bulk job reaches on its first batch anyway.
    Elsewhere than glibc this does nothing."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    except (OSError, AttributeError):
        pass


def _batched(records: Iterable[Item | Skipped], size: int) -> Iterator[list[Item | Skipped]]:
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def encode_items(
    records: Iterable[Item | Skipped],
    backbone: FeatureEncoder,
    cache: FeatureCache,
    batch_size: int = 32,
    workers: int = 1,
    max_pixels: int = 64_000_000,
    prefetch: int = 2,
) -> Iterator[list[EncodedItem | Skipped]]:
    """Encode a stream of items in batches, in order; bad items come out as `Skipped`.

    The main process reads `records` (so a reader or filter may use open files or a store) and
    hands batches to `workers` processes that decode images, `prefetch` batches ahead of the
    backbone; `workers=0` decodes in this process. Cached features are reused, new ones are
    written to the cache batch by batch. Memory is bounded by batch_size × (prefetch + 1)."""
    keep_freed_memory()
    preparer = _ImagePreparer(backbone.preprocess, cache.path, max_pixels)
    if workers == 0:
        try:
            for batch in _batched(records, batch_size):
                yield _encode_batch([preparer(r) for r in batch], backbone, cache)
        finally:
            preparer.close()
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, context, _start_worker, (preparer, os.getpid())) as pool:
        pending: deque[Iterator[_Prepared | Skipped]] = deque()
        chunk = max(1, batch_size // (2 * workers))
        for batch in _batched(records, batch_size):
            pending.append(pool.map(_prepare_in_worker, batch, chunksize=chunk))
            if len(pending) > prefetch:
                yield _encode_batch(list(pending.popleft()), backbone, cache)
        while pending:
            yield _encode_batch(list(pending.popleft()), backbone, cache)


def _encode_batch(
    batch: list[_Prepared | Skipped], backbone: FeatureEncoder, cache: FeatureCache
) -> list[EncodedItem | Skipped]:
    ready = [p for p in batch if isinstance(p, _Prepared)]
    to_encode = [p for p in ready if p.pixels is not None]
    if to_encode:
        pixels = torch.from_numpy(np.stack([p.pixels for p in to_encode]))
        features = backbone.encode_images(pixels)
        # round through float16 so fresh and cached features are bit-identical
        features = features.astype(np.float16).astype(np.float32)
        for prepared, vector in zip(to_encode, features, strict=True):
            prepared.cached, prepared.pixels = vector, None
        cache.put_many("image", [(p.image_sha256, p.cached, p.width, p.height) for p in to_encode])
    texts = [p.item.text for p in ready if p.item.text]
    text_features = encode_texts(texts, backbone, cache)
    encoded: list[EncodedItem | Skipped] = []
    next_text = iter(text_features)
    for prepared in batch:
        if isinstance(prepared, Skipped):
            encoded.append(prepared)
            continue
        item = prepared.item
        encoded.append(
            EncodedItem(
                item=item,
                image_features=prepared.cached,
                text_features=next(next_text) if item.text else None,
                image_sha256=prepared.image_sha256,
                width=prepared.width,
                height=prepared.height,
            )
        )
    return encoded


def encode_texts(texts: Sequence[str], backbone: FeatureEncoder, cache: FeatureCache) -> np.ndarray:
    """Features of texts (N, text_dim), from the cache where present."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    keys = [text_hash(t) for t in texts]
    found = cache.get_many("text", keys)
    missing = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in found))
    for start in range(0, len(missing), 64):
        chunk = missing[start : start + 64]
        vectors = backbone.encode_texts(chunk).astype(np.float16).astype(np.float32)
        rows = [(text_hash(t), v, None, None) for t, v in zip(chunk, vectors, strict=True)]
        cache.put_many("text", rows)
        found.update({key: (vec, 0, 0) for key, vec, _, _ in rows})
    return np.stack([found[k][0] for k in keys])


def stack_features(
    encoded: Sequence[EncodedItem], image_dim: int, text_dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image, text, image_mask, text_mask) arrays; a missing modality is a zero row, masked."""
    image = np.zeros((len(encoded), image_dim), dtype=np.float32)
    text = np.zeros((len(encoded), text_dim), dtype=np.float32)
    for row, e in enumerate(encoded):
        if e.image_features is not None:
            image[row] = e.image_features
        if e.text_features is not None:
            text[row] = e.text_features
    image_mask = np.array([e.image_features is not None for e in encoded], dtype=bool)
    text_mask = np.array([e.text_features is not None for e in encoded], dtype=bool)
    return image, text, image_mask, text_mask

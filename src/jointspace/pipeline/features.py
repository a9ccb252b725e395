"""Backbone features for a stream of items, cached on disk so nothing is encoded twice.

The cache is one SQLite file per backbone fingerprint; rows are keyed by content hash (the
image file's bytes, or the text), so moving or renaming a corpus keeps its features. Image
decoding and preprocessing run in worker processes, overlapping backbone inference.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import signal
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..corpus.images import decode_image, read_image_bytes
from ..corpus.item import Item, Skipped, bytes_hash, text_hash
from ..errors import BadItem
from .backbone import Backbone

PR_SET_PDEATHSIG = 1


class FeatureCache:
    """Feature vectors (float16 on disk) by content hash, for one backbone fingerprint."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # several processes (ingest workers, a concurrent train) may read while one writes
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS features (kind TEXT, hash TEXT, vector BLOB, "
            "width INTEGER, height INTEGER, PRIMARY KEY (kind, hash))"
        )
        self._db.commit()

    @classmethod
    def for_backbone(cls, home: Path, fingerprint: str) -> FeatureCache:
        """The cache of one backbone under a jointspace home folder."""
        return cls(home / "features" / f"{fingerprint}.sqlite")

    def get_many(self, kind: str, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, int, int]]:
        """Cached (vector, width, height) by hash for those of `hashes` present."""
        found: dict[str, tuple[np.ndarray, int, int]] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT hash, vector, width, height FROM features "
                f"WHERE kind=? AND hash IN ({marks})",
                [kind, *chunk],
            )
            for key, blob, width, height in rows:
                found[key] = (
                    np.frombuffer(blob, dtype=np.float16).astype(np.float32),
                    width,
                    height,
                )
        return found

    def put_many(
        self, kind: str, rows: Iterable[tuple[str, np.ndarray, int | None, int | None]]
    ) -> None:
        """Store (hash, vector, width, height) rows."""
        self._db.executemany(
            "INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?)",
            [(kind, key, vec.astype(np.float16).tobytes(), w, h) for key, vec, w, h in rows],
        )
        self._db.commit()

    def close(self) -> None:
        self._db.close()


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
    pixels: torch.Tensor | None = None
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
            return _Prepared(record, digest, self.preprocess(image), None, *image.size)
        except BadItem as bad:
            return Skipped(record.source, record.key, bad.reason)


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


def _batched(records: Iterable[Item | Skipped], size: int) -> Iterator[list[Item | Skipped]]:
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def encode_items(
    records: Iterable[Item | Skipped],
    backbone: Backbone,
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
    preparer = _ImagePreparer(backbone.preprocess, cache.path, max_pixels)
    if workers == 0:
        for batch in _batched(records, batch_size):
            yield _encode_batch([preparer(r) for r in batch], backbone, cache)
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
    batch: list[_Prepared | Skipped], backbone: Backbone, cache: FeatureCache
) -> list[EncodedItem | Skipped]:
    ready = [p for p in batch if isinstance(p, _Prepared)]
    to_encode = [p for p in ready if p.pixels is not None]
    if to_encode:
        features = backbone.encode_images(torch.stack([p.pixels for p in to_encode]))
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


def encode_texts(texts: Sequence[str], backbone: Backbone, cache: FeatureCache) -> np.ndarray:
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

"""What a running service holds: its Space, the served collections (models loaded, stores
open), the pools calls run on, and small caches."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import jointspace as js

from ..errors import InvalidQuery, JointspaceError, NotFound
from .settings import ServiceSettings, cores
from .workers import BoundedPool

T = TypeVar("T")
log = logging.getLogger("jointspace.serve")

LABELS_TOP = 50
LABELS_SCAN = 10_000
LABELS_TTL_S = 300.0
THUMBNAILS_KEPT = 2048


class Service:
    """The served collections of one Space, each with its model loaded and its store open (on
    the embedded store the service holds their locks: an ingest into one is refused, naming
    the service). Model calls, and searches of the embedded store, run on `model_pool`
    (`settings.model_threads` threads, `settings.queue_size` waiting, then 503); reads of
    points, labels and images run on `read_pool`; searches by id of a server collection run
    there too, in parallel."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.space: js.Space | None = None
        self.collections: dict[str, js.Collection] = {}
        self.loaded: dict[str, bool] = {}
        self.skipped: list[js.CollectionSummary] = []
        self.model_pool = BoundedPool(settings.model_threads, settings.queue_size, "js-model")
        self.read_pool = BoundedPool(max(2, cores()), None, "js-read")
        self._labels: dict[str, tuple[float, list[tuple[str, int]]]] = {}
        self._labels_lock = threading.Lock()
        self.thumbnails = LRUCache(THUMBNAILS_KEPT)

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, open every served collection and load its model (a warm-up query loads the
        backbone's towers): the first request pays nothing. What is loaded then is frozen out
        of the garbage collector's scans (see `_freeze_loaded`). Raises JointspaceError (a
        collection that is missing, busy or broken, or none to serve)."""
        _size_torch_threads(self.settings)
        settings = self.settings
        self.space = js.connect(
            settings.home,
            settings.qdrant_url,
            settings.qdrant_api_key,
            grpc=settings.grpc,
            owner=settings.owner,
            device=settings.device,
            precision=settings.precision,
            engine=settings.engine,
        )
        try:
            names = list(settings.collections) or self._ready_collections()
            for name in names:
                collection = self.space.collection(name)
                collection.info()  # opens it (on the embedded store: takes its lock)
                collection.embed(text="warm-up", image=_warm_up_image())
                self.collections[name] = collection
                self.loaded[name] = True
        except BaseException:
            self.close()
            raise
        _freeze_loaded()

    def _ready_collections(self) -> list[str]:
        assert self.space is not None
        summaries = self.space.collections()
        self.skipped = [s for s in summaries if s.state != "ready"]
        for summary in self.skipped:
            log.warning("not serving '%s': %s", summary.name, summary.detail or summary.state)
        names = [s.name for s in summaries if s.state == "ready"]
        if not names:
            where = self.space.url or self.space.home / "qdrant"
            raise JointspaceError(
                f"There is no collection to serve in {where}; ingest one first "
                "(`jointspace ingest SOURCE --collection NAME --model MODEL_DIR`)."
            )
        return names

    def close(self) -> None:
        """Stop the pools and release the store (and its locks)."""
        self.model_pool.close()
        self.read_pool.close()
        if self.space is not None:
            self.space.close()

    # -- lookups -----------------------------------------------------------------------------

    def collection(self, name: str | None) -> js.Collection:
        """A served collection; with no name, the only one served. NotFound otherwise."""
        if name is None:
            if len(self.collections) == 1:
                return next(iter(self.collections.values()))
            raise InvalidQuery(
                f"Name the collection: this service serves {', '.join(self.collections)}."
            )
        collection = self.collections.get(name)
        if collection is None:
            raise NotFound(
                f"This service serves no collection '{name}'; it serves "
                f"{', '.join(self.collections) or 'none'}."
            )
        return collection

    @property
    def embedded(self) -> bool:
        return self.space is not None and not self.space.url

    def run_model(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """A call that runs the model (embeds a query): on the bounded model pool."""
        return self.model_pool.submit(call, *args, **kwargs)

    def run_search(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """A search that embeds nothing (by a stored point's id): on the model pool for the
        embedded store, whose searches use this machine's cores like the model does; on the
        read pool, in parallel, for a Qdrant server."""
        pool = self.model_pool if self.embedded else self.read_pool
        return pool.submit(call, *args, **kwargs)

    def run_read(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """A read of points, labels or images: on the read pool."""
        return self.read_pool.submit(call, *args, **kwargs)

    def summaries(self) -> list[js.CollectionSummary]:
        """The served collections as listed; one that cannot be read now is listed as
        broken, with why, instead of failing the list."""
        summaries = []
        for name, collection in self.collections.items():
            try:
                summaries.append(collection.info())
            except JointspaceError as error:
                summaries.append(js.CollectionSummary(name, None, {}, {}, [], "broken", str(error)))
        return summaries

    def describe(
        self, collection: js.Collection
    ) -> tuple[js.CollectionSummary, list[tuple[str, int]]]:
        """A served collection's summary and its most common labels."""
        return collection.info(), self.labels(collection)

    def labels(self, collection: js.Collection) -> list[tuple[str, int]]:
        """The collection's most common labels (from a sample of LABELS_SCAN points), kept for
        LABELS_TTL_S seconds."""
        now = time.monotonic()
        with self._labels_lock:
            cached = self._labels.get(collection.name)
        if cached is not None and now - cached[0] < LABELS_TTL_S:
            return cached[1]
        labels = collection.labels(top=LABELS_TOP, scan=LABELS_SCAN)
        with self._labels_lock:
            self._labels[collection.name] = (now, labels)
        return labels


class LRUCache:
    """A small thread-safe least-recently-used map (thumbnails by collection, id and size)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def _size_torch_threads(settings: ServiceSettings) -> None:
    """One model call per pool thread per process, each with its share of the cores: threads
    never outnumber cores (oversubscribed, torch runs slower than on fewer threads)."""
    import torch

    share = cores() // (settings.model_threads * settings.processes)
    torch.set_num_threads(max(1, share))


def _freeze_loaded() -> None:
    """Move every object alive now (torch, the models, the imports: 0.2-0.5 million) to the
    collector's permanent generation. A full collection otherwise scans them all, holding the
    GIL, which stops every request: measured here, 125 ms with the exported towers and 290 ms
    with open_clip loaded, seen as a ~340 ms tail in benchmarks/serve.py. Objects made later
    are collected as before; a frozen one is still freed when its last reference goes, unless
    it is in a reference cycle (garbage is collected first, so only what is alive is frozen)."""
    gc.collect()
    gc.freeze()


def _warm_up_image() -> Any:
    from PIL import Image

    return Image.new("RGB", (64, 64), "white")

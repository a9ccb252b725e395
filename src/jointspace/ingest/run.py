"""One ingest run: skip what is stored, encode the rest in batches, upsert each batch.

Three stages overlap: worker processes decode images ahead of the towers (pipeline/features.py),
the towers encode batch N+1 in this thread while a writer thread embeds batch N with the gated
encoder and upserts it (with its payload indexes and thumbnails), so the towers do not wait for
the store. The writer is one batch behind at most: an interrupted run waits for it, so every
batch that was encoded is kept.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..corpus.item import TRUNCATED_REASON, Item, Skipped
from ..corpus.thumbnails import save_thumbnail
from ..errors import JointspaceError
from ..pipeline.checkpoint import ModelCard
from ..pipeline.collection_card import check_same_model, collection_card, vector_dims
from ..pipeline.features import (
    EncodedItem,
    FeatureCache,
    FeatureEncoder,
    encode_items,
    stack_features,
)
from ..pipeline.model import GatedEncoder
from ..store.base import Point, Store
from .errors_file import ErrorsFile
from .points import KEYWORD_FIELDS, NUMERIC_FIELDS, build_points, extra_field_kinds


@dataclass
class IngestReport:
    """What a run did: distinct points written (`ingested`), items already stored, items that
    repeat an earlier item of this run (same point id: `duplicates`, merged into one point),
    items skipped by reason, and how many of the ingested items had their caption cut to
    MAX_CAPTION_BYTES (`truncated`). Every record read is counted once: ingested +
    already_stored + duplicates + skipped."""

    collection: str
    ingested: int = 0
    already_stored: int = 0
    duplicates: int = 0
    truncated: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    errors_file: str | None = None
    seconds: float = 0.0
    index_built: bool = False  # whether the run ended by building the HNSW search index
    index_seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        return self.ingested / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        """The JSON form (`ingest --json`)."""
        document = {k: v for k, v in vars(self).items()}
        document["seconds"] = round(self.seconds, 3)
        document["items_per_second"] = round(self.items_per_second, 2)
        return document


def ensure_collection(
    store: Store, collection: str, card: ModelCard, quantize: str | None = None
) -> None:
    """Create the collection for this model (its card, vectors and payload indexes; int8
    copies of its vectors with `quantize="int8"`), or check that an existing one was embedded
    by this same model (and, when `quantize` is given, is quantized so)."""
    if store.has_collection(collection):
        info = store.info(collection)
        check_same_model(collection, info.metadata, card)
        if quantize is not None and info.quantize != quantize:
            raise JointspaceError(
                f"Collection '{collection}' exists {_quantized(info.quantize)}; --quantize "
                "applies when a collection is created: ingest with --swap to build a new "
                "version, or leave --quantize out."
            )
        return
    store.create_collection(
        collection,
        vector_dims(card),
        collection_card(card),
        keyword_fields=KEYWORD_FIELDS,
        fields=NUMERIC_FIELDS,
        quantize=quantize,
    )


def _quantized(quantize: str | None) -> str:
    return f"with {quantize} quantization" if quantize else "without quantization"


def _distinct(records: Iterable[Item | Skipped], report: IngestReport) -> Iterator[Item | Skipped]:
    """Drop items whose point id came earlier in this run (a manifest row given twice): one
    point is stored, so they count as `duplicates`, not as ingested. The ids seen are kept as
    128-bit ints, about 80 MB per million distinct items."""
    seen: set[int] = set()
    for record in records:
        if isinstance(record, Item):
            point = uuid.UUID(record.point_id).int
            if point in seen:
                report.duplicates += 1
                continue
            seen.add(point)
        yield record


def _not_stored(
    records: Iterable[Item | Skipped],
    store: Store,
    collection: str,
    report: IngestReport,
    chunk: int = 256,
) -> Iterator[Item | Skipped]:
    """Drop items whose point already exists: a re-run resumes instead of starting over."""
    buffer: list[Item | Skipped] = []

    def flush() -> Iterator[Item | Skipped]:
        ids = [r.point_id for r in buffer if isinstance(r, Item)]
        stored = store.existing_ids(collection, ids) if ids else set()
        for record in buffer:
            if isinstance(record, Item) and record.point_id in stored:
                report.already_stored += 1
            else:
                yield record
        buffer.clear()

    for record in records:
        buffer.append(record)
        if len(buffer) >= chunk:
            yield from flush()
    yield from flush()


def run_ingest(
    records: Iterable[Item | Skipped],
    store: Store,
    collection: str,
    model: GatedEncoder,
    card: ModelCard,
    load_backbone: Callable[[], FeatureEncoder],
    cache: FeatureCache,
    errors_path: Path,
    refresh: bool = False,
    batch_size: int = 32,
    workers: int = 1,
    on_batch: Callable[[IngestReport], None] | None = None,
    thumbnails: Path | None = None,
    quantize: str | None = None,
) -> IngestReport:
    """Ingest `records` into `collection`. Each batch is upserted before the next is encoded,
    so an interrupted run keeps what it wrote; items already stored are skipped unless
    `refresh`. Bad items are written to `errors_path` and counted. With `thumbnails` (a
    folder), an item whose image is inline (no path or URL to show it by) leaves a thumbnail
    there (see corpus/thumbnails.py)."""
    started = time.perf_counter()
    report = IngestReport(collection)
    ensure_collection(store, collection, card, quantize)
    records = _distinct(records, report)
    if not refresh:
        records = _not_stored(records, store, collection, report)
    writer = _Writer(store, collection, model, thumbnails)
    pending: tuple[Future[None], list[EncodedItem]] | None = None

    def finish_pending() -> None:
        """Wait for the batch being written, then count it."""
        nonlocal pending
        if pending is None:
            return
        future, encoded = pending
        pending = None
        future.result()
        for item in (e.item for e in encoded if e.item.truncated):
            errors.note(item, TRUNCATED_REASON)
            report.truncated += 1
        report.ingested += len(encoded)
        report.skipped = errors.count
        report.seconds = time.perf_counter() - started
        if on_batch:
            on_batch(report)

    with (
        ErrorsFile(errors_path) as errors,
        store.bulk(collection),
        ThreadPoolExecutor(1, "jointspace-writer") as writing,
    ):
        try:
            for batch in _encoded(records, load_backbone, cache, batch_size, workers):
                encoded = [e for e in batch if isinstance(e, EncodedItem)]
                for skipped in (e for e in batch if isinstance(e, Skipped)):
                    errors.write(skipped)
                finish_pending()
                pending = (writing.submit(writer.write, encoded), encoded)
        finally:
            try:
                finish_pending()  # even on an interrupt: what was encoded is kept
            finally:
                report.skipped = errors.count
                report.skipped_by_reason = dict(errors.reasons.most_common())
                report.errors_file = str(errors_path) if errors.written else None
                report.seconds = time.perf_counter() - started
    return report


class _Writer:
    """Embeds encoded batches with the gated encoder and upserts them (in the writer thread)."""

    def __init__(
        self, store: Store, collection: str, model: GatedEncoder, thumbnails: Path | None
    ) -> None:
        self.store, self.collection, self.model = store, collection, model
        self.thumbnails = thumbnails
        self.extra_fields: dict[str, str] = {}  # the source's own columns made filterable

    def write(self, encoded: list[EncodedItem]) -> None:
        if not encoded:
            return
        points = _embed(self.model, encoded)
        self.store.upsert(self.collection, points)
        _index_extra_fields(self.store, self.collection, points, self.extra_fields)
        if self.thumbnails is not None:
            _save_thumbnails(self.thumbnails, encoded)


def _encoded(
    records: Iterable[Item | Skipped],
    load_backbone: Callable[[], FeatureEncoder],
    cache: FeatureCache,
    batch_size: int,
    workers: int,
) -> Iterator[list[EncodedItem | Skipped]]:
    """Encoded batches; the backbone is loaded only if something is left to encode, so a
    re-run over a fully stored corpus costs the reading and the id lookups alone."""
    records = iter(records)
    first = next(records, None)
    if first is None:
        return
    backbone = load_backbone()
    locators = _Locators()
    stream = locators.track(itertools.chain([first], records))
    for batch in encode_items(stream, backbone, cache, batch_size, workers):
        yield locators.restore(batch)


class _Locators:
    """Where each item being encoded was read. An item whose image turns out bad comes back as
    a new Skipped record with its source and key only; this gives it its locator back. Holds
    the items in flight only (a few batches)."""

    def __init__(self) -> None:
        self._in_flight: dict[tuple[str, str], str | None] = {}

    def track(self, records: Iterable[Item | Skipped]) -> Iterator[Item | Skipped]:
        for record in records:
            if isinstance(record, Item):
                self._in_flight[(record.source, record.key)] = record.locator
            yield record

    def restore(self, batch: list[EncodedItem | Skipped]) -> list[EncodedItem | Skipped]:
        restored: list[EncodedItem | Skipped] = []
        for entry in batch:
            if isinstance(entry, EncodedItem):
                self._in_flight.pop((entry.item.source, entry.item.key), None)
            elif entry.locator is None:  # a reader's own Skipped records know their place
                locator = self._in_flight.pop((entry.source, entry.key), None)
                entry = dataclasses.replace(entry, locator=locator)
            restored.append(entry)
        return restored


def _save_thumbnails(root: Path, encoded: list[EncodedItem]) -> None:
    """Thumbnails of the inline images (best effort: one that fails is skipped)."""
    for e in encoded:
        item = e.item
        if item.image is None and item.image_bytes and e.image_sha256:
            save_thumbnail(root, e.image_sha256, item.image_bytes, item.key)


def _index_extra_fields(
    store: Store, collection: str, points: list[Point], indexed: dict[str, str]
) -> None:
    """Make the source's own columns (a manifest's extra fields) filterable as they first
    appear: one store call when a batch brings a field not indexed yet."""
    new = {k: v for k, v in extra_field_kinds(points).items() if k not in indexed}
    if new:
        store.add_filterable_fields(collection, new)
        indexed.update(new)


def _embed(model: GatedEncoder, encoded: list[EncodedItem]) -> list[Point]:
    config = model.config
    arrays = stack_features(encoded, config.image_dim, config.text_dim)
    return build_points(encoded, model.embed(*arrays))

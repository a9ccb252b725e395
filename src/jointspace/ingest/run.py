"""One ingest run: skip what is stored, encode the rest in batches, upsert each batch."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..corpus.item import Item, Skipped
from ..errors import JointspaceError
from ..pipeline.backbone import Backbone
from ..pipeline.checkpoint import ModelCard
from ..pipeline.features import EncodedItem, FeatureCache, encode_items, stack_features
from ..pipeline.model import GatedEncoder
from ..store.base import Point, Store
from .errors_file import ErrorsFile
from .points import KEYWORD_FIELDS, build_points


@dataclass
class IngestReport:
    """What a run did: points written, items already stored, items skipped by reason."""

    collection: str
    ingested: int = 0
    already_stored: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    errors_file: str | None = None
    seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        return self.ingested / self.seconds if self.seconds else 0.0


def collection_metadata(card: ModelCard) -> dict:
    """What a collection records about the model that embedded it."""
    return {
        "model_id": card.model_id,
        "model_path": card.path,
        "backbone": card.backbone["spec"],
        "backbone_fingerprint": card.backbone["fingerprint"],
        "dim": card.encoder.dim,
    }


def check_model_matches(store: Store, collection: str, card: ModelCard) -> None:
    """Refuse a model other than the one that embedded the collection, naming both."""
    stored = store.info(collection).metadata
    if stored.get("model_id") != card.model_id:
        raise JointspaceError(
            f"Collection '{collection}' was embedded with model {stored.get('model_id')} "
            f"({stored.get('model_path')}), not {card.model_id} ({card.path}); use that model, "
            "or ingest into a new collection."
        )


def ensure_collection(store: Store, collection: str, card: ModelCard) -> None:
    """Create the collection for this model, or check that an existing one used it."""
    if store.has_collection(collection):
        check_model_matches(store, collection, card)
        return
    dim = card.encoder.dim
    store.create_collection(
        collection,
        {"unit": dim, "image": dim, "text": dim},
        collection_metadata(card),
        keyword_fields=KEYWORD_FIELDS,
    )


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
    load_backbone: Callable[[], Backbone],
    cache: FeatureCache,
    errors_path: Path,
    refresh: bool = False,
    batch_size: int = 32,
    workers: int = 1,
    on_batch: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """Ingest `records` into `collection`. Each batch is upserted before the next is encoded,
    so an interrupted run keeps what it wrote; items already stored are skipped unless
    `refresh`. Bad items are written to `errors_path` and counted."""
    started = time.perf_counter()
    report = IngestReport(collection)
    ensure_collection(store, collection, card)
    if not refresh:
        records = _not_stored(records, store, collection, report)
    with ErrorsFile(errors_path) as errors, store.bulk(collection):
        try:
            for batch in _encoded(records, load_backbone, cache, batch_size, workers):
                encoded = [e for e in batch if isinstance(e, EncodedItem)]
                for skipped in (e for e in batch if isinstance(e, Skipped)):
                    errors.write(skipped)
                if encoded:
                    store.upsert(collection, _embed(model, encoded))
                report.ingested += len(encoded)
                report.skipped = errors.count
                report.seconds = time.perf_counter() - started
                if on_batch:
                    on_batch(report)
        finally:
            report.skipped = errors.count
            report.skipped_by_reason = dict(errors.reasons.most_common())
            report.errors_file = str(errors_path) if errors.count else None
            report.seconds = time.perf_counter() - started
    return report


def _encoded(
    records: Iterable[Item | Skipped],
    load_backbone: Callable[[], Backbone],
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
    yield from encode_items(itertools.chain([first], records), backbone, cache, batch_size, workers)


def _embed(model: GatedEncoder, encoded: list[EncodedItem]) -> list[Point]:
    config = model.config
    arrays = stack_features(encoded, config.image_dim, config.text_dim)
    return build_points(encoded, model.embed(*arrays))

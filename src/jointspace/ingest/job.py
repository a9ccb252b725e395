"""The bulk ingest job: sources → (split, shard, limit, downloads) → model → store, in one call."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..corpus.select import (
    SourceOptions,
    check_split,
    count_hint,
    in_shard,
    only_split,
    parse_shard,
    read_sources,
)
from ..errors import JointspaceError
from ..progress import Progress, ProgressCallback
from ..store.base import Store
from ..store.indexing import check_quantize
from .indexing import check_index_mode, index_after_ingest
from .run import IngestReport

if TYPE_CHECKING:
    from ..pipeline.compute import Compute
    from ..pipeline.features import FeatureEncoder


@dataclass(frozen=True)
class IngestOptions:
    """How to run an ingest. Every number is checked here, so any face gets the same sentence."""

    source: SourceOptions = field(default_factory=SourceOptions)
    split: str = "all"
    shard: str | None = None
    limit: int | None = None
    refresh: bool = False
    swap: bool = False
    batch_size: int | None = None  # None: by device (Compute.default_batch_size)
    workers: int | None = None  # None: by device (Compute.default_workers)
    download_workers: int = 8
    download_timeout: float = 10.0
    errors_file: Path | None = None
    quantize: str | None = None  # "int8": a new collection keeps int8 copies of its vectors
    index: str = "auto"  # auto | build | skip: the HNSW index after the run (ingest/indexing.py)

    def __post_init__(self) -> None:
        check_split(self.split)
        check_index_mode(self.index)
        object.__setattr__(self, "quantize", check_quantize(self.quantize))
        parse_shard(self.shard)
        for name, value, least in (
            ("batch_size", self.batch_size if self.batch_size is not None else 1, 1),
            ("workers", self.workers if self.workers is not None else 0, 0),
            ("download_workers", self.download_workers, 1),
            ("limit", self.limit if self.limit is not None else 0, 0),
        ):
            if value < least:
                flag = "--" + name.replace("_", "-")
                raise JointspaceError(f"{flag} must be at least {least} (got {value}).")
        if not self.download_timeout > 0:
            raise JointspaceError(
                f"--download-timeout must be more than 0 seconds (got {self.download_timeout})."
            )


def _or_default(value: int | None, default: Callable[[], int]) -> int:
    return default() if value is None else value


def _model_dir(store: Store, collection: str, model: str | Path | None) -> Path:
    from ..pipeline.collection_card import model_dir_for

    if model is not None:
        return Path(model)
    if not store.has_collection(collection):
        raise JointspaceError(
            f"Collection '{collection}' does not exist yet; pass --model MODEL_DIR to create it."
        )
    return model_dir_for(collection, store.info(collection).metadata)


def ingest_sources(
    store: Store,
    home: Path,
    sources: Sequence[str | Path],
    collection: str,
    model: str | Path | None = None,
    options: IngestOptions | None = None,
    on_progress: ProgressCallback | None = None,
    compute: Compute | None = None,
) -> IngestReport:
    """Embed the sources' items with the gated encoder and upsert them into `collection`
    (created for the model if needed). Items already stored are skipped (a re-run resumes);
    bad items are skipped, counted and written to the errors file. With `swap`, a new version
    NAME_vN is filled and the alias NAME switched to it when complete."""
    from ..corpus.remote import fetch_remote_images
    from ..pipeline.features import FeatureCache
    from ..pipeline.loaded import LoadedModel
    from ..store.versions import next_version
    from .run import run_ingest

    options = options or IngestOptions()
    records = read_sources(sources, options.source)
    records = in_shard(only_split(records, options.split), options.shard)
    if options.limit is not None:
        records = itertools.islice(records, options.limit)
    records = fetch_remote_images(records, options.download_workers, options.download_timeout)
    loaded = LoadedModel.load(_model_dir(store, collection, model), home, compute)
    assert loaded.compute is not None
    target = next_version(store, collection) if options.swap else collection
    stamp = time.strftime("%Y%m%d-%H%M%S")
    errors_path = options.errors_file or home / "logs" / f"{collection}-{stamp}.errors.jsonl"
    whole = options.limit is None and options.split == "all" and options.shard is None
    total = count_hint(sources) if whole else None

    def load_backbone() -> FeatureEncoder:
        if on_progress:  # the first batch waits for it: say why
            on_progress(Progress("ingest", 0, total, "loading model"))
        return loaded.bulk_encoder()

    def on_batch(report: IngestReport) -> None:
        if on_progress:
            done = report.ingested + report.skipped + report.already_stored + report.duplicates
            info = f"{report.items_per_second:.1f} items/s"
            on_progress(Progress("ingest", done, total, info))

    cache = FeatureCache.for_backbone(home, loaded.features_key)
    try:
        report = run_ingest(
            records,
            store,
            target,
            loaded.model,
            loaded.card,
            load_backbone,
            cache,
            errors_path,
            refresh=options.refresh,
            batch_size=options.batch_size or loaded.compute.default_batch_size(),
            workers=loaded.compute.default_workers()
            if options.workers is None
            else options.workers,
            on_batch=on_batch,
            thumbnails=home / "thumbnails",
            quantize=options.quantize,
        )
    finally:
        cache.close()
    index = index_after_ingest(store, target, options.index, on_progress)
    report.index_built, report.index_seconds = index.built, round(index.seconds, 2)
    if options.swap:
        store.set_alias(collection, target)
    return report

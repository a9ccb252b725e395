"""`jointspace ingest`: embed a corpus and upsert it into a collection."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..corpus.split import SPLITS
from ..errors import JointspaceError
from .common import (
    FormatOpt,
    ImageColumnOpt,
    JsonOpt,
    LabelColumnOpt,
    QuietOpt,
    Settings,
    SourcesArg,
    TextColumnOpt,
    WorkersOpt,
    app,
    count_hint,
    handles_errors,
    in_shard,
    only_split,
    print_json,
    progress_bar,
    read_sources,
    stderr,
    stdout,
)


@app.command()
@handles_errors
def ingest(
    ctx: typer.Context,
    sources: SourcesArg,
    collection: Annotated[str, typer.Option(help="Collection to fill (created if needed).")],
    model: Annotated[
        Path | None,
        typer.Option(help="Model checkpoint; default: the one that embedded the collection."),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="all | train | val | test: ingest only that deterministic split of the items."
        ),
    ] = "all",
    limit: Annotated[int | None, typer.Option(help="Stop after N records.")] = None,
    refresh: Annotated[
        bool,
        typer.Option(
            help="Re-embed items already stored (default: skip them, so a re-run resumes)."
        ),
    ] = False,
    errors_file: Annotated[
        Path | None,
        typer.Option(
            "--errors", help="Where to write skipped items (JSONL); default under --home/logs."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Items per backbone batch and upsert.")] = 32,
    swap: Annotated[
        bool,
        typer.Option(
            help="Zero-downtime re-ingest: fill a new version (NAME_vN) and switch the alias NAME "
            "to it atomically when complete; queries through NAME never see a half-built one."
        ),
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(help="I/N: ingest only slice I of N, so N machines can share a corpus."),
    ] = None,
    shards: Annotated[int | None, typer.Option(help="Server: shards of a new collection.")] = None,
    replicas: Annotated[
        int | None, typer.Option(help="Server: replication factor of a new collection.")
    ] = None,
    images_dir: Annotated[
        Path | None, typer.Option(help="COCO/Karpathy: the folder of the images.")
    ] = None,
    captions: Annotated[
        str | None, typer.Option(help="COCO/Karpathy: first | join | each (one unit each).")
    ] = None,
    karpathy_split: Annotated[
        str | None, typer.Option(help="Karpathy: train | val | test | restval | all.")
    ] = None,
    image_encoding: Annotated[
        str | None, typer.Option(help="Manifests: base64 when the image column holds base64.")
    ] = None,
    download_workers: Annotated[
        int, typer.Option(help="Concurrent downloads of http(s) image URLs.")
    ] = 8,
    download_timeout: Annotated[float, typer.Option(help="Seconds per download.")] = 10.0,
    format: FormatOpt = "auto",
    image_column: ImageColumnOpt = None,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    workers: WorkersOpt = 1,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed SOURCE's items with the gated encoder and upsert them into a collection. Bad items
    are skipped and listed in the errors file; an interrupted run resumes when re-run."""
    from ..corpus.remote import fetch_remote_images
    from ..ingest.run import run_ingest
    from ..pipeline.features import FeatureCache
    from ..query.encoder import QueryEncoder
    from ..query.search import model_dir_of
    from ..store.versions import next_version

    if split != "all" and split not in SPLITS:
        raise JointspaceError(f"Unknown split {split!r}; use all, train, val or test.")
    settings: Settings = ctx.obj
    records = read_sources(
        sources,
        format,
        image_column,
        text_column,
        label_column,
        images_dir=images_dir,
        captions=captions,
        split=karpathy_split,
        image_encoding=image_encoding,
    )
    records = in_shard(only_split(records, split), shard)
    if limit is not None:
        records = itertools.islice(records, limit)
    records = fetch_remote_images(records, download_workers, download_timeout)
    with settings.open_store(shards=shards, replicas=replicas) as store:
        if model is None:
            if not store.has_collection(collection):
                raise JointspaceError(
                    f"Collection '{collection}' does not exist yet; pass --model MODEL_DIR to "
                    "create it."
                )
            model = model_dir_of(store, collection)
        target = next_version(store, collection) if swap else collection
        encoder = QueryEncoder.load(model)
        cache = FeatureCache.for_backbone(settings.home, encoder.card.backbone["fingerprint"])
        stamp = time.strftime("%Y%m%d-%H%M%S")
        errors_path = errors_file or settings.home / "logs" / f"{collection}-{stamp}.errors.jsonl"
        total = None if limit is not None or split != "all" else count_hint(sources)
        logged = [time.monotonic()]
        with progress_bar(quiet) as progress:
            task = progress.add_task("ingest", total=total, info="")

            def on_batch(report) -> None:
                done = report.ingested + report.skipped + report.already_stored
                rate = f"{report.items_per_second:.1f} items/s"
                progress.update(task, completed=done, info=rate)
                # no terminal (a log file, CI): a line every 10 s instead of a bar
                if not quiet and not stderr.is_terminal and time.monotonic() - logged[0] > 10:
                    logged[0] = time.monotonic()
                    stderr.print(f"ingest: {done} items done ({report.skipped} skipped), {rate}")

            report = run_ingest(
                records,
                store,
                target,
                encoder.model,
                encoder.card,
                lambda: encoder.backbone,
                cache,
                errors_path,
                refresh=refresh,
                batch_size=batch_size,
                workers=workers,
                on_batch=on_batch,
            )
        cache.close()
        if swap:
            store.set_alias(collection, target)
            stderr.print(f"Alias '{collection}' now points to '{target}'.")
    _print_ingest_report(report, as_json)


def _print_ingest_report(report, as_json: bool) -> None:
    document = {
        "collection": report.collection,
        "ingested": report.ingested,
        "already_stored": report.already_stored,
        "skipped": report.skipped,
        "skipped_by_reason": report.skipped_by_reason,
        "errors_file": report.errors_file,
        "seconds": round(report.seconds, 3),
        "items_per_second": round(report.items_per_second, 2),
    }
    if as_json:
        print_json(document)
        return
    table = Table(title=f"ingest into '{report.collection}'", show_header=False)
    table.add_row("ingested", str(report.ingested))
    table.add_row("already stored (skipped)", str(report.already_stored))
    table.add_row("skipped (bad items)", str(report.skipped))
    for reason, count in report.skipped_by_reason.items():
        table.add_row(f"  {reason}", str(count))
    table.add_row("seconds", f"{report.seconds:.1f}")
    table.add_row("items/s", f"{report.items_per_second:.1f}")
    if report.errors_file:
        table.add_row("errors file", report.errors_file)
    stdout.print(table)

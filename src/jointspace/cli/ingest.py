"""`jointspace ingest`: embed a corpus and upsert it into a collection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import (
    CaptionOpt,
    CaptionsOpt,
    FormatOpt,
    ImageColumnOpt,
    ImageEncodingOpt,
    ImageOnlyOpt,
    ImagesDirOpt,
    JsonOpt,
    KarpathySplitOpt,
    LabelColumnOpt,
    ModelOpt,
    ProgressView,
    QuietOpt,
    SourcesArg,
    TextColumnOpt,
    TextOnlyOpt,
    app,
    handles_errors,
    print_json,
    source_options,
    stderr,
    stdout,
)

SwapOpt = Annotated[
    bool,
    typer.Option(
        help="Zero-downtime re-ingest: fill a new version (NAME_vN) and switch the alias NAME "
        "to it atomically when complete; queries through NAME never see a half-built one."
    ),
]
RefreshOpt = Annotated[
    bool,
    typer.Option(help="Re-embed items already stored (default: skip them, so a re-run resumes)."),
]
ErrorsOpt = Annotated[
    Path | None,
    typer.Option(
        "--errors", help="Where to write skipped items (JSONL); default under --home/logs."
    ),
]


@app.command()
@handles_errors
def ingest(
    ctx: typer.Context,
    sources: SourcesArg,
    collection: Annotated[str, typer.Option(help="Collection to fill (created if needed).")],
    model: ModelOpt = None,
    split: Annotated[
        str, typer.Option(help="all | train | val | test: only that deterministic split.")
    ] = "all",
    limit: Annotated[int | None, typer.Option(min=0, help="Stop after N records.")] = None,
    refresh: RefreshOpt = False,
    errors_file: ErrorsOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Items per backbone batch [default: 32 on a CPU; on a GPU by its free memory, "
            "up to 512].",
            show_default=False,
        ),
    ] = None,
    swap: SwapOpt = False,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="int8: a new collection also keeps int8 copies of its vectors, searched through "
            "its index and rescored (4x less memory per vector for the index; recall@10 1.00 "
            "at 300k units).",
            show_default=False,
        ),
    ] = None,
    index: Annotated[
        str,
        typer.Option(
            help="auto: build the HNSW search index at the end once the collection has 50,000 "
            "units (again after 50,000 more); build: always; skip: never.",
        ),
    ] = "auto",
    shard: Annotated[
        str | None, typer.Option(help="I/N: only slice I of N, so N machines can share a corpus.")
    ] = None,
    shards: Annotated[
        int | None, typer.Option(min=1, help="Server: shards of a new collection.")
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(min=1, help="Server: replication factor of a new collection.")
    ] = None,
    images_dir: ImagesDirOpt = None,
    captions: CaptionsOpt = None,
    caption: CaptionOpt = None,
    karpathy_split: KarpathySplitOpt = None,
    image_encoding: ImageEncodingOpt = None,
    text_only: TextOnlyOpt = False,
    image_only: ImageOnlyOpt = False,
    download_workers: Annotated[
        int, typer.Option(min=1, help="Concurrent downloads of http(s) image URLs.")
    ] = 8,
    download_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds per download.")
    ] = 10.0,
    format: FormatOpt = "auto",
    image_column: ImageColumnOpt = None,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Image decoding worker processes [default: 1 on a CPU; on a GPU all cores but "
            "one].",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed SOURCE's items with the gated encoder and upsert them into a collection. Bad items
    are skipped and listed in the errors file; an interrupted run resumes when re-run."""
    reader = source_options(ctx)
    with ctx.obj.space() as space, ProgressView(quiet) as progress:
        report = space.ingest(
            sources,
            collection,
            model,
            progress,
            shards=shards,
            replicas=replicas,
            **vars(reader),
            split=split,
            shard=shard,
            limit=limit,
            refresh=refresh,
            swap=swap,
            batch_size=batch_size,
            workers=workers,
            download_workers=download_workers,
            download_timeout=download_timeout,
            errors_file=errors_file,
            quantize=quantize,
            index=index,
        )
    if swap:
        stderr.print(f"Alias '{collection}' now points to '{report.collection}'.")
    _render(report.to_dict(), as_json)


def _render(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(document)
        return
    table = Table(title=f"ingest into '{document['collection']}'", show_header=False)
    table.add_row("ingested", str(document["ingested"]))
    table.add_row("already stored (skipped)", str(document["already_stored"]))
    table.add_row("skipped (bad items)", str(document["skipped"]))
    for reason, count in document["skipped_by_reason"].items():
        table.add_row(f"  {reason}", str(count))
    table.add_row("seconds", f"{document['seconds']:.1f}")
    table.add_row("items/s", f"{document['items_per_second']:.1f}")
    if document["errors_file"]:
        table.add_row("errors file", document["errors_file"])
    stdout.print(table)

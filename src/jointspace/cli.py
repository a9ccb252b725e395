"""The `jointspace` command line: the only place that parses arguments and prints.

Results go to stdout (a table for people, one JSON document with --json); progress, logs and
errors go to stderr. Exit codes: 0 success, 1 a bad run (one sentence says what to do), 2 usage.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .corpus.item import Item, Skipped
from .corpus.split import SPLITS, split_of
from .errors import JointspaceError

app = typer.Typer(
    help="Search image-text collections: train a gated joint embedding of text, images and "
    "image+text units, ingest corpora into Qdrant, and query them with text, an image, or both.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
collections_app = typer.Typer(help="List, inspect and drop collections.", no_args_is_help=True)
app.add_typer(collections_app, name="collections")

# stdout shows user data (captions, paths), never markup: "[abc]" in a caption stays as it is.
stdout = Console(soft_wrap=True, markup=False)
stderr = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

SourcesArg = Annotated[
    list[Path],
    typer.Argument(
        help="Corpus: a folder of images with same-named .txt captions, "
        "or a CSV/TSV/JSONL/Parquet manifest. Several may be given."
    ),
]
FormatOpt = Annotated[str, typer.Option("--format", help="auto|folder|csv|tsv|jsonl|parquet")]
ImageColumnOpt = Annotated[str | None, typer.Option(help="Manifest column of image paths/URLs.")]
TextColumnOpt = Annotated[str | None, typer.Option(help="Manifest column of captions.")]
LabelColumnOpt = Annotated[str | None, typer.Option("--label", help="Manifest column of labels.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
WorkersOpt = Annotated[int, typer.Option(help="Image decoding worker processes.")]


class Settings:
    """Global options: where the embedded store lives, or which server to use."""

    def __init__(self, home: Path, url: str | None, api_key: str | None) -> None:
        self.home, self.url, self.api_key = home, url, api_key

    def open_store(self):
        from .store import open_store

        return open_store(home=self.home / "qdrant", url=self.url, api_key=self.api_key)


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[
        Path,
        typer.Option(
            envvar="JOINTSPACE_HOME", help="Folder of the embedded store, feature cache and logs."
        ),
    ] = Path("jointspace-data"),
    qdrant_url: Annotated[
        str | None,
        typer.Option(
            envvar="QDRANT_URL",
            help="Use a Qdrant server at this URL instead of the embedded store.",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="QDRANT_API_KEY", help="API key for the Qdrant server.", show_default=False
        ),
    ] = None,
) -> None:
    """Global options (also read from environment variables)."""
    ctx.obj = Settings(home, qdrant_url, api_key)


def handles_errors(command: F) -> F:
    """A bad run prints one sentence to stderr and exits 1; Ctrl-C says what was kept."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except JointspaceError as error:
            # escaped: a path like "data[v2]" is text, not markup; soft_wrap: one line, unwrapped
            stderr.print(f"[red]Error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            stderr.print(
                "Interrupted: what was written is kept; re-run the same command to finish."
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _read_sources(
    sources: list[Path],
    format: str,
    image_column: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> Iterator[Item | Skipped]:
    from .corpus.readers import read_corpus

    options = {
        "image_column": image_column,
        "text_column": text_column,
        "label_column": label_column,
    }
    # opened eagerly so a missing source or bad format fails before any work starts
    streams = [read_corpus(source, format, **options) for source in sources]
    return itertools.chain.from_iterable(streams)


def _only_split(records: Iterable[Item | Skipped], split: str) -> Iterator[Item | Skipped]:
    if split == "all":
        yield from records
        return
    for record in records:
        if isinstance(record, Item) and split_of(record.split_key) == split:
            yield record


def _progress(quiet: bool, description: str, total: int | None = None):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=quiet or not stderr.is_terminal,
        transient=False,
    )


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def _metrics_table(title: str, tasks: dict[str, dict[str, float]]) -> Table:
    columns = ["R@1", "R@5", "R@10", "MRR", "nDCG@10", "MAP"]
    present = [c for c in columns if any(c in m for m in tasks.values())]
    table = Table(title=title)
    table.add_column("task")
    for column in present:
        table.add_column(column, justify="right")
    for task, metrics in tasks.items():
        table.add_row(task, *(f"{metrics[c]:.3f}" if c in metrics else "—" for c in present))
    return table


def _count_hint(sources: list[Path]) -> int | None:
    """Number of items when it is cheap to know (a folder: count image files)."""
    from .corpus.folder import IMAGE_SUFFIXES

    total = 0
    for source in sources:
        if not source.is_dir():
            return None
        for _, _, files in os.walk(source):
            total += sum(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files)
    return total


@app.command()
@handles_errors
def train(
    ctx: typer.Context,
    sources: SourcesArg,
    out: Annotated[Path, typer.Option(help="Folder to write the model checkpoint to.")],
    backbone: Annotated[
        str,
        typer.Option(
            help="offline (no network), clip (OpenCLIP ViT-B-32), NAME:TAG, NAME:/path.pt or a "
            "local open_clip folder."
        ),
    ] = "offline",
    epochs: Annotated[int, typer.Option(help="Most epochs (early stopping on validation).")] = 60,
    loss: Annotated[str, typer.Option(help="sum | max | sum-max (hinge) | infonce")] = "sum",
    margin: Annotated[float, typer.Option(help="Hinge margin.")] = 0.2,
    corrupt: Annotated[
        float,
        typer.Option(
            help="Probability of corrupting one modality of a training unit (teaches the gate to "
            "route)."
        ),
    ] = 0.3,
    fusion: Annotated[str, typer.Option(help="gated | fixed | concat")] = "gated",
    dim: Annotated[int, typer.Option(help="Embedding dimension.")] = 512,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    format: FormatOpt = "auto",
    image_column: ImageColumnOpt = None,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    workers: WorkersOpt = 1,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a gated encoder on SOURCE's training split (validation split for early stopping;
    the test split is never seen) and save it to --out."""
    from .pipeline.model import EncoderConfig
    from .pipeline.train import TrainConfig
    from .pipeline.training_run import train_model

    settings: Settings = ctx.obj
    records = _read_sources(sources, format, image_column, text_column, label_column)
    config = TrainConfig(epochs=epochs, loss=loss, margin=margin, corrupt=corrupt, seed=seed)
    with _progress(quiet, "train") as progress:
        features_task = progress.add_task("features", total=_count_hint(sources), info="")
        epochs_task = progress.add_task("epochs", total=epochs, info="", visible=False)

        def on_items(n: int) -> None:
            progress.advance(features_task, n)

        def on_epoch(record) -> None:
            progress.update(
                epochs_task,
                visible=True,
                advance=1,
                info=f"loss {record.loss:.3f} val rsum {record.val_rsum:.2f}",
            )
            if (quiet or not stderr.is_terminal) and not quiet:
                stderr.print(
                    f"epoch {record.epoch}: loss {record.loss:.4f} val rsum {record.val_rsum:.3f}",
                    highlight=False,
                )

        summary = train_model(
            records,
            out,
            settings.home,
            backbone,
            EncoderConfig(1, 1, dim=dim, fusion=fusion),
            config,
            workers=workers,
            on_items=on_items,
            on_epoch=on_epoch,
        )
    if as_json:
        _print_json(summary)
        return
    stdout.print(f"Model {summary['model_id']} saved to {summary['path']}")
    data = summary["data"]
    stdout.print(
        f"items: {data['train']} train, {data['val']} val, {data['test']} test "
        f"(held out), {data['skipped']} skipped; best epoch {summary['best_epoch']} "
        f"of {summary['epochs_run']}; {summary['seconds']:.0f} s"
    )
    stdout.print(_metrics_table("validation (paired)", summary["val_metrics"]))


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
    from .ingest.run import run_ingest
    from .pipeline.features import FeatureCache
    from .query.encoder import QueryEncoder
    from .query.search import model_dir_of

    if split != "all" and split not in SPLITS:
        raise JointspaceError(f"Unknown split {split!r}; use all, train, val or test.")
    settings: Settings = ctx.obj
    records = _only_split(
        _read_sources(sources, format, image_column, text_column, label_column), split
    )
    if limit is not None:
        records = itertools.islice(records, limit)
    with settings.open_store() as store:
        if model is None:
            if not store.has_collection(collection):
                raise JointspaceError(
                    f"Collection '{collection}' does not exist yet; pass --model MODEL_DIR to "
                    "create it."
                )
            model = model_dir_of(store, collection)
        encoder = QueryEncoder.load(model)
        cache = FeatureCache.for_backbone(settings.home, encoder.card.backbone["fingerprint"])
        stamp = time.strftime("%Y%m%d-%H%M%S")
        errors_path = errors_file or settings.home / "logs" / f"{collection}-{stamp}.errors.jsonl"
        total = None if limit is not None or split != "all" else _count_hint(sources)
        with _progress(quiet, "ingest") as progress:
            task = progress.add_task("ingest", total=total, info="")

            def on_batch(report) -> None:
                done = report.ingested + report.skipped + report.already_stored
                progress.update(task, completed=done, info=f"{report.items_per_second:.1f} items/s")

            report = run_ingest(
                records,
                store,
                collection,
                encoder.model,
                encoder.card,
                encoder.backbone,
                cache,
                errors_path,
                refresh=refresh,
                batch_size=batch_size,
                workers=workers,
                on_batch=on_batch,
            )
        cache.close()
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
        _print_json(document)
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


def _parse_where(where: list[str]) -> dict[str, str]:
    parsed = {}
    for condition in where:
        key, sep, value = condition.partition("=")
        if not sep or not key:
            raise JointspaceError(f"--where {condition!r} is not KEY=VALUE (e.g. labels=animals).")
        parsed[key] = value
    return parsed


@app.command()
@handles_errors
def query(
    ctx: typer.Context,
    collection: Annotated[str, typer.Option(help="Collection to search.")],
    text: Annotated[str | None, typer.Option(help="Text (keyword) query.")] = None,
    image: Annotated[Path | None, typer.Option(help="Image file as the query.")] = None,
    target: Annotated[
        str, typer.Option(help="unit (image+text units) | image | text: which vectors to search.")
    ] = "unit",
    k: Annotated[int, typer.Option("-k", "--top", help="Number of results.")] = 10,
    where: Annotated[
        list[str] | None,
        typer.Option(help="Payload filter KEY=VALUE (repeatable), e.g. labels=animals."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Model checkpoint; default: the one that embedded the collection."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection with --text, --image, or both (a text+image query is embedded as a
    unit through the gate)."""
    from .query.search import open_query_encoder, search

    settings: Settings = ctx.obj
    conditions = _parse_where(where or [])
    with settings.open_store() as store:
        if not store.has_collection(collection):
            raise JointspaceError(
                f"No collection '{collection}'; `jointspace collections list` shows what exists."
            )
        encoder = open_query_encoder(store, collection, model)
        hits = search(store, collection, encoder, text, image, target, k, conditions)
    results = [
        {
            "id": h.id,
            "score": round(h.score, 6),
            "text": h.payload.get("text"),
            "image": h.payload.get("image"),
            "payload": dict(h.payload),
        }
        for h in hits
    ]
    if as_json:
        _print_json({"results": results})
        return
    table = Table(title=f"{target} results in '{collection}'")
    for column in ("#", "score", "text", "image", "labels"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, result in enumerate(results, 1):
        labels = result["payload"].get("labels") or []
        table.add_row(
            str(rank),
            f"{result['score']:.3f}",
            result["text"] or "",
            result["image"] or "",
            labels[-1] if labels else "",
        )
    stdout.print(table)


@app.command(name="eval")
@handles_errors
def evaluate(
    ctx: typer.Context,
    sources: SourcesArg,
    model: Annotated[
        Path | None, typer.Option(help="Model checkpoint to evaluate (not needed with --compare).")
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Train and compare every variant (gated, nogate, weighted, concat, "
            "mean, loss ablations) on the same cached features, splits and seeds.",
        ),
    ] = False,
    seeds: Annotated[int, typer.Option(help="Seeds per variant with --compare.")] = 3,
    corrupt_units: Annotated[
        list[float] | None,
        typer.Option(
            "--corrupt-units",
            help="Fraction of gallery units with one modality corrupted "
            "(repeatable: 0 --corrupt-units 0.2 ... gives curves).",
        ),
    ] = None,
    backbone: Annotated[
        str, typer.Option(help="Backbone for --compare (default: offline).")
    ] = "offline",
    epochs: Annotated[int, typer.Option(help="Most epochs per variant with --compare.")] = 60,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write report.md, report.json and PNG charts to this folder (--compare)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate on (held out: test).")] = "test",
    format: FormatOpt = "auto",
    image_column: ImageColumnOpt = None,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    workers: WorkersOpt = 1,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate on SOURCE's held-out split: six tasks (text|image → image|text|unit), paired
    protocol (R@k, MRR, nDCG@10) and, when items have labels, labelled MAP. With --compare,
    train and compare all variants over seeds, optionally with corrupted units."""
    settings: Settings = ctx.obj
    if split not in SPLITS:
        raise JointspaceError(f"Unknown split {split!r}; use train, val or test.")
    levels = tuple(corrupt_units or [0.0])
    if any(not 0 <= p <= 1 for p in levels):
        raise JointspaceError("--corrupt-units must be between 0 and 1.")
    if not compare and (model is None or len(levels) > 1):
        raise JointspaceError(
            "Pass --model MODEL_DIR with one --corrupt-units value, or --compare to train and "
            "compare every variant."
        )
    records = _read_sources(sources, format, image_column, text_column, label_column)
    if compare:
        _compare(
            settings,
            records,
            sources,
            backbone,
            seeds,
            levels,
            epochs,
            out,
            workers,
            as_json,
            quiet,
        )
        return
    from .query.evaluate import evaluate_model

    with _progress(quiet, "eval") as progress:
        task = progress.add_task("features", total=_count_hint(sources), info="")
        result = evaluate_model(
            records,
            model,
            settings.home,
            split=split,
            corrupt_units=levels[0],
            workers=workers,
            on_items=lambda n: progress.advance(task, n),
        )
    if as_json:
        _print_json(result)
        return
    stdout.print(f"{result['queries']} held-out items ({split} split), model {result['model_id']}")
    stdout.print(_metrics_table("six tasks", result["tasks"]))
    for note in result["protocol"].values():
        stdout.print(f"- {note}", highlight=False)


def _compare(
    settings: Settings,
    records: Iterable[Item | Skipped],
    sources: list[Path],
    backbone: str,
    seeds: int,
    levels: tuple[float, ...],
    epochs: int,
    out: Path | None,
    workers: int,
    as_json: bool,
    quiet: bool,
) -> None:
    from .pipeline.train import TrainConfig
    from .query.compare import compare_on_corpus
    from .query.report import comparison_document, write_report

    with _progress(quiet, "compare") as progress:
        items = progress.add_task("features", total=_count_hint(sources), info="")
        steps = progress.add_task("variants", total=None, info="")

        def on_step(step: str) -> None:
            progress.update(steps, advance=1, info=step)
            if not quiet and not stderr.is_terminal:
                stderr.print(f"training {step}", highlight=False)

        runs, context = compare_on_corpus(
            records,
            settings.home,
            backbone,
            seeds,
            levels,
            TrainConfig(epochs=epochs),
            workers=workers,
            on_items=lambda n: progress.advance(items, n),
            on_step=on_step,
        )
    context["command"] = "jointspace " + " ".join(sys.argv[1:])
    document = write_report(runs, context, out) if out else comparison_document(runs, context)
    if as_json:
        _print_json(document)
        return
    for level in document["runs"]:
        table = Table(
            title=f"MAP (labelled), {level['corrupt_units']:.0%} of units corrupted, "
            f"mean ± std over {seeds} seeds"
        )
        table.add_column("variant")
        for task in next(iter(level["variants"].values()))["tasks"]:
            table.add_column(task, justify="right")
        for name, variant in level["variants"].items():
            table.add_row(
                name,
                *(
                    f"{m['MAP']['mean']:.3f} ± {m['MAP']['std']:.3f}"
                    for m in variant["tasks"].values()
                ),
            )
        stdout.print(table)
    if out:
        stdout.print(f"Report written to {out / 'report.md'}")


@collections_app.command("list")
@handles_errors
def collections_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Collections with their point counts and models."""
    settings: Settings = ctx.obj
    with settings.open_store() as store:
        infos = [store.info(name) for name in store.list_collections()]
    if as_json:
        _print_json({"collections": [_info_document(i) for i in infos]})
        return
    table = Table(title="collections")
    for column in ("name", "points", "model", "backbone"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.name,
            str(info.points),
            str(info.metadata.get("model_id", "")),
            str(info.metadata.get("backbone", "")),
        )
    stdout.print(table)


def _info_document(info) -> dict:
    return {
        "name": info.name,
        "points": info.points,
        "vectors": dict(info.vectors),
        "metadata": dict(info.metadata),
    }


@collections_app.command("info")
@handles_errors
def collections_info(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Collection name.")],
    as_json: JsonOpt = False,
) -> None:
    """A collection's points, vectors and the model that embedded it."""
    settings: Settings = ctx.obj
    with settings.open_store() as store:
        document = _info_document(store.info(name))
    if as_json:
        _print_json(document)
        return
    table = Table(title=f"collection '{name}'", show_header=False)
    table.add_row("points", str(document["points"]))
    table.add_row("vectors", ", ".join(f"{k} ({v}-d)" for k, v in document["vectors"].items()))
    for key, value in document["metadata"].items():
        table.add_row(key, str(value))
    stdout.print(table)


@collections_app.command("drop")
@handles_errors
def collections_drop(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Collection name.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a collection and its points."""
    settings: Settings = ctx.obj
    if not yes and not typer.confirm(f"Delete collection '{name}' and all its points?"):
        raise typer.Exit(1)
    with settings.open_store() as store:
        store.drop_collection(name)
    stderr.print(f"Dropped collection '{name}'.")


def main() -> None:
    """Console entry point."""
    app()

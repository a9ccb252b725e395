"""`jointspace eval`: the six tasks on a held-out split, and the variant comparison."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..corpus.item import Item, Skipped
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
    metrics_table,
    print_json,
    progress_bar,
    read_sources,
    stderr,
    stdout,
)


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
    records = read_sources(sources, format, image_column, text_column, label_column)
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
    from ..query.evaluate import evaluate_model

    with progress_bar(quiet) as progress:
        task = progress.add_task("features", total=count_hint(sources), info="")
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
        print_json(result)
        return
    stdout.print(f"{result['queries']} held-out items ({split} split), model {result['model_id']}")
    stdout.print(metrics_table("six tasks", result["tasks"]))
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
    from ..pipeline.train import TrainConfig
    from ..query.compare import compare_on_corpus
    from ..query.report import comparison_document, write_report

    with progress_bar(quiet) as progress:
        items = progress.add_task("features", total=count_hint(sources), info="")
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
        print_json(document)
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

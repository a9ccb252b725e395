"""`jointspace eval`: the six tasks on a held-out split, and the variant comparison."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import jointspace as js

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
    ProgressView,
    QuietOpt,
    SourcesArg,
    TextColumnOpt,
    TextOnlyOpt,
    WorkersOpt,
    app,
    handles_errors,
    metrics_table,
    print_json,
    source_options,
    stdout,
)

CompareOpt = Annotated[
    bool,
    typer.Option(
        "--compare",
        help="Train and compare every variant (gated, nogate, weighted, concat, mean, loss "
        "ablations) on the same cached features, splits and seeds.",
    ),
]
CorruptUnitsOpt = Annotated[
    list[float] | None,
    typer.Option(
        "--corrupt-units",
        min=0.0,
        max=1.0,
        help="Fraction of gallery units with one modality corrupted "
        "(repeatable: 0 --corrupt-units 0.2 ... gives curves).",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(help="Write report.md, report.json and PNG charts to this folder (--compare)."),
]


@app.command(name="eval")
@handles_errors
def evaluate(
    ctx: typer.Context,
    sources: SourcesArg,
    model: Annotated[
        Path | None, typer.Option(help="Model checkpoint to evaluate (not needed with --compare).")
    ] = None,
    compare: CompareOpt = False,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per variant with --compare.")] = 3,
    corrupt_units: CorruptUnitsOpt = None,
    backbone: Annotated[str, typer.Option(help="Backbone for --compare.")] = "offline",
    epochs: Annotated[int, typer.Option(min=1, help="Most epochs per variant (--compare).")] = 60,
    out: OutOpt = None,
    split: Annotated[str, typer.Option(help="Split to evaluate on (held out: test).")] = "test",
    allow_overlap: Annotated[
        bool,
        typer.Option(help="Evaluate even items the model saw in training (counted as overlap)."),
    ] = False,
    images_dir: ImagesDirOpt = None,
    captions: CaptionsOpt = None,
    caption: CaptionOpt = None,
    karpathy_split: KarpathySplitOpt = None,
    image_encoding: ImageEncodingOpt = None,
    text_only: TextOnlyOpt = False,
    image_only: ImageOnlyOpt = False,
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
    levels = tuple(corrupt_units or [0.0])
    _check_mode(compare, model, levels)
    reader = source_options(ctx)
    home = ctx.obj.home_dir()
    with ProgressView(quiet) as progress:
        if compare:
            report = js.compare(
                sources,
                home=home,
                backbone=backbone,
                seeds=seeds,
                corrupt_units=levels,
                epochs=epochs,
                out=out,
                command="jointspace " + " ".join(sys.argv[1:]),
                workers=workers,
                **ctx.obj.compute,
                source_options=reader,
                on_progress=progress,
            )
        else:
            report = js.evaluate(
                sources,
                model,
                home=home,
                split=split,
                corrupt_units=levels[0],
                allow_overlap=allow_overlap,
                workers=workers,
                **ctx.obj.compute,
                source_options=reader,
                on_progress=progress,
            )
    if as_json:
        print_json(report.to_dict())
    elif compare:
        _render_comparison(report, seeds)
    else:
        _render_evaluation(report)


def _check_mode(compare: bool, model: Path | None, levels: tuple[float, ...]) -> None:
    if not compare and (model is None or len(levels) > 1):
        raise js.JointspaceError(
            "Pass --model MODEL_DIR with one --corrupt-units value, or --compare to train and "
            "compare every variant."
        )


def _render_evaluation(report: js.EvalReport) -> None:
    stdout.print(f"{report.queries} held-out items ({report.split} split), model {report.model_id}")
    stdout.print(metrics_table("six tasks", report.tasks))
    for note in report.protocol.values():
        stdout.print(f"- {note}", highlight=False)
    if report.overlap:
        stdout.print(f"- {report.overlap} evaluated items were seen in training (--allow-overlap)")
    elif report.overlap is None:
        stdout.print("- the model records no digest of its training items: overlap not checked")


def _render_comparison(report: js.ComparisonReport, seeds: int) -> None:
    for level in report.runs:
        table = Table(
            title=f"MAP (labelled), {level['corrupt_units']:.0%} of units corrupted, "
            f"mean ± std over {seeds} seeds"
        )
        table.add_column("variant")
        for task in next(iter(level["variants"].values()))["tasks"]:
            table.add_column(task, justify="right")
        for name, variant in level["variants"].items():
            maps = (m["MAP"] for m in variant["tasks"].values())
            table.add_row(name, *(f"{m['mean']:.3f} ± {m['std']:.3f}" for m in maps))
        stdout.print(table)
    if report.report_dir:
        stdout.print(f"Report written to {Path(report.report_dir) / 'report.md'}")

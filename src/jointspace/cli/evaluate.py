"""`jointspace eval`: the six tasks on a held-out split, and the variant comparison."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import jointspace as js
from jointspace.pipeline.names import DEFAULT_SAMPLING

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
from .train import Bridge, BridgeOpt, Sampling, SamplingOpt

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
    sampling: SamplingOpt = DEFAULT_SAMPLING,
    bridge: BridgeOpt = "auto",
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
    train and compare all variants over seeds, optionally with corrupted units. Several
    sources are evaluated each on its own (its queries against its own gallery) and overall."""
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
                sampling=Sampling(sampling).value,
                bridge=Bridge(bridge).value,
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
    if len(report.per_source) > 1:
        for name, result in report.per_source.items():
            title = f"six tasks: {name} ({result['queries']} items)"
            stdout.print(metrics_table(title, result["tasks"]))
        stdout.print(metrics_table("six tasks, all sources", report.tasks))
    else:
        stdout.print(metrics_table("six tasks", report.tasks))
    for note in report.protocol.values():
        stdout.print(f"- {note}", highlight=False)
    if report.overlap:
        stdout.print(f"- {report.overlap} evaluated items were seen in training (--allow-overlap)")
    elif report.overlap is None:
        stdout.print("- the model records no digest of its training items: overlap not checked")


def _render_comparison(report: js.ComparisonReport, seeds: int) -> None:
    for level in report.runs:
        per_source = level.get("per_source") or {}
        tables = [("", level["variants"])]
        if len(per_source) > 1:
            tables = [(f"{name}: ", entry["variants"]) for name, entry in per_source.items()]
            tables.append(("all sources: ", level["variants"]))
        for prefix, variants in tables:
            stdout.print(_map_table(prefix, level["corrupt_units"], variants, seeds))
    if report.report_dir:
        stdout.print(f"Report written to {Path(report.report_dir) / 'report.md'}")


def _map_table(prefix: str, corrupted: float, variants: dict, seeds: int) -> Table:
    table = Table(
        title=f"{prefix}MAP (labelled), {corrupted:.0%} of units corrupted, "
        f"mean ± std over {seeds} seeds"
    )
    table.add_column("variant")
    tasks = list(next(iter(variants.values()))["tasks"])
    for task in tasks:
        table.add_column(task, justify="right")
    for name, variant in variants.items():
        cells = (variant["tasks"][task].get("MAP") for task in tasks)
        table.add_row(name, *(f"{m['mean']:.3f} ± {m['std']:.3f}" if m else "—" for m in cells))
    return table

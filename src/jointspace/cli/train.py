"""`jointspace train`: fit a gated encoder on a corpus's training split."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

import jointspace as js
from jointspace.pipeline.names import BRIDGES, DEFAULT_SAMPLING

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

Loss = Enum("Loss", {name: name for name in js.LOSSES}, type=str)
Fusion = Enum("Fusion", {name: name for name in js.FUSIONS}, type=str)
Sampling = Enum("Sampling", {name: name for name in js.SAMPLINGS}, type=str)
SamplingOpt = Annotated[
    Sampling,
    typer.Option(
        help="Several sources: batches draw from each in proportion to its size, to its square "
        "root, or equally (balanced)."
    ),
]
Bridge = Enum("Bridge", {name: name for name in BRIDGES}, type=str)
BridgeOpt = Annotated[
    Bridge,
    typer.Option(
        help="Images also carry the backbone's ImageNet classifier's view of them, in the text "
        "tower's words (an aligned bridge between image and text); auto: with the offline "
        "backbone."
    ),
]
BackboneOpt = Annotated[
    str,
    typer.Option(
        help="offline (no network), clip (OpenCLIP ViT-B-32), NAME:TAG, NAME:/path.pt or a "
        "local open_clip folder."
    ),
]


@app.command()
@handles_errors
def train(
    ctx: typer.Context,
    sources: SourcesArg,
    out: Annotated[Path, typer.Option(help="Folder to write the model checkpoint to.")],
    backbone: BackboneOpt = "offline",
    epochs: Annotated[
        int, typer.Option(min=1, help="Most epochs (early stopping on validation).")
    ] = 60,
    loss: Annotated[Loss, typer.Option(help="Hinge (sum, max, sum-max) or infonce.")] = "sum",
    margin: Annotated[float, typer.Option(min=0.0, help="Hinge margin.")] = 0.2,
    corrupt: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Probability of corrupting one modality of a training unit (teaches the gate to "
            "route).",
        ),
    ] = 0.3,
    fusion: Annotated[Fusion, typer.Option(help="How a unit fuses image and text.")] = "gated",
    dim: Annotated[int, typer.Option(min=1, help="Embedding dimension.")] = 512,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    sampling: SamplingOpt = DEFAULT_SAMPLING,
    bridge: BridgeOpt = "auto",
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
    """Train a gated encoder on SOURCE's training split (validation split for early stopping;
    the test split is never seen) and save it to --out. Several sources train one model; each
    keeps its own held-out split and is counted and validated on its own."""
    reader = source_options(ctx)
    with ProgressView(quiet) as progress:
        report = js.train(
            sources,
            out,
            home=ctx.obj.home_dir(),
            **ctx.obj.compute,
            backbone=backbone,
            epochs=epochs,
            loss=Loss(loss).value,
            margin=margin,
            corrupt=corrupt,
            fusion=Fusion(fusion).value,
            dim=dim,
            seed=seed,
            sampling=Sampling(sampling).value,
            bridge=Bridge(bridge).value,
            workers=workers,
            source_options=reader,
            on_progress=progress,
        )
    if as_json:
        print_json(report.to_dict())
        return
    stdout.print(f"Model {report.model_id} saved to {report.path}")
    data = report.data
    stdout.print(
        f"items: {data['train']} train, {data['val']} val, {data['test']} test "
        f"(held out), {data['skipped']} skipped; best epoch {report.best_epoch} "
        f"of {report.epochs_run}; {report.seconds:.0f} s"
    )
    per_source = data.get("per_source") or {}
    if len(per_source) > 1:
        for name, counts in per_source.items():
            stdout.print(
                f"  {name}: {counts['train']} train, {counts['val']} val, {counts['test']} test, "
                f"{counts['skipped']} skipped",
                highlight=False,
            )
        for name, metrics in report.val_per_source.items():
            stdout.print(metrics_table(f"validation (paired): {name}", metrics))
        stdout.print(metrics_table("validation (paired), mean over sources", report.val_metrics))
        return
    stdout.print(metrics_table("validation (paired)", report.val_metrics))

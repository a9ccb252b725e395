"""`jointspace train`: fit a gated encoder on a corpus's training split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    from ..pipeline.model import EncoderConfig
    from ..pipeline.train import TrainConfig
    from ..pipeline.training_run import train_model

    settings: Settings = ctx.obj
    records = read_sources(sources, format, image_column, text_column, label_column)
    config = TrainConfig(epochs=epochs, loss=loss, margin=margin, corrupt=corrupt, seed=seed)
    with progress_bar(quiet) as progress:
        features_task = progress.add_task("features", total=count_hint(sources), info="")
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
            if not quiet and not stderr.is_terminal:  # no bar: a line per epoch
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
        print_json(summary)
        return
    stdout.print(f"Model {summary['model_id']} saved to {summary['path']}")
    data = summary["data"]
    stdout.print(
        f"items: {data['train']} train, {data['val']} val, {data['test']} test "
        f"(held out), {data['skipped']} skipped; best epoch {summary['best_epoch']} "
        f"of {summary['epochs_run']}; {summary['seconds']:.0f} s"
    )
    stdout.print(metrics_table("validation (paired)", summary["val_metrics"]))

"""Training and evaluation: corpus in, report out (the feature cache under `home` is reused)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..corpus.select import SourceOptions, check_split, count_hint, read_sources
from ..errors import JointspaceError
from ..pipeline.compute import Compute
from ..pipeline.names import DEFAULT_SAMPLING, FUSIONS, LOSSES, SAMPLINGS
from ..progress import Progress, ProgressCallback, StageCounter
from .home import resolve_home
from .reports import ComparisonReport, EvalReport, TrainReport

Sources = str | Path | Sequence[str | Path]


def _source_list(sources: Sources) -> list[Path]:
    if isinstance(sources, (str, Path)):
        return [Path(sources)]
    return [Path(s) for s in sources]


def _read(paths: list[Path], options: SourceOptions | None) -> Any:
    """The records of every source, each named as given (pipeline.dataset.SourceNames): a
    source is one path, and training, evaluation and the reports count it on its own. Every
    source is opened before the first record is read."""
    from ..pipeline.dataset import SourceNames

    return SourceNames([(str(path), read_sources([path], options)) for path in paths])


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise JointspaceError(f"Unknown {name} {value!r}; use one of {', '.join(choices)}.")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value < 1:
            raise JointspaceError(f"--{name.replace('_', '-')} must be at least 1 (got {value}).")


def train(
    sources: Sources,
    out: str | Path,
    *,
    home: str | Path | None = None,
    backbone: str = "offline",
    epochs: int = 60,
    loss: str = "sum",
    margin: float = 0.2,
    corrupt: float = 0.3,
    fusion: str = "gated",
    dim: int = 512,
    seed: int = 0,
    sampling: str = DEFAULT_SAMPLING,
    bridge: str = "auto",
    workers: int = 1,
    device: str | None = None,
    precision: str | None = None,
    engine: str | None = None,
    source_options: SourceOptions | None = None,
    on_progress: ProgressCallback | None = None,
) -> TrainReport:
    """Train a gated encoder on the sources' training split (validation split for early
    stopping; the test split is never seen) and save it to `out`. `device` (auto|cpu|cuda[:N]),
    `precision` (auto|fp32|bf16|fp16) and `engine` (auto|torch|openvino) choose where and how
    the backbone runs (default: the environment's JOINTSPACE_DEVICE / JOINTSPACE_PRECISION /
    JOINTSPACE_ENGINE, else auto).

    Several sources train one model: each source keeps its own held-out split, batches draw
    across sources by `sampling` (SAMPLINGS), the epoch is picked by the mean over sources
    of their validation scores, and the report's `data["per_source"]` and `val_per_source`
    count and score each source. `bridge` (auto|imagenet|none): images also carry the
    backbone's ImageNet bridge (pipeline/bridge.py; auto: where the backbone has one)."""
    _check_choice("loss", loss, LOSSES)
    _check_choice("fusion", fusion, FUSIONS)
    _check_choice("sampling", sampling, SAMPLINGS)
    _check_positive(epochs=epochs, dim=dim)
    if not 0 <= corrupt <= 1:
        raise JointspaceError(f"--corrupt must be between 0 and 1 (got {corrupt}).")
    from ..pipeline.bridge import resolve_bridge
    from ..pipeline.model import EncoderConfig
    from ..pipeline.train import TrainConfig
    from ..pipeline.training_run import train_model

    bridge = resolve_bridge(bridge, backbone)

    paths = _source_list(sources)
    records = _read(paths, source_options)

    def on_epoch(record: Any) -> None:
        if on_progress:
            info = f"loss {record.loss:.4f} val rsum {record.val_rsum:.3f}"
            on_progress(Progress("epochs", record.epoch, epochs, info))

    summary = train_model(
        records,
        Path(out),
        resolve_home(home),
        backbone,
        EncoderConfig(1, 1, dim=dim, fusion=fusion, bridge=bridge),
        TrainConfig(
            epochs=epochs,
            loss=loss,
            margin=margin,
            corrupt=corrupt,
            seed=seed,
            sampling=sampling,
        ),
        workers=workers,
        on_items=StageCounter("features", count_hint(paths), on_progress),
        on_epoch=on_epoch,
        compute=Compute.resolve(device, precision, engine),
    )
    return TrainReport(**summary)


def evaluate(
    sources: Sources,
    model: str | Path,
    *,
    home: str | Path | None = None,
    split: str = "test",
    corrupt_units: float = 0.0,
    allow_overlap: bool = False,
    workers: int = 1,
    device: str | None = None,
    precision: str | None = None,
    engine: str | None = None,
    source_options: SourceOptions | None = None,
    on_progress: ProgressCallback | None = None,
) -> EvalReport:
    """The six tasks (text|image → image|text|unit) of a model on one split of the sources
    (held out: test), paired protocol and, when items have labels, labelled MAP. An evaluated
    item the model saw in training is refused unless `allow_overlap` (then counted). Each
    source is evaluated on its own (its queries against its own gallery: `per_source`);
    `tasks` pools every source's queries."""
    check_split(split, allow_all=False)
    if not 0 <= corrupt_units <= 1:
        raise JointspaceError("--corrupt-units must be between 0 and 1.")
    from ..evaluation.tasks import evaluate_model

    paths = _source_list(sources)
    result = evaluate_model(
        _read(paths, source_options),
        Path(model),
        resolve_home(home),
        split=split,
        corrupt_units=corrupt_units,
        workers=workers,
        on_items=StageCounter("features", count_hint(paths), on_progress),
        allow_overlap=allow_overlap,
        compute=Compute.resolve(device, precision, engine),
    )
    return EvalReport(**result)


def compare(
    sources: Sources,
    *,
    home: str | Path | None = None,
    backbone: str = "offline",
    seeds: int = 3,
    corrupt_units: Sequence[float] = (0.0,),
    epochs: int = 60,
    sampling: str = DEFAULT_SAMPLING,
    bridge: str = "auto",
    out: str | Path | None = None,
    command: str | None = None,
    workers: int = 1,
    device: str | None = None,
    precision: str | None = None,
    engine: str | None = None,
    source_options: SourceOptions | None = None,
    on_progress: ProgressCallback | None = None,
) -> ComparisonReport:
    """Train every variant (gated, nogate, weighted, concat, loss ablations) on the same cached
    features, splits and seeds, and evaluate each on the test split at every corruption level;
    with `out`, also write report.md, report.json and charts there. With several sources,
    every variant trains on all of them and is evaluated per source (`per_source`) and over
    all (`variants`). `bridge` as in `train`, for every variant."""
    _check_positive(seeds=seeds, epochs=epochs)
    _check_choice("sampling", sampling, SAMPLINGS)
    levels = tuple(corrupt_units) or (0.0,)
    if any(not 0 <= p <= 1 for p in levels):
        raise JointspaceError("--corrupt-units must be between 0 and 1.")
    from ..evaluation.compare import compare_on_corpus
    from ..evaluation.report import comparison_document, write_report
    from ..pipeline.bridge import resolve_bridge
    from ..pipeline.train import TrainConfig

    bridge = resolve_bridge(bridge, backbone)

    paths = _source_list(sources)
    steps = StageCounter("variants", None, None)

    def on_step(step: str) -> None:
        steps(1)
        if on_progress:
            on_progress(Progress("variants", steps.done, None, step))

    runs, context = compare_on_corpus(
        _read(paths, source_options),
        resolve_home(home),
        backbone,
        seeds,
        levels,
        TrainConfig(epochs=epochs, sampling=sampling),
        workers=workers,
        on_items=StageCounter("features", count_hint(paths), on_progress),
        on_step=on_step,
        compute=Compute.resolve(device, precision, engine),
        bridge=bridge,
    )
    if command:
        context["command"] = command
    if out is None:
        return ComparisonReport(comparison_document(runs, context))
    return ComparisonReport(write_report(runs, context, Path(out)), str(out))

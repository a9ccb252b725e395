"""Comparing the gated encoder with baselines on the same cached features, splits and seeds.

Variants: `gated` (GMU fusion), `nogate` (fusion fixed at 0.5), `weighted` (the nogate towers
with a fixed fusion weight tuned on validation: what Marqo or Weaviate's multi2vec-clip offer),
`concat` (concatenation + learned projection), `mean` (the backbone space, unit = normalised
mean of image and text features: UniIR's CLIP score fusion; only for aligned backbones), and a
loss ablation of `gated`: max-violation, sum→max schedule, InfoNCE. Every trained variant uses
the same training recipe (corruption included) so only the fusion or the loss differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..corpus.item import Item, Skipped
from ..pipeline.backbone import Backbone
from ..pipeline.bridge import BridgeWeights, imagenet_bridge
from ..pipeline.compute import Compute
from ..pipeline.corruption import KIND_NAMES, Junk, junk_features
from ..pipeline.dataset import FeatureSet
from ..pipeline.model import EncoderConfig, GatedEncoder
from ..pipeline.train import TrainConfig, train_encoder, validation_by_source, validation_score
from .tasks import (
    CORRUPTION_SEED,
    Embedded,
    EvalSet,
    embed_with_model,
    prepare_evaluation,
    protocol_notes,
    source_task_metrics,
    with_corrupted_units,
)

WEIGHT_GRID = tuple(round(w, 1) for w in np.arange(0.1, 1.0, 0.1))


@dataclass(frozen=True)
class Variant:
    """How one variant is built: a fusion and a loss to train with (`fusion` None = the
    untrained backbone space), or the weight tuning of the `nogate` model."""

    name: str
    fusion: str | None
    loss: str = "sum"
    tune_weight: bool = False


VARIANTS = (
    Variant("gated", "gated"),
    Variant("nogate", "fixed"),
    Variant("weighted", "fixed", tune_weight=True),
    Variant("concat", "concat"),
    Variant("mean", None),
    Variant("gated-max", "gated", "max"),
    Variant("gated-sum-max", "gated", "sum-max"),
    Variant("gated-infonce", "gated", "infonce"),
)


@dataclass
class ComparisonRuns:
    """Raw results: metrics[p][variant] is one task→metric dict per seed (over every source's
    queries, each against its own source's gallery); source_metrics[p][source][variant] the
    same for one source; gates[p] the gated model's per-unit gate values and corruption kinds
    (all seeds); histories[variant] the training curve of seed 0; notes say why a variant was
    left out or how it was tuned."""

    seeds: int
    corrupt_levels: list[float]
    metrics: dict[float, dict[str, list[dict[str, dict[str, float]]]]] = field(default_factory=dict)
    source_metrics: dict[float, dict[str, dict[str, list[dict[str, dict[str, float]]]]]] = field(
        default_factory=dict
    )
    gates: dict[float, dict[str, list[float]]] = field(default_factory=dict)
    histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def mean_space(data: EvalSet) -> Embedded:
    """The backbone space itself: normalised features, unit = normalised mean of both."""
    g = data.gallery

    def norm(x: np.ndarray) -> np.ndarray:
        return F.normalize(torch.from_numpy(x), dim=-1).numpy()

    image, text = norm(g.image), norm(g.text)
    unit = np.where(g.image_mask[:, None], image, 0) + np.where(g.text_mask[:, None], text, 0)
    return Embedded(
        image, text, norm(unit), norm(data.keyword), norm(data.view), norm(data.own_image)
    )


def tune_fixed_weight(model: GatedEncoder, val: FeatureSet) -> tuple[GatedEncoder, float]:
    """The fixed-fusion model with the weight in WEIGHT_GRID that maximises the validation
    score (rsum; with several sources, the mean of each source's)."""
    best, best_score, best_weight = model, -1.0, 0.5
    for weight in WEIGHT_GRID:
        candidate = GatedEncoder(replace(model.config, fixed_weight=float(weight)))
        candidate.load_state_dict(model.state_dict())
        score = validation_score(validation_by_source(candidate, val))
        if score > best_score:
            best, best_score, best_weight = candidate, score, float(weight)
    return best, best_weight


def run_comparison(
    parts: dict[str, FeatureSet],
    data: EvalSet,
    train_junk: Junk,
    eval_junk: Junk,
    seeds: int = 3,
    corrupt_levels: tuple[float, ...] = (0.0,),
    train_config: TrainConfig | None = None,
    dim: int = 512,
    variants: tuple[Variant, ...] = VARIANTS,
    on_step: Callable[[str], None] | None = None,
    bridge: BridgeWeights | None = None,
) -> ComparisonRuns:
    """Train every variant for every seed on `parts["train"]` (validation: `parts["val"]`) and
    evaluate each at every corruption level on `data`, each source's queries against its own
    source's gallery (corrupted within it). `bridge`: every trained variant's images carry the
    backbone's ImageNet bridge."""
    train_config = train_config or TrainConfig()
    runs = ComparisonRuns(seeds, list(corrupt_levels))
    image_dim, text_dim = parts["train"].image.shape[1], parts["train"].text.shape[1]
    sources = data.by_source()
    corrupted = {
        p: {
            name: with_corrupted_units(part, p, CORRUPTION_SEED, eval_junk) if p else part
            for name, part in sources.items()
        }
        for p in corrupt_levels
    }
    for p in corrupt_levels:
        runs.metrics[p] = {}
        runs.source_metrics[p] = {name: {} for name in sources}
        runs.gates[p] = {"gate": [], "kind": []}
    for seed in range(seeds):
        trained: dict[tuple[str, str], GatedEncoder] = {}
        for variant in variants:
            if on_step:
                on_step(f"{variant.name} seed {seed}")
            if variant.fusion is None:
                if image_dim != text_dim:
                    runs.notes[variant.name] = (
                        f"left out: the backbone's image ({image_dim}-d) and text ({text_dim}-d) "
                        "features are not aligned, so their mean means nothing"
                    )
                    continue
                embed = mean_space
            else:
                model = trained.get((variant.fusion, variant.loss))
                if model is None:
                    config = EncoderConfig(
                        image_dim,
                        text_dim,
                        dim=dim,
                        fusion=variant.fusion,
                        bridge="none" if bridge is None else "imagenet",
                    )
                    result = train_encoder(
                        parts["train"],
                        parts["val"],
                        config,
                        replace(train_config, loss=variant.loss, seed=seed),
                        junk=train_junk,
                        bridge=bridge,
                    )
                    model = trained[(variant.fusion, variant.loss)] = result.model
                    if seed == 0:
                        runs.histories[variant.name] = [vars(r) for r in result.history]
                if variant.tune_weight:
                    model, weight = tune_fixed_weight(model, parts["val"])
                    runs.notes[f"{variant.name} seed {seed}"] = f"weight {weight} (image side)"

                def embed(d: EvalSet, m: GatedEncoder = model) -> Embedded:
                    return embed_with_model(m, d)

            for p, evaluations in corrupted.items():
                overall, per_source, vectors = source_task_metrics(evaluations, embed)
                runs.metrics[p].setdefault(variant.name, []).append(overall)
                for name, result in per_source.items():
                    runs.source_metrics[p][name].setdefault(variant.name, []).append(
                        result["tasks"]
                    )
                if variant.name == "gated":
                    for name, evaluation in evaluations.items():
                        runs.gates[p]["gate"].extend(vectors[name].gate.tolist())
                        runs.gates[p]["kind"].extend(KIND_NAMES[k] for k in evaluation.kinds)
    return runs


def summarise(
    per_seed: list[dict[str, dict[str, float]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """task → metric → {"mean", "std"} over seeds (population std; 0 for one seed)."""
    tasks = per_seed[0].keys()
    return {
        task: {
            metric: {
                "mean": float(np.mean([run[task][metric] for run in per_seed])),
                "std": float(np.std([run[task][metric] for run in per_seed])),
            }
            for metric in per_seed[0][task]
        }
        for task in tasks
    }


def gate_statistics(gates: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per corruption kind: how many units, and the mean and std of their gate (weight on the
    image side; 1 = image only, 0 = text only)."""
    values, kinds = np.array(gates["gate"]), np.array(gates["kind"])
    return {
        kind: {
            "units": int((kinds == kind).sum()),
            "mean": float(values[kinds == kind].mean()),
            "std": float(values[kinds == kind].std()),
        }
        for kind in KIND_NAMES.values()
        if (kinds == kind).any()
    }


def compare_on_corpus(
    records: Iterable[Item | Skipped],
    home: Path,
    backbone_spec: str,
    seeds: int,
    corrupt_levels: tuple[float, ...],
    train_config: TrainConfig,
    workers: int = 1,
    on_items: Callable[[int], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    compute: Compute | None = None,
    bridge: str = "none",
) -> tuple[ComparisonRuns, dict[str, Any]]:
    """Every variant on a corpus's cached features: trained on its train split (val for early
    stopping and weight tuning), evaluated on its test split. Returns the runs and a context
    (backbone, split sizes, protocol notes) for the report."""
    backbone = Backbone(backbone_spec, compute)
    parts, data = prepare_evaluation(records, home, backbone, "test", workers, on_items)
    runs = run_comparison(
        parts,
        data,
        junk_features(backbone, "train"),
        junk_features(backbone, "eval"),
        seeds=seeds,
        corrupt_levels=corrupt_levels,
        train_config=train_config,
        on_step=on_step,
        bridge=imagenet_bridge(backbone) if bridge == "imagenet" else None,
    )
    per_source: dict[str, dict[str, int]] = {}
    for split, part in parts.items():
        for name, rows in part.source_rows().items():
            if len(rows):
                per_source.setdefault(name, dict.fromkeys(parts, 0))[split] = len(rows)
    context = {
        "sources": sorted({item.source for part in parts.values() for item in part.items}),
        "backbone": backbone_spec,
        "precision": backbone.compute.precision,
        "engine": backbone.compute.engine,
        "bridge": bridge,
        "split_sizes": {name: len(part) for name, part in parts.items()},
        "split_sizes_per_source": per_source,
        "protocol": protocol_notes(data, max(corrupt_levels)),
        "train_config": train_config.to_dict(),
    }
    return runs, context

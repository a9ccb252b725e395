"""Evaluation: the six tasks (text|image → image|text|unit) on a held-out split.

Protocols (named in every report):
- paired: relevant = the same item. A text query is a keyword query: the words of the item's
  file name where the corpus has one (folder corpora), else the content words of its caption.
  An image query is another view of the item's image (seeded random crop, flip and colour
  jitter), never the very image stored in the target unit.
- labelled: relevant = shares the item's first label (its category). Queries are the item's
  keyword query and its own image; the query's own item is removed from the gallery for
  same-modality and unit targets, so nothing is found by copying. Reported as MAP.
- corrupted units (`corrupt_units` = p): a fraction p of the gallery's units have one modality
  corrupted (caption swapped or replaced by boilerplate, image swapped or blanked; fixed by
  seed, the same for every model); queries stay clean and relevance is unchanged.
- several sources: each source's queries are ranked against its own source's gallery only
  (its own held-out split), and corrupted within it; the overall metrics are the mean over
  every query of every source (each source's metric weighted by its number of queries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..corpus.item import Item, Skipped
from ..corpus.keywords import keyword_query, name_query
from ..corpus.split import split_of
from ..errors import JointspaceError
from ..metrics import identity_relevance, label_relevance, retrieval_metrics
from ..pipeline.backbone import Backbone
from ..pipeline.checkpoint import CARD_FILE, ModelCard, load_model
from ..pipeline.compute import Compute
from ..pipeline.corruption import Junk, Units, corrupt_units, junk_features
from ..pipeline.dataset import FeatureSet, SourceNames
from ..pipeline.features import FeatureCache, encode_texts
from ..pipeline.model import GatedEncoder
from ..pipeline.seen import SeenDigest
from ..pipeline.training_run import load_features, split_feature_set
from ..pipeline.views import view_features

TASKS = ("text->image", "text->text", "text->unit", "image->image", "image->text", "image->unit")
PROTOCOL_NOTES = {
    "paired": "R@k, MRR, nDCG@10: paired protocol (relevant = the same item or another "
    "rendering of it; text queries are file-name or caption keywords, image queries another "
    "view of the image)",
    "labelled": "MAP: labelled protocol (relevant = same category label; the query's own item "
    "removed from same-modality and unit galleries)",
}
SOURCES_NOTE = (
    "sources: each source's queries ranked against its own source's held-out gallery only; "
    "overall = the mean over all queries (per-source metrics weighted by their query counts)"
)


@dataclass
class EvalSet:
    """A held-out split's features plus the evaluation queries' backbone features. `own_image`
    keeps the clean image features (the labelled protocol's image queries) when the gallery's
    units are corrupted; `kinds` says how each unit was corrupted."""

    gallery: FeatureSet
    keyword: np.ndarray
    keyword_mask: np.ndarray
    view: np.ndarray
    view_mask: np.ndarray
    own_image: np.ndarray
    own_image_mask: np.ndarray
    kinds: np.ndarray

    def subset(self, rows: np.ndarray) -> EvalSet:
        """The rows given (gallery and queries alike), in that order."""
        return EvalSet(
            self.gallery.subset(rows),
            self.keyword[rows],
            self.keyword_mask[rows],
            self.view[rows],
            self.view_mask[rows],
            self.own_image[rows],
            self.own_image_mask[rows],
            self.kinds[rows],
        )

    def by_source(self) -> dict[str, EvalSet]:
        """Each source's evaluation set (itself when there is one source)."""
        rows = self.gallery.source_rows()
        if len(rows) == 1:
            return {next(iter(rows)): self}
        return {name: self.subset(r) for name, r in rows.items()}


def with_corrupted_units(data: EvalSet, p: float, seed: int, junk: Junk) -> EvalSet:
    """The same evaluation with a fraction `p` of the gallery's units corrupted."""
    g = data.gallery
    clean = Units(g.image, g.text, g.image_mask, g.text_mask)
    units, kinds = corrupt_units(clean, p, np.random.default_rng(seed), junk)
    gallery = replace(
        g,
        image=units.image,
        text=units.text,
        image_mask=units.image_mask,
        text_mask=units.text_mask,
    )
    return replace(data, gallery=gallery, kinds=kinds)


@dataclass
class Embedded:
    """Vectors of one model (or baseline) for an EvalSet: gallery vectors by target, and query
    vectors by query kind."""

    image: np.ndarray
    text: np.ndarray
    unit: np.ndarray
    keyword: np.ndarray
    view: np.ndarray
    own_image: np.ndarray
    gate: np.ndarray | None = None


def query_text(item: Item) -> str | None:
    """The paired protocol's keyword query for an item."""
    if item.extra.get("name"):
        return name_query(str(item.extra["name"]))
    return keyword_query(item.text) if item.text else None


def build_eval_set(gallery: FeatureSet, backbone: Backbone, cache: FeatureCache) -> EvalSet:
    """Backbone features of every query of the protocols (cached like all features)."""
    texts = [query_text(item) for item in gallery.items]
    keyword_mask = np.array([t is not None for t in texts], dtype=bool)
    keyword = np.zeros((len(gallery), backbone.text_dim), dtype=np.float32)
    if keyword_mask.any():
        keyword[keyword_mask] = encode_texts([t for t in texts if t], backbone, cache)
    view, view_mask = view_features(gallery.items, backbone, cache)
    return EvalSet(
        gallery,
        keyword,
        keyword_mask,
        view,
        view_mask & gallery.image_mask,
        gallery.image,
        gallery.image_mask,
        np.zeros(len(gallery), dtype=int),
    )


def embed_with_model(model: GatedEncoder, data: EvalSet) -> Embedded:
    """Gallery and query vectors of a trained encoder."""
    g = data.gallery
    vectors = model.embed(g.image, g.text, g.image_mask, g.text_mask)
    with torch.inference_mode():
        keyword = model.encode_text(torch.from_numpy(data.keyword)).numpy()
        view = model.encode_image(torch.from_numpy(data.view)).numpy()
        own = model.encode_image(torch.from_numpy(data.own_image)).numpy()
    return Embedded(
        vectors["image"], vectors["text"], vectors["unit"], keyword, view, own, vectors["gate"]
    )


def task_metrics(data: EvalSet, vectors: Embedded) -> dict[str, dict[str, float]]:
    """Metrics of the six tasks: paired R@k/MRR/nDCG@10, and labelled MAP when items have
    labels."""
    return counted_task_metrics(data, vectors)[0]


Counts = dict[str, dict[str, int]]  # task -> {"paired": queries, "labelled": queries}


def counted_task_metrics(
    data: EvalSet, vectors: Embedded
) -> tuple[dict[str, dict[str, float]], Counts]:
    """`task_metrics` and, per task, how many queries each protocol counted (for pooling
    several sources' metrics)."""
    g = data.gallery
    targets = {
        "image": (vectors.image, g.image_mask),
        "text": (vectors.text, g.text_mask),
        "unit": (vectors.unit, np.ones(len(g), dtype=bool)),
    }
    same = identity_relevance(g.groups, g.groups)
    labelled = len({label for label in g.labels if label}) > 1
    by_label = label_relevance(g.labels, g.labels) if labelled else None
    results: dict[str, dict[str, float]] = {}
    counts: Counts = {}
    for task in TASKS:
        modality, target = task.split("->")
        paired_q, paired_mask = (
            (vectors.keyword, data.keyword_mask)
            if modality == "text"
            else (vectors.view, data.view_mask)
        )
        gallery, gallery_mask = targets[target]
        columns = np.flatnonzero(gallery_mask)
        rows = np.flatnonzero(paired_mask)
        scores = paired_q[rows] @ gallery[columns].T
        metrics = retrieval_metrics(scores, same[np.ix_(rows, columns)])
        metrics.pop("MAP")
        counts[task] = {"paired": int(metrics.pop("queries")), "labelled": 0}
        if by_label is not None:
            label_q, label_mask = (
                (vectors.keyword, data.keyword_mask)
                if modality == "text"
                else (vectors.own_image, data.own_image_mask)
            )
            rows = np.flatnonzero(label_mask)
            own = same[np.ix_(rows, columns)] if target in (modality, "unit") else None
            labelled_metrics = retrieval_metrics(
                label_q[rows] @ gallery[columns].T, by_label[np.ix_(rows, columns)], exclude=own
            )
            metrics["MAP"] = labelled_metrics["MAP"]
            counts[task]["labelled"] = int(labelled_metrics["queries"])
        results[task] = metrics
    return results, counts


def pooled_metrics(
    parts: Sequence[tuple[dict[str, dict[str, float]], Counts]],
) -> dict[str, dict[str, float]]:
    """Several sources' task metrics as one: each metric the mean over all their queries (a
    source's value weighted by the queries its protocol counted; MAP by the labelled ones).
    A metric no source has is left out; one no source has a query for is NaN. One source:
    its own metrics, unchanged."""
    if len(parts) == 1:
        return parts[0][0]
    pooled: dict[str, dict[str, float]] = {}
    for task in TASKS:
        names = dict.fromkeys(m for metrics, _ in parts for m in metrics.get(task, {}))
        pooled[task] = {}
        for name in names:
            kind = "labelled" if name == "MAP" else "paired"
            total = weight = 0.0
            for metrics, counts in parts:
                value, n = metrics.get(task, {}).get(name), counts.get(task, {}).get(kind, 0)
                if value is not None and n and not np.isnan(value):
                    total, weight = total + n * value, weight + n
            pooled[task][name] = total / weight if weight else float("nan")
    return pooled


def source_task_metrics(
    by_source: dict[str, EvalSet], embed: Callable[[EvalSet], Embedded]
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]], dict[str, Embedded]]:
    """The six tasks per source (each source's queries against its own gallery) and pooled
    over sources; returns the overall metrics, {source: {"queries", "tasks"}} and each
    source's vectors."""
    counted, per_source, vectors = [], {}, {}
    for name, data in by_source.items():
        vectors[name] = embed(data)
        metrics, counts = counted_task_metrics(data, vectors[name])
        counted.append((metrics, counts))
        per_source[name] = {"queries": len(data.gallery), "tasks": metrics}
    return pooled_metrics(counted), per_source, vectors


CORRUPTION_SEED = 20180205


def prepare_evaluation(
    records: Iterable[Item | Skipped],
    home: Path,
    backbone: Backbone,
    split: str = "test",
    workers: int = 1,
    on_items: Callable[[int], None] | None = None,
) -> tuple[dict[str, FeatureSet], EvalSet]:
    """The corpus's train/val/test features and the evaluation set of `split` (every row
    knows its source when `records` is a `SourceNames`)."""
    features, _ = load_features(records, home, backbone, workers, on_items)
    parts = split_feature_set(features)
    if len(parts[split]) < 2:
        raise JointspaceError(
            f"The {split} split has {len(parts[split])} usable items; nothing to rank."
        )
    cache = FeatureCache.for_backbone(home, backbone.features_key)
    try:
        return parts, build_eval_set(parts[split], backbone, cache)
    finally:
        cache.close()


def protocol_notes(data: EvalSet, corrupt_units: float) -> dict[str, str]:
    """The protocol descriptions that apply to this evaluation."""
    notes = dict(PROTOCOL_NOTES)
    if not any(label for label in data.gallery.labels):
        notes.pop("labelled")
    if len(data.gallery.source_rows()) > 1:
        notes["sources"] = SOURCES_NOTE
    if corrupt_units:
        notes["corrupted"] = (
            f"corrupted units: {corrupt_units:.0%} of the gallery's units have one modality "
            "corrupted (caption swapped/boilerplate, image swapped/blanked; "
            f"seed {CORRUPTION_SEED})"
        )
    return notes


def seen_in_training(card: ModelCard) -> SeenDigest | None:
    """The digest of what the model was trained and validated on; None for a model trained
    before digests were recorded. A damaged digest stops the run with one sentence."""
    entry = card.training.get("seen")
    if entry is None:
        return None
    try:
        return SeenDigest.from_dict(entry)
    except ValueError as error:
        raise JointspaceError(
            f"The training digest in the model card {Path(card.path) / CARD_FILE} is damaged "
            f"({error}); restore the card or retrain the model."
        ) from None


def count_overlap(seen: SeenDigest, items: list[Item]) -> tuple[int, str | None]:
    """How many of `items` the model was trained or validated on, and the key of the first."""
    hits = np.flatnonzero(seen.contains([item.split_key for item in items]))
    return len(hits), (items[hits[0]].key if len(hits) else None)


def check_overlap(seen: SeenDigest, items: list[Item], model_id: str, allow_overlap: bool) -> int:
    """The number of `items` seen in training; unless `allow_overlap`, a bad run when any."""
    overlap, example = count_overlap(seen, items)
    if overlap and not allow_overlap:
        raise JointspaceError(
            f"{overlap} of {len(items)} evaluated items were in model {model_id}'s training or "
            f"validation data (e.g. {example}); evaluate on held-out data, or pass "
            "--allow-overlap to measure anyway."
        )
    return overlap


def evaluate_model(
    records: Iterable[Item | Skipped],
    model_dir: Path,
    home: Path,
    split: str = "test",
    corrupt_units: float = 0.0,
    workers: int = 1,
    on_items: Callable[[int], None] | None = None,
    allow_overlap: bool = False,
    compute: Compute | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of a corpus; JSON-ready result. `compute`: where and
    at what precision and engine the backbone runs (default: this machine's best).

    Every evaluated item is checked against the model's training digest: any item the model
    was trained or validated on (whatever format either corpus was read in) is a bad run,
    before any feature is computed, unless `allow_overlap`. The result's "overlap" is the
    number of such items evaluated (so 0 without `allow_overlap`), None for a model trained
    before models recorded a digest (which is evaluated as before, unchecked)."""
    model, card = load_model(model_dir)
    seen = seen_in_training(card)
    backbone = Backbone(card.backbone["spec"], compute)
    if seen is not None:
        if isinstance(records, SourceNames):
            records = SourceNames([(name, list(stream)) for name, stream in records.streams])
        else:
            records = list(records)
        held = [r for r in records if isinstance(r, Item) and split_of(r.split_key) == split]
        check_overlap(seen, held, card.model_id, allow_overlap)
    _, data = prepare_evaluation(records, home, backbone, split, workers, on_items)
    overlap = None if seen is None else count_overlap(seen, data.gallery.items)[0]
    by_source = data.by_source()
    if corrupt_units:
        junk = junk_features(backbone, "eval")
        by_source = {
            name: with_corrupted_units(part, corrupt_units, CORRUPTION_SEED, junk)
            for name, part in by_source.items()
        }
    tasks, per_source, _ = source_task_metrics(
        by_source, lambda part: embed_with_model(model, part)
    )
    return {
        "model_id": card.model_id,
        "split": split,
        "precision": backbone.compute.precision,
        "engine": backbone.compute.engine,
        "corrupt_units": corrupt_units,
        "queries": len(data.gallery),
        "overlap": overlap,
        "tasks": tasks,
        "per_source": per_source,
        "protocol": protocol_notes(data, corrupt_units),
    }

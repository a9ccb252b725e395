"""A whole training run: corpus → cached features → deterministic split → train → checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus.item import Item, Skipped
from ..corpus.split import SPLITS, split_of
from ..errors import JointspaceError
from .backbone import Backbone
from .bridge import imagenet_bridge
from .checkpoint import save_model
from .compute import Compute
from .corruption import junk_features
from .dataset import FeatureSet, SourceNames, build_feature_set
from .features import FeatureCache
from .model import EncoderConfig
from .seen import SeenDigest
from .train import EpochRecord, TrainConfig, train_encoder

MIN_TRAIN_ITEMS = 8


def split_feature_set(features: FeatureSet) -> dict[str, FeatureSet]:
    """The train, val and test parts of a feature set, by each item's deterministic split (of
    its content key, the same whatever the format; see corpus/split.py)."""
    keys = [item.split_key for item in features.items] if features.items else features.groups
    splits = np.array([split_of(key) for key in keys])
    return {name: features.subset(np.flatnonzero(splits == name)) for name in SPLITS}


def seen_digest(parts: dict[str, FeatureSet]) -> dict[str, Any]:
    """The card entry that records which items a model was trained and validated on: a digest
    of their content keys (pipeline/seen.py), which evaluation checks held-out items against."""
    items = parts["train"].items + parts["val"].items
    return SeenDigest.of(item.split_key for item in items).to_dict()


def split_counts(
    parts: dict[str, FeatureSet], skipped: list[Skipped], names: list[str], source_of: Callable
) -> dict[str, dict[str, int]]:
    """Per source (in the order given, then any other): its train/val/test items and skipped
    records."""
    counts: dict[str, dict[str, int]] = {}

    def entry(name: str) -> dict[str, int]:
        return counts.setdefault(name, {**dict.fromkeys(SPLITS, 0), "skipped": 0})

    for name in names:
        entry(name)
    for split, part in parts.items():
        for name, rows in part.source_rows().items():
            if len(part):
                entry(name)[split] += len(rows)
    for record in skipped:
        entry(source_of(record))["skipped"] += 1
    return counts


def load_features(
    records: Iterable[Item | Skipped],
    home: Path,
    backbone: Backbone,
    workers: int = 1,
    on_items: Callable[[int], None] | None = None,
) -> tuple[FeatureSet, list[Skipped]]:
    """A corpus's features through the cache under `home` (`records` a `SourceNames`: each
    row knows its source)."""
    cache = FeatureCache.for_backbone(home, backbone.features_key)
    try:
        features, skipped = build_feature_set(
            records, backbone, cache, workers=workers, on_batch=on_items
        )
    finally:
        cache.close()
    return features, skipped


def _reader_source(record: Item | Skipped) -> str:
    return record.source


def train_model(
    records: Iterable[Item | Skipped],
    out: Path,
    home: Path,
    backbone_spec: str,
    encoder_config: EncoderConfig,
    config: TrainConfig,
    workers: int = 1,
    on_items: Callable[[int], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    compute: Compute | None = None,
) -> dict[str, Any]:
    """Train on the training split (the validation split picks the epoch; the test split is
    never touched), save the checkpoint to `out`, and return a summary. `compute`: where and
    at what precision and engine the backbone runs (default: this machine's best).

    With several sources (`records` a `SourceNames`), each item's split is its own (by
    content), batches draw across sources by `config.sampling`, the epoch is picked by the
    mean over sources of each one's validation score, and the summary counts per source."""
    started = time.perf_counter()
    backbone = Backbone(backbone_spec, compute)
    features, skipped = load_features(records, home, backbone, workers, on_items)
    parts = split_feature_set(features)
    if len(parts["train"]) < MIN_TRAIN_ITEMS or len(parts["val"]) < 2:
        raise JointspaceError(
            f"Too few usable items to train ({len(parts['train'])} train, {len(parts['val'])} "
            f"validation, {len(skipped)} skipped); give a corpus of at least ~50 image-text pairs."
        )
    encoder_config = replace(
        encoder_config, image_dim=backbone.image_dim, text_dim=backbone.text_dim
    )
    junk = junk_features(backbone, "train")
    bridge = imagenet_bridge(backbone) if encoder_config.bridge == "imagenet" else None
    result = train_encoder(
        parts["train"], parts["val"], encoder_config, config, on_epoch, junk, bridge
    )
    data: dict[str, Any] = {name: len(part) for name, part in parts.items()}
    data.update(skipped=len(skipped), sources=sorted({i.source for i in features.items}))
    if isinstance(records, SourceNames):
        names, source_of = records.names, records.name_of
    else:  # one source, named as the features name it
        names = features.sources[:1]
        source_of = (lambda _: names[0]) if names else _reader_source
    data["per_source"] = split_counts(parts, skipped, names, source_of)
    training = {
        "config": config.to_dict(),
        "data": data,
        "best_epoch": result.best_epoch,
        "val_metrics": result.val_metrics,
        "val_per_source": result.val_per_source,
        "history": [asdict(r) for r in result.history],
        "seen": seen_digest(parts),
    }
    backbone_card = {
        "spec": backbone_spec,
        "fingerprint": backbone.fingerprint,
        "precision": backbone.compute.precision,
        "engine": backbone.compute.engine,
        "image_dim": backbone.image_dim,
        "text_dim": backbone.text_dim,
    }
    card = save_model(out, result.model, backbone_card, training)
    return {
        "model_id": card.model_id,
        "path": card.path,
        "data": data,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "val_metrics": result.val_metrics,
        "val_per_source": result.val_per_source,
        "device": backbone.compute.device,
        "precision": backbone.compute.precision,
        "engine": backbone.compute.engine,
        "seconds": time.perf_counter() - started,
    }

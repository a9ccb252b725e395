"""Training the gated encoder on cached features: joint tasks, corruption, early stopping."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from ..metrics import identity_relevance, retrieval_metrics
from .corruption import IMAGE_BLANKED, TEXT_JUNK, Junk, Units, corrupt_units
from .dataset import FeatureSet
from .losses import make_loss
from .model import EncoderConfig, GatedEncoder
from .names import LOSSES


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters. `loss` "sum-max" trains with sum-of-hinges, then switches to the hardest
    negative (VSE++) at `switch_epoch`. `corrupt` is the probability that a training unit has one
    modality corrupted (caption swapped or replaced by boilerplate, image swapped or blanked);
    `gate_supervision` weighs a loss that asks the gate to turn away from junk it can see."""

    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    margin: float = 0.2
    loss: str = "sum"
    switch_epoch: int = 15
    patience: int = 12
    corrupt: float = 0.3
    query_noise: float = 0.3
    gate_supervision: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    val_rsum: float
    seconds: float


@dataclass
class TrainResult:
    """The best model on validation, its epoch and metrics, and the per-epoch history."""

    model: GatedEncoder
    best_epoch: int
    val_metrics: dict[str, dict[str, float]]
    history: list[EpochRecord] = field(default_factory=list)


def validation_metrics(model: GatedEncoder, data: FeatureSet) -> dict[str, dict[str, float]]:
    """Paired metrics (relevant = the same item) for caption→image, image→caption and keyword
    query→unit on `data`; used to pick the best epoch."""
    vectors = model.embed(data.image, data.text, data.image_mask, data.text_mask)
    queries = model.embed(data.image, data.query, data.image_mask, data.text_mask)["text"]
    both = data.image_mask & data.text_mask
    relevant = identity_relevance(data.groups, data.groups)
    image_rows, text_rows = np.flatnonzero(both), np.flatnonzero(both)
    cap2img = vectors["text"][text_rows] @ vectors["image"][image_rows].T
    rel = relevant[np.ix_(text_rows, image_rows)]
    return {
        "text->image": retrieval_metrics(cap2img, rel),
        "image->text": retrieval_metrics(cap2img.T, rel.T),
        "query->unit": retrieval_metrics(
            queries[data.text_mask] @ vectors["unit"].T, relevant[data.text_mask]
        ),
    }


def rsum(metrics: dict[str, dict[str, float]]) -> float:
    """Sum of R@1, R@5 and R@10 over tasks: the model selection criterion."""
    return float(sum(m[f"R@{k}"] for m in metrics.values() for k in (1, 5, 10)))


def train_encoder(
    train: FeatureSet,
    val: FeatureSet,
    encoder_config: EncoderConfig,
    config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[EpochRecord], None] | None = None,
    junk: Junk | None = None,
) -> TrainResult:
    """Train on `train`, select the epoch with the best validation rsum, stop after `patience`
    epochs without improvement. `junk` (features of a blank placeholder image and of junk
    captions) is what corruption puts into units; without it only swaps are used."""
    if config.loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {config.loss!r}")
    with _one_thread():
        return _train(train, val, encoder_config, config, on_epoch, junk)


@contextmanager
def _one_thread() -> Iterator[None]:
    """These small models train faster on one thread: on 2 busy cores, thread hand-offs cost
    more than they save (measured here: 5 epochs on stamp-sized features, 100 s with 2 threads
    beside other work vs 13 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(
    train: FeatureSet,
    val: FeatureSet,
    encoder_config: EncoderConfig,
    config: TrainConfig,
    on_epoch: Callable[[EpochRecord], None] | None,
    junk: Junk | None,
) -> TrainResult:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = GatedEncoder(encoder_config)
    image, text = torch.from_numpy(train.image), torch.from_numpy(train.text)
    query = torch.from_numpy(train.query)
    image_mask, text_mask = torch.from_numpy(train.image_mask), torch.from_numpy(train.text_mask)
    model.set_feature_stats(image[image_mask], text[text_mask])
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    best_state, best_score, best_epoch = None, -1.0, 0
    best_metrics: dict[str, dict[str, float]] = {}
    history: list[EpochRecord] = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        mode = (
            "max"
            if config.loss == "max" or (config.loss == "sum-max" and epoch > config.switch_epoch)
            else "sum"
        )
        loss_fn = make_loss("infonce" if config.loss == "infonce" else mode, config.margin)
        model.train()
        order = torch.randperm(len(train), generator=generator)
        losses = []
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            if len(rows) < 2:
                continue
            clean = Units(
                image[rows].numpy(),
                text[rows].numpy(),
                image_mask[rows].numpy(),
                text_mask[rows].numpy(),
            )
            corrupted, kinds = corrupt_units(clean, config.corrupt, rng, junk)
            loss = _batch_loss(model, loss_fn, config, generator, clean, corrupted, query[rows])
            if config.gate_supervision and model.config.fusion == "gated":
                loss = loss + config.gate_supervision * _gate_loss(model, corrupted, kinds)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        metrics = validation_metrics(model, val)
        score = rsum(metrics)
        record = EpochRecord(epoch, float(np.mean(losses)), score, time.perf_counter() - started)
        history.append(record)
        if on_epoch:
            on_epoch(record)
        # NaN (no validation queries) never wins, but the first epoch is always kept
        if best_state is None or score > best_score:
            best_state, best_score, best_epoch = copy.deepcopy(model.state_dict()), score, epoch
            best_metrics = metrics
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_epoch, best_metrics, history)


def _batch_loss(
    model: GatedEncoder,
    loss_fn: torch.nn.Module,
    config: TrainConfig,
    generator: torch.Generator,
    clean: Units,
    corrupted: Units,
    query: torch.Tensor,
) -> torch.Tensor:
    """Joint loss over caption↔image, keyword query→unit and image query→unit; the units are
    the corrupted ones, the queries and the caption↔image pairs are clean."""
    image, text = torch.from_numpy(clean.image), torch.from_numpy(clean.text)
    image_mask, text_mask = torch.from_numpy(clean.image_mask), torch.from_numpy(clean.text_mask)
    pair = model(image, text, image_mask, text_mask)
    units = model(
        *(
            torch.from_numpy(a)
            for a in (corrupted.image, corrupted.text, corrupted.image_mask, corrupted.text_mask)
        )
    ).unit
    both = image_mask & text_mask
    total = torch.zeros(())
    if both.sum() > 1:
        total = total + loss_fn(pair.text[both], pair.image[both])
    if text_mask.sum() > 1:
        total = total + loss_fn(model.encode_text(query[text_mask]), units[text_mask])
    if image_mask.sum() > 1:
        # the image query is another "view": the features with noise, so the task is not copying
        noise = torch.randn(image.shape, generator=generator)
        noisy = image + config.query_noise * model.image_std * noise
        total = total + loss_fn(model.encode_image(noisy[image_mask]), units[image_mask])
    return total


def _gate_loss(model: GatedEncoder, corrupted: Units, kinds: np.ndarray) -> torch.Tensor:
    """Binary cross-entropy pulling the gate of a unit with a junk caption towards the image
    (z = 1) and of a unit with a blank image towards the text (z = 0). Swaps are left alone:
    from the pair alone nothing tells which side is the wrong one."""
    target = np.full(len(kinds), np.nan, dtype=np.float32)
    target[kinds == TEXT_JUNK] = 1.0
    target[kinds == IMAGE_BLANKED] = 0.0
    known = ~np.isnan(target)
    if not known.any():
        return torch.zeros(())
    rows = torch.from_numpy(np.flatnonzero(known))
    gate = model(
        *(
            torch.from_numpy(a)[rows]
            for a in (corrupted.image, corrupted.text, corrupted.image_mask, corrupted.text_mask)
        )
    ).gate
    return F.binary_cross_entropy(gate.clamp(1e-6, 1 - 1e-6), torch.from_numpy(target[known]))

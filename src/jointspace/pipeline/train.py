"""Training the gated encoder on cached features: joint tasks, corruption, early stopping.

Several sources train one model: batches draw across them (`TrainConfig.sampling`), a batch
keeps one item per content key (so no item is its own in-batch negative), and the epoch is
picked by the mean over sources of each one's validation rsum, each source's validation
items ranked among themselves."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch.nn import functional as F

from ..metrics import identity_relevance, retrieval_metrics
from .bridge import BridgeWeights
from .corruption import (
    IMAGE_BLANKED,
    IMAGE_SWAPPED,
    TEXT_JUNK,
    TEXT_SWAPPED,
    Junk,
    Plan,
    plan_corruption,
)
from .dataset import FeatureSet
from .losses import make_loss
from .model import EncoderConfig, GatedEncoder
from .names import DEFAULT_SAMPLING, LOSSES, SAMPLINGS

# How batches draw from several sources: in proportion to their training items
# ("proportional": one shuffle of all items), in proportion to the square root of their size
# ("sqrt"), or equally ("balanced"). With one source they are the same.
_SAMPLING_POWER = {"proportional": 1.0, "sqrt": 0.5, "balanced": 0.0}


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters. `loss` "sum-max" trains with sum-of-hinges, then switches to the hardest
    negative (VSE++) at `switch_epoch`. `corrupt` is the probability that a training unit has one
    modality corrupted (caption swapped or replaced by boilerplate, image swapped or blanked);
    `gate_supervision` weighs a loss that asks the gate to turn away from junk it can see.
    `sampling` says how batches draw from several sources (SAMPLINGS); an epoch is as many
    batches as one pass over all training items takes."""

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
    sampling: str = DEFAULT_SAMPLING

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochRecord:
    """One epoch: mean training loss, validation score (rsum; with several sources the mean
    of each source's) and wall seconds."""

    epoch: int
    loss: float
    val_rsum: float
    seconds: float


@dataclass
class TrainResult:
    """The best model on validation, its epoch and metrics (the mean over sources), each
    source's validation metrics, and the per-epoch history."""

    model: GatedEncoder
    best_epoch: int
    val_metrics: dict[str, dict[str, float]]
    history: list[EpochRecord] = field(default_factory=list)
    val_per_source: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def validation_metrics(model: GatedEncoder, data: FeatureSet) -> dict[str, dict[str, float]]:
    """Paired metrics (relevant = the same item) for caption→image, image→caption and keyword
    query→unit on `data` (one gallery: all its rows)."""
    vectors = model.embed(data.image, data.text, data.image_mask, data.text_mask)
    with torch.inference_mode():
        queries = model.encode_text(torch.from_numpy(data.query)).numpy()
    both = data.image_mask & data.text_mask
    relevant = identity_relevance(data.groups, data.groups)
    rows = np.flatnonzero(both)
    cap2img = vectors["text"][rows] @ vectors["image"][rows].T
    rel = relevant[np.ix_(rows, rows)]
    return {
        "text->image": retrieval_metrics(cap2img, rel),
        "image->text": retrieval_metrics(cap2img.T, rel.T),
        "query->unit": retrieval_metrics(
            queries[data.text_mask] @ vectors["unit"].T, relevant[data.text_mask]
        ),
    }


def validation_by_source(
    model: GatedEncoder, data: FeatureSet
) -> dict[str, dict[str, dict[str, float]]]:
    """`validation_metrics` of each source's rows, ranked against that source's rows only
    (sources with fewer than two rows are left out)."""
    return {
        name: validation_metrics(model, part)
        for name, part in data.by_source().items()
        if len(part) >= 2
    }


def mean_over_sources(
    per_source: dict[str, dict[str, dict[str, float]]],
) -> dict[str, dict[str, float]]:
    """Each task's metrics averaged over sources (NaN ones left out); one source: its own."""
    if len(per_source) == 1:
        return next(iter(per_source.values()))
    first = next(iter(per_source.values()), {})
    return {
        task: {
            metric: _nanmean([source[task][metric] for source in per_source.values()])
            for metric in first[task]
        }
        for task in first
    }


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def rsum(metrics: dict[str, dict[str, float]]) -> float:
    """Sum of R@1, R@5 and R@10 over tasks: the model selection criterion."""
    return float(sum(m[f"R@{k}"] for m in metrics.values() for k in (1, 5, 10)))


def validation_score(per_source: dict[str, dict[str, dict[str, float]]]) -> float:
    """The selection criterion over several sources: the mean of each source's rsum, so a big
    source does not outvote a small one (NaN when no source has validation queries)."""
    return _nanmean([rsum(metrics) for metrics in per_source.values()])


def train_encoder(
    train: FeatureSet,
    val: FeatureSet,
    encoder_config: EncoderConfig,
    config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[EpochRecord], None] | None = None,
    junk: Junk | None = None,
    bridge: BridgeWeights | None = None,
) -> TrainResult:
    """Train on `train`, select the epoch with the best validation score (the mean over
    `val`'s sources of each one's rsum), stop after `patience` epochs without improvement.
    `junk` (features of a blank placeholder image and of junk captions) is what corruption
    puts into units; without it only swaps are used. `bridge`: the backbone's ImageNet bridge,
    needed when `encoder_config.bridge` is "imagenet"."""
    if config.loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {config.loss!r}")
    if config.sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, not {config.sampling!r}")
    if encoder_config.bridge == "imagenet":
        if bridge is None:
            raise ValueError("an encoder with the imagenet bridge needs its BridgeWeights")
        encoder_config = replace(encoder_config, bridge_classes=len(bridge.bias))
    with _one_thread():
        return _train(train, val, encoder_config, config, on_epoch, junk, bridge)


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


class _Batches:
    """Each epoch's batches of training rows.

    "proportional" is one shuffle of every row, cut into batches. "sqrt" and "balanced" draw
    each row of a batch from a source picked with probability ∝ size^½ or equally, taking that
    source's rows in a running shuffle (reshuffled when used up), for as many batches as one
    shuffle of every row gives. Either way a batch keeps one row per content key (the same
    caption, or renderings of one picture): an item is never its own in-batch negative."""

    def __init__(self, data: FeatureSet, config: TrainConfig, generator: torch.Generator):
        self.n, self.size, self.generator = len(data), config.batch_size, generator
        keys = [item.split_key for item in data.items] if data.items else data.groups
        self.codes = np.unique(np.array(keys, dtype=object), return_inverse=True)[1]
        self.sources = list(data.source_rows().values())
        power = _SAMPLING_POWER[config.sampling]
        weights = torch.tensor([len(rows) ** power for rows in self.sources], dtype=torch.float64)
        self.shares = weights / weights.sum()
        self.mixed = len(self.sources) > 1 and power != 1.0
        self.queues: list[list[int]] = [[] for _ in self.sources]

    def epoch(self) -> Iterator[np.ndarray]:
        if not self.mixed:
            order = torch.randperm(self.n, generator=self.generator).numpy()
            for start in range(0, self.n, self.size):
                yield self._distinct(order[start : start + self.size])
            return
        for _ in range(math.ceil(self.n / self.size)):
            picks = torch.multinomial(self.shares, self.size, True, generator=self.generator)
            counts = torch.bincount(picks, minlength=len(self.sources)).tolist()
            rows = [self._take(source, count) for source, count in enumerate(counts)]
            yield self._distinct(np.concatenate(rows))

    def _take(self, source: int, count: int) -> np.ndarray:
        queue, rows = self.queues[source], self.sources[source]
        while len(queue) < count:
            queue.extend(rows[torch.randperm(len(rows), generator=self.generator).numpy()])
        taken, self.queues[source] = queue[:count], queue[count:]
        return np.array(taken, dtype=int)

    def _distinct(self, rows: np.ndarray) -> np.ndarray:
        """The rows whose content key is the first of its kind in the batch, in order."""
        _, first = np.unique(self.codes[rows], return_index=True)
        return rows[np.sort(first)]


def _train(
    train: FeatureSet,
    val: FeatureSet,
    encoder_config: EncoderConfig,
    config: TrainConfig,
    on_epoch: Callable[[EpochRecord], None] | None,
    junk: Junk | None,
    bridge: BridgeWeights | None,
) -> TrainResult:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = GatedEncoder(encoder_config)
    image, text = torch.from_numpy(train.image), torch.from_numpy(train.text)
    query = torch.from_numpy(train.query)
    image_mask, text_mask = torch.from_numpy(train.image_mask), torch.from_numpy(train.text_mask)
    model.set_feature_stats(image[image_mask], text[text_mask])
    if model.bridge is not None and bridge is not None:
        model.bridge.load(bridge)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    junk_tensors = None if junk is None else _JunkTensors(junk)
    batches = _Batches(train, config, generator)
    best_state, best_score, best_epoch = None, -1.0, 0
    best_metrics: dict[str, dict[str, dict[str, float]]] = {}
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
        losses = []
        for rows in batches.epoch():
            if len(rows) < 2:
                continue
            rows_t = torch.from_numpy(rows)
            batch = _Batch(image[rows_t], text[rows_t], image_mask[rows_t], text_mask[rows_t])
            plan = plan_corruption(
                batch.image_mask.numpy(), batch.text_mask.numpy(), config.corrupt, rng, junk
            )
            loss = _batch_loss(
                model, loss_fn, config, generator, batch, plan, junk_tensors, query[rows_t]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        per_source = validation_by_source(model, val)
        score = validation_score(per_source)
        record = EpochRecord(epoch, float(np.mean(losses)), score, time.perf_counter() - started)
        history.append(record)
        if on_epoch:
            on_epoch(record)
        # NaN (no validation queries) never wins, but the first epoch is always kept
        if best_state is None or score > best_score:
            best_state, best_score, best_epoch = copy.deepcopy(model.state_dict()), score, epoch
            best_metrics = per_source
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_epoch, mean_over_sources(best_metrics), history, best_metrics)


@dataclass
class _Batch:
    image: torch.Tensor
    text: torch.Tensor
    image_mask: torch.Tensor
    text_mask: torch.Tensor


class _JunkTensors:
    """The junk features as tensors (a blank image row, the junk caption rows)."""

    def __init__(self, junk: Junk) -> None:
        self.blank_image = torch.from_numpy(np.asarray(junk.blank_image))[None]
        self.captions = torch.from_numpy(np.asarray(junk.captions))


def _batch_loss(
    model: GatedEncoder,
    loss_fn: torch.nn.Module,
    config: TrainConfig,
    generator: torch.Generator,
    batch: _Batch,
    plan: Plan,
    junk: _JunkTensors | None,
    query: torch.Tensor,
) -> torch.Tensor:
    """Joint loss over caption↔image, keyword query→unit and image query→unit (plus the gate
    loss); the units are the corrupted ones, the queries and the caption↔image pairs are clean.

    Each modality goes through its tower once: a corrupted unit's parts are the clean rows'
    tower outputs, taken from its donor row (a swap) or the junk's (a blank image, a junk
    caption), so corruption costs no second pass of the towers."""
    n_i, n_t = model.towers(batch.image, batch.text)
    unit_i, unit_t, unit_image_mask, unit_text_mask = _corrupted_parts(
        model, n_i, n_t, batch, plan, junk
    )
    units = model.fuse_units(unit_i, unit_t, unit_image_mask, unit_text_mask)
    image_mask, text_mask = batch.image_mask, batch.text_mask
    both = image_mask & text_mask
    total = torch.zeros(())
    if both.sum() > 1:
        total = total + loss_fn(n_t[both], n_i[both])
    if text_mask.sum() > 1:
        total = total + loss_fn(model.encode_text(query[text_mask]), units.unit[text_mask])
    if image_mask.sum() > 1:
        # the image query is another "view": the features with noise, so the task is not copying
        noise = torch.randn(batch.image.shape, generator=generator)
        noisy = batch.image + config.query_noise * model.image_std * noise
        total = total + loss_fn(model.encode_image(noisy[image_mask]), units.unit[image_mask])
    if config.gate_supervision and model.config.fusion == "gated":
        total = total + config.gate_supervision * _gate_loss(units.gate, plan.kinds)
    return total


def _corrupted_parts(
    model: GatedEncoder,
    n_i: torch.Tensor,
    n_t: torch.Tensor,
    batch: _Batch,
    plan: Plan,
    junk: _JunkTensors | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tower outputs and masks of the corrupted units (see corruption.apply_plan)."""
    kinds = torch.from_numpy(plan.kinds)
    rows = torch.arange(len(kinds))
    donors = torch.from_numpy(plan.donors)
    image_from = torch.where(kinds == IMAGE_SWAPPED, donors, rows)
    text_from = torch.where(kinds == TEXT_SWAPPED, donors, rows)
    unit_i, unit_t = n_i[image_from], n_t[text_from]
    image_mask, text_mask = batch.image_mask[image_from], batch.text_mask[text_from]
    if junk is not None:
        blanked = kinds == IMAGE_BLANKED
        if blanked.any():
            blank = model.encode_image(junk.blank_image)
            unit_i = torch.where(blanked[:, None], blank, unit_i)
        junked = torch.from_numpy(np.flatnonzero(plan.kinds == TEXT_JUNK))
        if len(junked):
            captions = torch.from_numpy(plan.junk_caption[junked.numpy()])
            unit_t = unit_t.index_copy(0, junked, model.encode_text(junk.captions[captions]))
    return unit_i, unit_t, image_mask, text_mask


def _gate_loss(gate: torch.Tensor, kinds: np.ndarray) -> torch.Tensor:
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
    return F.binary_cross_entropy(gate[rows].clamp(1e-6, 1 - 1e-6), torch.from_numpy(target[known]))

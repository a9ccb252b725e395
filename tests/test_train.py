"""Training on synthetic features, modality corruption, splits, keyword queries and point ids."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter

import numpy as np
import pytest
import torch

from jointspace.corpus.item import Item
from jointspace.corpus.keywords import keyword_query, name_query
from jointspace.corpus.split import split_of
from jointspace.pipeline.corruption import (
    CLEAN,
    IMAGE_BLANKED,
    IMAGE_SWAPPED,
    TEXT_JUNK,
    TEXT_SWAPPED,
    Junk,
    Units,
    corrupt_units,
)
from jointspace.pipeline.dataset import FeatureSet
from jointspace.pipeline.model import EncoderConfig, GatedEncoder
from jointspace.pipeline.train import (
    TrainConfig,
    TrainResult,
    rsum,
    train_encoder,
    validation_metrics,
)

IMAGE_DIM, TEXT_DIM = 24, 16


def _synthetic(n: int = 300, seed: int = 0) -> FeatureSet:
    """Text features = a fixed random linear map of the image features + noise; the keyword
    query is the text with more noise. Keys double as groups."""
    rng = np.random.default_rng(seed)
    mapping = rng.normal(size=(IMAGE_DIM, TEXT_DIM)) / np.sqrt(IMAGE_DIM)
    image = rng.normal(size=(n, IMAGE_DIM)).astype(np.float32)
    text = (image @ mapping + 0.1 * rng.normal(size=(n, TEXT_DIM))).astype(np.float32)
    query = (text + 0.2 * rng.normal(size=(n, TEXT_DIM))).astype(np.float32)
    keys = [f"item{i}" for i in range(n)]
    return FeatureSet(
        keys=keys,
        groups=list(keys),
        labels=[None] * n,
        image=image,
        image_mask=np.ones(n, dtype=bool),
        text=text,
        text_mask=np.ones(n, dtype=bool),
        query=query,
    )


ENCODER = EncoderConfig(image_dim=IMAGE_DIM, text_dim=TEXT_DIM, dim=32, hidden=64)


@pytest.fixture(scope="module")
def data() -> tuple[FeatureSet, FeatureSet]:
    features = _synthetic()
    return features.subset(range(0, 220)), features.subset(range(220, 300))


@pytest.fixture(scope="module")
def trained(data: tuple[FeatureSet, FeatureSet]) -> tuple[TrainConfig, TrainResult, list]:
    train, val = data
    seen: list = []
    config = TrainConfig(epochs=40, batch_size=64, lr=1e-2, patience=2, seed=0)
    return config, train_encoder(train, val, ENCODER, config, on_epoch=seen.append), seen


def test_training_beats_the_untrained_model(
    data: tuple[FeatureSet, FeatureSet], trained: tuple[TrainConfig, TrainResult, list]
) -> None:
    train, val = data
    torch.manual_seed(0)
    untrained = GatedEncoder(ENCODER)
    untrained.set_feature_stats(torch.from_numpy(train.image), torch.from_numpy(train.text))
    before = rsum(validation_metrics(untrained, val))
    _, result, _ = trained
    after = rsum(result.val_metrics)
    # 80 validation items: chance R@1 is ~0.01; the trained model finds most pairs
    assert after > before + 2.0, (before, after)
    assert result.val_metrics["text->image"]["R@1"] > 0.5
    assert result.val_metrics["query->unit"]["R@10"] > 0.8
    assert rsum(validation_metrics(result.model, val)) == pytest.approx(after)
    assert not result.model.training
    # standardisation uses the training features' statistics
    assert torch.allclose(result.model.image_mean, torch.from_numpy(train.image).mean(0))


def test_early_stopping_keeps_the_best_epoch(
    data: tuple[FeatureSet, FeatureSet], trained: tuple[TrainConfig, TrainResult, list]
) -> None:
    _, val = data
    config, result, seen = trained
    assert seen == result.history
    assert [r.epoch for r in result.history] == list(range(1, len(result.history) + 1))
    assert all(np.isfinite(r.loss) and r.loss >= 0 for r in result.history)
    assert len(result.history) < config.epochs
    # it stopped exactly `patience` epochs after the last improvement
    assert len(result.history) == result.best_epoch + config.patience
    best = max(result.history, key=lambda r: r.val_rsum)
    assert result.best_epoch == best.epoch
    assert all(r.val_rsum <= best.val_rsum for r in result.history)
    # the returned model is the best epoch's, not the last one's
    assert rsum(result.val_metrics) == pytest.approx(best.val_rsum)
    assert rsum(validation_metrics(result.model, val)) == pytest.approx(best.val_rsum)


def test_training_is_reproducible_for_a_seed(data: tuple[FeatureSet, FeatureSet]) -> None:
    train, val = data
    config = TrainConfig(epochs=2, batch_size=64, seed=3)
    train, val = train.subset(range(100)), val.subset(range(40))
    first = train_encoder(train, val, ENCODER, config)
    second = train_encoder(train, val, ENCODER, config)
    assert [r.loss for r in first.history] == [r.loss for r in second.history]
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key


@pytest.mark.parametrize("loss", ["max", "sum-max", "infonce"])
def test_other_losses_train(data: tuple[FeatureSet, FeatureSet], loss: str) -> None:
    train, val = data
    config = TrainConfig(epochs=2, batch_size=64, loss=loss, switch_epoch=1, seed=0)
    result = train_encoder(train, val, ENCODER, config)
    assert len(result.history) == 2
    assert all(np.isfinite(r.loss) for r in result.history)


def test_unknown_loss_is_refused(data: tuple[FeatureSet, FeatureSet]) -> None:
    train, val = data
    with pytest.raises(ValueError, match="loss"):
        train_encoder(train, val, ENCODER, TrainConfig(loss="hinge"))


def test_training_with_missing_modalities(data: tuple[FeatureSet, FeatureSet]) -> None:
    train, val = data
    train = train.subset(range(len(train)))
    train.image_mask[::5] = False  # a missing modality is a zero row and a False mask
    train.image[::5] = 0.0
    train.text_mask[1::7] = False
    train.text[1::7] = 0.0
    result = train_encoder(train, val, ENCODER, TrainConfig(epochs=1, batch_size=64))
    assert all(np.isfinite(r.loss) for r in result.history)
    # statistics come from real rows only, not the zero rows of missing images
    real = torch.from_numpy(train.image[train.image_mask])
    assert torch.allclose(result.model.image_mean, real.mean(0))


# --- corruption -------------------------------------------------------------------------------


def _units(n: int) -> Units:
    """Row r of the image features is all r, of the text features all -r - 1: swaps show.
    Row 3 has no image, row 7 no caption: incomplete units are never corrupted further."""
    values = np.arange(n, dtype=np.float32)[:, None]
    image_mask = np.ones(n, dtype=bool)
    text_mask = np.ones(n, dtype=bool)
    image_mask[3] = False
    text_mask[7] = False
    return Units(
        np.repeat(values, 4, axis=1), np.repeat(-values - 1, 3, axis=1), image_mask, text_mask
    )


BLANK = np.full(4, 0.5, dtype=np.float32)
JUNK_CAPTIONS = np.full((2, 3), 100.0, dtype=np.float32)
JUNK = Junk(BLANK, JUNK_CAPTIONS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corrupt_units_changes_exactly_the_rows_it_reports(seed: int) -> None:
    n = 60
    units = _units(n)
    original = Units(*(a.copy() for a in vars(units).values()))
    out, kinds = corrupt_units(units, 0.5, np.random.default_rng(seed), JUNK)
    for name, array in vars(units).items():
        assert np.array_equal(array, getattr(original, name))  # the input is not modified
    assert kinds.shape == (n,)
    assert kinds[3] == CLEAN and kinds[7] == CLEAN
    assert {int(k) for k in kinds} == {
        CLEAN,
        TEXT_SWAPPED,
        TEXT_JUNK,
        IMAGE_SWAPPED,
        IMAGE_BLANKED,
    }
    for r in range(n):
        kind = int(kinds[r])
        image_same = np.array_equal(out.image[r], units.image[r])
        text_same = np.array_equal(out.text[r], units.text[r])
        masks_same = (out.image_mask[r], out.text_mask[r]) == (
            units.image_mask[r],
            units.text_mask[r],
        )
        if kind == CLEAN:
            assert image_same and text_same and masks_same, r
        elif kind == TEXT_SWAPPED:  # another unit's caption, never its own
            donor = int(-out.text[r][0]) - 1
            assert donor != r and np.array_equal(out.text[r], units.text[donor]), r
            assert out.text_mask[r] == units.text_mask[donor]
            assert image_same and out.image_mask[r]
        elif kind == TEXT_JUNK:  # one of the junk captions, the unit otherwise unchanged
            assert any(np.array_equal(out.text[r], junk) for junk in JUNK_CAPTIONS), r
            assert out.text_mask[r] and image_same and out.image_mask[r]
        elif kind == IMAGE_SWAPPED:
            donor = int(out.image[r][0])
            assert donor != r and np.array_equal(out.image[r], units.image[donor]), r
            assert out.image_mask[r] == units.image_mask[donor]
            assert text_same and out.text_mask[r]
        else:
            assert kind == IMAGE_BLANKED
            assert np.array_equal(out.image[r], BLANK) and out.image_mask[r], r
            assert text_same and out.text_mask[r]
    # the same seed corrupts the same rows the same way
    again, again_kinds = corrupt_units(units, 0.5, np.random.default_rng(seed), JUNK)
    assert np.array_equal(again_kinds, kinds)
    for name in vars(out):
        assert np.array_equal(getattr(again, name), getattr(out, name))


def test_corrupt_units_probability_zero_and_one() -> None:
    units = _units(200)
    out, kinds = corrupt_units(units, 0.0, np.random.default_rng(0), JUNK)
    assert (kinds == CLEAN).all()
    for name, array in vars(units).items():
        assert np.array_equal(getattr(out, name), array)
    _, kinds = corrupt_units(units, 1.0, np.random.default_rng(0), JUNK)
    complete = units.image_mask & units.text_mask
    assert (kinds[complete] != CLEAN).all() and (kinds[~complete] == CLEAN).all()
    # the kind is drawn uniformly: each of the four is common
    counts = Counter(int(k) for k in kinds[complete])
    assert min(counts.values()) > 25


def test_corrupt_units_rate() -> None:
    units = _units(2000)
    _, kinds = corrupt_units(units, 0.3, np.random.default_rng(5), JUNK)
    assert abs((kinds != CLEAN).mean() - 0.3) < 0.04


def test_corrupt_units_without_junk_only_swaps() -> None:
    _, kinds = corrupt_units(_units(500), 1.0, np.random.default_rng(0), None)
    assert set(kinds.tolist()) == {CLEAN, TEXT_SWAPPED, IMAGE_SWAPPED}


# --- splits, keyword queries, point ids -------------------------------------------------------


def test_split_of_is_deterministic_with_the_documented_proportions() -> None:
    keys = [f"corpus/item-{i:05d}.png" for i in range(10_000)]
    first = [split_of(k) for k in keys]
    assert first == [split_of(k) for k in keys]
    counts = Counter(first)
    assert set(counts) == {"train", "val", "test"}
    assert abs(counts["train"] / 10_000 - 0.70) < 0.02
    assert abs(counts["val"] / 10_000 - 0.10) < 0.015
    assert abs(counts["test"] / 10_000 - 0.20) < 0.015
    # fixed across machines and versions: it is a sha256 of the key
    assert [split_of(k) for k in ("a", "b", "c", "k3")] == ["test", "train", "test", "val"]


def test_split_of_custom_percentages() -> None:
    keys = [str(i) for i in range(2000)]
    assert {split_of(k, val_percent=0, test_percent=0) for k in keys} == {"train"}
    assert {split_of(k, val_percent=0, test_percent=100) for k in keys} == {"test"}
    counts = Counter(split_of(k, val_percent=30, test_percent=30) for k in keys)
    assert abs(counts["train"] / 2000 - 0.4) < 0.05
    # growing the test share only moves items out of train/val, never between val and test
    for key in keys[:500]:
        if split_of(key) == "test":
            assert split_of(key, test_percent=30) == "test"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A Magellanic penguin.", "magellanic penguin"),
        ("The cat is sitting on the mat, with a hat!", "cat sitting mat hat"),
        ("Crème brûlée at the Café", "crème brûlée café"),
        ("snake_case and CamelCase", "snake case camelcase"),
        ("2 dogs & 3 cats", "2 dogs 3 cats"),
        ("  the of a  ", "the of a"),  # nothing but stopwords: the text itself
        ("...", "..."),
    ],
)
def test_keyword_query(text: str, expected: str) -> None:
    assert keyword_query(text) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("penguin_magellanic-2", "penguin magellanic"),
        ("Little-Penguin", "little penguin"),
        ("adelaide-rosella", "adelaide rosella"),
        ("IMG_0042", "img"),
        ("2024", "2024"),  # no words: the name itself
    ],
)
def test_name_query(name: str, expected: str) -> None:
    assert name_query(name) == expected


PENGUIN_ID = "239fadb1-31b4-50bc-983f-72f5191813f5"


def test_point_id_is_a_fixed_uuid5() -> None:
    item = Item("stamps", "animals/birds/penguin", text="A penguin.")
    assert item.point_id == PENGUIN_ID
    assert uuid.UUID(item.point_id).version == 5
    # only source and key matter, not the content
    assert Item("stamps", "animals/birds/penguin", text="other", labels=("x",)).point_id == (
        PENGUIN_ID
    )
    assert Item("other", "animals/birds/penguin").point_id != PENGUIN_ID
    assert Item("stamps", "animals/birds/penguin2").point_id != PENGUIN_ID
    # the separator keeps (source, key) pairs apart
    assert Item("ab", "c").point_id != Item("a", "bc").point_id


def test_point_id_is_stable_across_processes() -> None:
    code = (
        "from jointspace.corpus.item import Item; "
        "print(Item('stamps', 'animals/birds/penguin').point_id)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == PENGUIN_ID


def test_split_key_is_the_content_not_the_group_or_key() -> None:
    # the split is by content, the same in every format (more in test_split.py)
    assert Item("s", "a.png", text="A cat.", group="a").split_key == "text:a cat."
    assert Item("t", "row-3", text="a  CAT.").split_key == "text:a cat."
    assert Item("s", "a.png").split_key == "key:a.png"  # nothing else to go by

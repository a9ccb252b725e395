"""The split is by content (issue 10): the same files packaged as a folder or as a manifest get
the same train/val/test assignment, item for item; the model records a digest of what it was
trained and validated on, and evaluation refuses items from it, whatever their packaging."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import STAMPS, TINY
from PIL import Image

from jointspace.corpus.item import Item
from jointspace.corpus.readers import read_corpus
from jointspace.corpus.split import split_of
from jointspace.errors import JointspaceError

SHAPES = ("square", "circle", "triangle", "star", "cross", "ring")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">'
    '<rect width="32" height="32" fill="{}"/></svg>'
)


def _png(path: Path, n: int) -> None:
    rng = np.random.default_rng(n)
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_folder(root: Path, count: int = 60) -> Path:
    """`count` captioned PNGs in two category folders, a PNG + SVG + mirrored PNG stamp that
    share one caption file (the Tux Paint layout), and two PNGs without captions."""
    for n in range(count):
        folder = root / ("shapes" if n % 2 else "colours")
        name = f"{COLOURS[n % len(COLOURS)]}_{SHAPES[n % len(SHAPES)]}_{n}"
        _png(folder / f"{name}.png", n)
        caption = f"A {COLOURS[n % len(COLOURS)]} {SHAPES[n % len(SHAPES)]}, number {n}."
        (folder / f"{name}.txt").write_text(caption + "\nfr.utf8=Une forme.\n")
    stamp = root / "animals" / "penguin"
    _png(stamp.with_suffix(".png"), 1000)
    (stamp.parent / "penguin.svg").write_text(SVG.format("black"))
    _png(stamp.parent / "penguin_mirror.png", 1001)
    stamp.with_suffix(".txt").write_text("A penguin.\n")
    (stamp.parent / "penguin_mirror.txt").write_text("A  Penguin. \n")  # the same, normalised
    _png(root / "uncaptioned" / "noise_a.png", 2000)
    _png(root / "uncaptioned" / "noise_b.png", 2001)
    return root


def write_manifest(folder: Path, path: Path, fmt: str = "csv") -> Path:
    """A manifest of every item of the folder corpus: the image (relative to the manifest) and
    the caption the folder reader gives it, rows in reverse order."""
    items = [r for r in read_corpus(folder) if isinstance(r, Item)]
    rows = [
        {"image": Path(os.path.relpath(i.image, path.parent)).as_posix(), "text": i.text or ""}
        for i in reversed(items)
    ]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(
                file, ["image", "text"], delimiter="\t" if fmt == "tsv" else ","
            )
            writer.writeheader()
            writer.writerows(rows)
    return path


def splits_by_file(source: Path, **options) -> dict[str, str]:
    """{image file: split} for every item read from `source`."""
    items = [r for r in read_corpus(source, **options) if isinstance(r, Item)]
    return {str(Path(i.image).resolve()): split_of(i.split_key) for i in items}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "corpus")


# --- the split is by content ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_a_folder_and_a_manifest_of_the_same_files_split_alike(
    folder: Path, tmp_path: Path, fmt: str
) -> None:
    manifest = write_manifest(folder, tmp_path / f"corpus.{fmt}", fmt)
    by_folder, by_manifest = splits_by_file(folder), splits_by_file(manifest)
    assert len(by_folder) == 60 + 3 + 2
    assert by_manifest == by_folder
    assert set(by_folder.values()) == {"train", "val", "test"}


def test_real_stamps_split_alike_as_a_folder_and_a_manifest(tmp_path: Path) -> None:
    if not STAMPS.is_dir():
        pytest.skip(f"the Tux Paint stamps are not installed at {STAMPS}")
    corpus = tmp_path / "stamps"
    for folder in ("animals/birds", "food/fruit", "household/tools"):
        shutil.copytree(STAMPS / folder, corpus / folder, ignore=shutil.ignore_patterns("*.ogg"))
    manifest = write_manifest(corpus, tmp_path / "stamps.csv")
    by_folder, by_manifest = splits_by_file(corpus), splits_by_file(manifest)
    assert len(by_folder) > 50
    assert by_manifest == by_folder
    assert set(by_folder.values()) == {"train", "val", "test"}


def test_renderings_that_share_a_caption_share_a_split(folder: Path, tmp_path: Path) -> None:
    manifest = write_manifest(folder, tmp_path / "corpus.csv")
    for source in (folder, manifest):
        stamps = {
            Path(i.image).name: i.split_key
            for i in read_corpus(source)
            if isinstance(i, Item) and "penguin" in i.image
        }
        assert set(stamps) == {"penguin.png", "penguin.svg", "penguin_mirror.png"}
        assert set(stamps.values()) == {"text:a penguin."}


def test_only_split_is_the_same_for_a_folder_and_a_manifest(folder: Path, tmp_path: Path) -> None:
    from jointspace.corpus.select import only_split

    manifest = write_manifest(folder, tmp_path / "corpus.csv")
    for split in ("train", "val", "test"):
        in_folder = {Path(i.image).resolve() for i in only_split(read_corpus(folder), split)}
        in_manifest = {Path(i.image).resolve() for i in only_split(read_corpus(manifest), split)}
        assert in_folder == in_manifest, split


def test_split_key_is_the_content_key(tmp_path: Path) -> None:
    # a caption: normalised (NFC, casefolded, whitespace collapsed), whatever the key or group
    assert Item("s", "a.png", text=" A  Penguin.\n").split_key == "text:a penguin."
    assert Item("t", "row-9", text="a penguin.", group="g").split_key == "text:a penguin."
    assert Item("s", "k", text="Cre\u0300me").split_key == Item("s", "j", text="Crème").split_key
    # no caption: the sha256 of the image bytes, inline or in a file alike
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
    (tmp_path / "x.png").write_bytes(data)
    inline = Item("s", "a", image_bytes=data).split_key
    assert inline.startswith("sha256:")
    assert Item("t", "b", image=str(tmp_path / "x.png"), text="  ").split_key == inline
    # one of several captions of one image (COCO/Karpathy captions="each"): the image's group
    each = Item("c", "a.jpg#1", text="Something red.", group="a.jpg", extra={"caption_index": 1})
    assert each.split_key == "group:a.jpg"
    # a remote image without text: its URL; an unreadable file: the key
    assert Item("s", "k", image="https://example.org/a.png").split_key == (
        "url:https://example.org/a.png"
    )
    assert Item("s", "k", image=str(tmp_path / "missing.png")).split_key == "key:k"
    assert Item("s", "k").split_key == "key:k"


# --- the digest of what a model has seen -------------------------------------------------------


def test_seen_digest_round_trip_size_and_false_positives() -> None:
    from jointspace.pipeline.seen import SeenDigest

    keys = [f"text:caption {n}" for n in range(100_000)]
    digest = SeenDigest.of(keys + keys[:10])  # duplicates count once
    card = json.loads(json.dumps(digest.to_dict()))
    assert card["items"] == 100_000
    assert len(card["data"]) * 3 / 4 / 100_000 < 4.5  # bytes per item
    loaded = SeenDigest.from_dict(card)
    assert loaded.contains(keys).all()
    assert not loaded.contains([f"text:other {n}" for n in range(100_000)]).any()
    assert SeenDigest.from_dict(SeenDigest.of([]).to_dict()).contains(["a"]).tolist() == [False]
    for damaged in ({**card, "data": card["data"][:-8]}, {**card, "format": "x"}, []):
        with pytest.raises(ValueError):
            SeenDigest.from_dict(damaged)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A model trained (one epoch, tiny backbone) on a folder corpus: (corpus, model, home)."""
    from jointspace.pipeline.model import EncoderConfig
    from jointspace.pipeline.train import TrainConfig
    from jointspace.pipeline.training_run import train_model

    root = tmp_path_factory.mktemp("seen")
    corpus = make_folder(root / "corpus")
    (corpus / "animals" / "penguin.svg").unlink()  # the tiny backbone's tests stay with PNGs
    model, home = root / "model", root / "home"
    summary = train_model(
        read_corpus(corpus),
        model,
        home,
        f"{TINY}:random",
        EncoderConfig(1, 1, dim=16),
        TrainConfig(epochs=1, batch_size=16),
    )
    assert summary["data"]["test"] >= 2
    return corpus, model, home


def test_the_model_card_records_what_it_was_trained_on(trained) -> None:
    from jointspace.pipeline.seen import SeenDigest

    corpus, model, _ = trained
    card = json.loads((model / "config.json").read_text())
    seen = SeenDigest.from_dict(card["training"]["seen"])
    items = [r for r in read_corpus(corpus) if isinstance(r, Item)]
    was_seen = seen.contains([i.split_key for i in items])
    in_training = [split_of(i.split_key) in ("train", "val") for i in items]
    assert was_seen.tolist() == in_training
    assert len(seen) == len({i.split_key for i, s in zip(items, in_training, strict=True) if s})


def test_eval_of_the_same_files_as_a_manifest_has_no_overlap(trained, tmp_path: Path) -> None:
    from jointspace.evaluation.tasks import evaluate_model

    corpus, model, home = trained
    manifest = write_manifest(corpus, tmp_path / "corpus.csv")
    for source in (corpus, manifest):
        result = evaluate_model(read_corpus(source), model, home)
        assert result["overlap"] == 0
        assert result["queries"] == sum(
            split_of(i.split_key) == "test" for i in read_corpus(corpus) if isinstance(i, Item)
        )


def test_eval_on_training_items_is_refused_unless_allowed(trained, tmp_path: Path) -> None:
    from jointspace.evaluation.tasks import evaluate_model

    corpus, model, home = trained
    model_id = json.loads((model / "config.json").read_text())["model_id"]
    manifest = write_manifest(corpus, tmp_path / "corpus.csv")
    train = [i for i in read_corpus(corpus) if isinstance(i, Item)]
    train = [i for i in train if split_of(i.split_key) == "train"]
    with pytest.raises(JointspaceError) as refused:
        evaluate_model(read_corpus(manifest), model, home, split="train")
    message = str(refused.value)
    assert message.startswith(f"{len(train)} of {len(train)} evaluated items were in model ")
    assert f"model {model_id}'s training or validation data (e.g. " in message
    assert message.endswith(
        "); evaluate on held-out data, or pass --allow-overlap to measure anyway."
    )
    assert "\n" not in message
    result = evaluate_model(read_corpus(manifest), model, home, split="train", allow_overlap=True)
    assert result["overlap"] == result["queries"] == len(train)


def test_a_model_without_a_digest_is_evaluated_as_before(trained, tmp_path: Path) -> None:
    from jointspace.evaluation.tasks import evaluate_model
    from jointspace.pipeline.checkpoint import load_model, save_model

    corpus, model, home = trained
    encoder, card = load_model(model)
    old = tmp_path / "old-model"
    training = {k: v for k, v in card.training.items() if k != "seen"}
    save_model(old, encoder, card.backbone, training)
    result = evaluate_model(read_corpus(corpus), old, home, split="train")
    assert result["overlap"] is None


def test_a_damaged_digest_is_one_sentence_naming_the_card(trained, tmp_path: Path) -> None:
    from jointspace.evaluation.tasks import evaluate_model

    corpus, model, home = trained
    damaged = tmp_path / "damaged"
    shutil.copytree(model, damaged)
    card = json.loads((damaged / "config.json").read_text())
    card["training"]["seen"]["data"] = "not base64!"
    (damaged / "config.json").write_text(json.dumps(card))
    with pytest.raises(JointspaceError, match=r"training digest in the model card .*config\.json"):
        evaluate_model(read_corpus(corpus), damaged, home)


# --- count_hint ---------------------------------------------------------------------------------


def test_count_hint_counts_manifest_rows(folder: Path, tmp_path: Path) -> None:
    import pandas as pd

    from jointspace.corpus.select import count_hint

    rows = 60 + 3 + 2
    csv_path = write_manifest(folder, tmp_path / "a.csv")
    tsv_path = write_manifest(folder, tmp_path / "a.tsv", "tsv")
    jsonl_path = write_manifest(folder, tmp_path / "a.jsonl", "jsonl")
    assert count_hint([csv_path]) == count_hint([tsv_path]) == count_hint([jsonl_path]) == rows
    parquet_path = tmp_path / "a.parquet"
    pd.read_csv(csv_path).to_parquet(parquet_path)
    assert count_hint([parquet_path]) == rows
    assert count_hint([folder, csv_path, parquet_path]) == 3 * rows
    # a last line without a line end counts; a header alone is no row
    unterminated = tmp_path / "b.csv"
    unterminated.write_bytes(b"image,text\r\na.png,A\r\nb.png,B")
    assert count_hint([unterminated]) == 2
    (tmp_path / "empty.csv").write_text("image,text\n")
    assert count_hint([tmp_path / "empty.csv"]) == 0
    # formats whose count is not cheap, and what cannot be read: no hint
    (tmp_path / "coco.json").write_text('{"images": [], "annotations": []}')
    assert count_hint([csv_path, tmp_path / "coco.json"]) is None
    assert count_hint([tmp_path / "missing.csv"]) is None
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    assert count_hint([tmp_path / "bad.parquet"]) is None

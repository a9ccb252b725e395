"""Bad input that used to go through silently, wrongly or without a trace (issue 10): a manifest
without its image or text column, long captions, structs as captions, errors that cannot be
traced back to their row, duplicate rows, WebDataset labels. Readers and `run_ingest` are called
in this process, with a stand-in backbone and store."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from jointspace.corpus.item import Item, Skipped
from jointspace.corpus.readers import read_corpus
from jointspace.corpus.remote import fetch_remote_images
from jointspace.errors import JointspaceError
from jointspace.ingest.run import run_ingest
from jointspace.pipeline.checkpoint import ModelCard
from jointspace.pipeline.features import FeatureCache
from jointspace.pipeline.model import EncoderConfig, GatedEncoder
from jointspace.store.edge import EdgeStore

CAP = 65536  # bytes a caption is cut to
TRUNCATED = "caption truncated to 65536 bytes"
MANIFESTS = [".csv", ".tsv", ".jsonl", ".parquet"]


def _png(color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(out, "PNG")
    return out.getvalue()


def _write_manifest(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path, index=False)
    else:
        pd.DataFrame(rows).to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _by_key(records: Any) -> dict[str, Item | Skipped]:
    return {r.key: r for r in records}


# --- 1. a manifest without its image (or text) column -------------------------------------------


@pytest.mark.parametrize("suffix", MANIFESTS)
def test_manifest_without_image_column_is_a_bad_run(tmp_path: Path, suffix: str) -> None:
    rows = [{"id": "1", "text": "A red square.", "photo": "a.png"}]
    path = _write_manifest(tmp_path / f"m{suffix}", rows)
    with pytest.raises(JointspaceError) as e:
        read_corpus(path)
    message = str(e.value)
    assert "no image column 'image'" in message, message
    assert "(columns: id, text, photo)" in message and "--text-only" in message
    [item] = read_corpus(path, text_only=True)
    assert isinstance(item, Item) and item.text == "A red square." and item.image is None
    assert item.extra == {"photo": "a.png"}


@pytest.mark.parametrize("suffix", MANIFESTS)
def test_manifest_without_text_column_is_a_bad_run(tmp_path: Path, suffix: str) -> None:
    rows = [{"id": "1", "image": "/abs/a.png", "caption": "A red square."}]
    path = _write_manifest(tmp_path / f"m{suffix}", rows)
    with pytest.raises(JointspaceError) as e:
        read_corpus(path)
    message = str(e.value)
    assert "no text column 'text'" in message, message
    assert "(columns: id, image, caption)" in message and "--image-only" in message
    [item] = read_corpus(path, image_only=True)
    assert isinstance(item, Item) and item.image == "/abs/a.png" and item.text is None


def test_text_only_and_image_only_options(tmp_path: Path) -> None:
    path = _write_manifest(tmp_path / "m.csv", [{"image": "/abs/a.png", "text": "A."}])
    [texts] = read_corpus(path, text_only=True)
    assert isinstance(texts, Item) and (texts.image, texts.text) == (None, "A.")
    assert texts.extra == {}  # the ignored column is not payload either
    [images] = read_corpus(path, image_only=True)
    assert isinstance(images, Item) and (images.image, images.text) == ("/abs/a.png", None)
    with pytest.raises(JointspaceError, match="exclude each other"):
        read_corpus(path, text_only=True, image_only=True)
    no_text = _write_manifest(tmp_path / "i.csv", [{"image": "/abs/a.png"}])
    with pytest.raises(JointspaceError, match=r"no text column 'text' \(columns: image\)"):
        read_corpus(no_text, text_only=True)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(JointspaceError, match="takes no --text-only option"):
        read_corpus(folder, text_only=True)
    assert list(read_corpus(folder, text_only=False, image_only=None)) == []  # switches left off


# --- 2. long captions are cut, flagged and counted ----------------------------------------------


def test_folder_long_caption_is_cut_and_flagged(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    # One ASCII byte, then two-byte characters: the cut at 65536 bytes splits one of them.
    long = "x" + "é" * 600_000
    for name, caption in (("long", long), ("exact", "y" * CAP), ("short", "A dog.")):
        (root / f"{name}.png").write_bytes(_png())
        (root / f"{name}.txt").write_text(caption + "\nfr.utf8=...\n", encoding="utf-8")
    records = _by_key(read_corpus(root))
    item = records["long.png"]
    assert isinstance(item, Item), item  # not "caption is not valid utf-8"
    assert item.truncated and item.text == long[: CAP // 2]  # the split character is dropped
    assert len(item.text.encode()) == CAP - 1
    assert records["exact.png"].text == "y" * CAP  # type: ignore[union-attr]
    assert not records["exact.png"].truncated  # type: ignore[union-attr]
    assert not records["short.png"].truncated  # type: ignore[union-attr]


@pytest.mark.parametrize("suffix", MANIFESTS)
def test_manifest_long_caption_is_cut_and_flagged(tmp_path: Path, suffix: str) -> None:
    rows = [{"id": "long", "image": "/a.png", "text": "w" * 1_000_000}]
    rows.append({"id": "short", "image": "/b.png", "text": "A dog."})
    records = _by_key(read_corpus(_write_manifest(tmp_path / f"m{suffix}", rows)))
    long, short = records["long"], records["short"]
    assert isinstance(long, Item) and long.truncated and long.text == "w" * CAP
    assert isinstance(short, Item) and not short.truncated and short.text == "A dog."


def test_webdataset_and_coco_long_captions_are_cut(tmp_path: Path) -> None:
    shard = _tar(tmp_path / "s.tar", [("0.png", _png()), ("0.txt", b"v" * 200_000)])
    [sample] = read_corpus(shard)
    assert isinstance(sample, Item) and sample.truncated and sample.text == "v" * CAP
    (tmp_path / "a.jpg").write_bytes(_png())
    coco = tmp_path / "captions.json"
    coco.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg"}],
                "annotations": [{"id": 7, "image_id": 1, "caption": "c" * 100_000}],
            }
        )
    )
    [item] = read_corpus(coco, format="coco")
    assert isinstance(item, Item) and item.truncated and item.text == "c" * CAP


# --- 3. a struct or a list in the text column ---------------------------------------------------


def test_struct_in_parquet_text_column_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    texts = [{"en": "A cat.", "fr": "Un chat."}, {"en": "A dog.", "fr": "Un chien."}]
    table = pa.table({"id": ["1", "2"], "image": ["/a.png", "/b.png"], "text": texts})
    pq.write_table(table, path)
    records = list(read_corpus(path))
    assert [(r.key, r.reason) for r in records] == [  # type: ignore[union-attr]
        ("1", "text column holds a struct, not a string"),
        ("2", "text column holds a struct, not a string"),
    ]
    lists = tmp_path / "l.parquet"
    pq.write_table(pa.table({"image": ["/a.png"], "text": [["A", "cat"]]}), lists)
    [record] = read_corpus(lists)
    assert isinstance(record, Skipped) and record.reason == "text column holds a list, not a string"


def test_struct_in_jsonl_text_column_is_skipped(tmp_path: Path) -> None:
    rows = [
        {"id": "1", "image": "/a.png", "text": "A cat."},
        {"id": "2", "image": "/b.png", "text": {"en": "A dog."}},
        {"id": "3", "image": "/c.png", "text": ["A", "bird"]},
    ]
    records = _by_key(read_corpus(_write_manifest(tmp_path / "m.jsonl", rows)))
    assert isinstance(records["1"], Item) and records["1"].text == "A cat."
    assert records["2"] == Skipped(
        str((tmp_path / "m.jsonl").resolve()), "2", "text column holds a struct, not a string"
    )
    assert records["3"].reason == "text column holds a list, not a string"  # type: ignore[union-attr]


# --- 4. every record says where it was read -----------------------------------------------------


def test_csv_and_tsv_locators_are_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(
        b"id,image,text\n"
        b"a,/a.png,First.\n"
        b"b,/b.png,Too,many,fields\n"  # dropped by the parser: row 2, line 3
        b",,\n"  # neither image nor text: row 3
        b"d,/d.png,Fourth.\n"
    )
    records = list(read_corpus(path))
    located = sorted((r.key, r.locator) for r in records)
    assert located == [("a", "row 1"), ("d", "row 4"), ("line 3", "line 3"), ("row 3", "row 3")]
    tsv = _write_manifest(tmp_path / "m.tsv", [{"image": "/a.png", "text": f"{n}."} for n in "12"])
    assert [r.locator for r in read_corpus(tsv)] == ["row 1", "row 2"]


def test_jsonl_and_parquet_locators(tmp_path: Path) -> None:
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(
        '{"id": "a", "image": "/a.png", "text": "A."}\n'
        "\n"  # a blank line still counts: locators are the file's line numbers
        "{broken\n"
        '{"id": "d", "image": "/d.png", "text": {"x": 1}}\n'
        '{"id": "e", "image": "/e.png", "text": "E."}\n'
    )
    assert [(r.key, r.locator) for r in read_corpus(jsonl)] == [
        ("a", "line 1"),
        ("line 3", "line 3"),
        ("d", "line 4"),
        ("e", "line 5"),
    ]
    rows = [{"image": f"/{n}.png", "text": None if n == 2 else f"{n}."} for n in range(3)]
    rows[2]["image"] = None
    parquet = _write_manifest(tmp_path / "m.parquet", rows)
    records = list(read_corpus(parquet))
    assert [r.locator for r in records] == ["row 1", "row 2", "row 3"]


def test_folder_webdataset_and_download_locators(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(_png())
    (root / "sub" / "b.png").write_bytes(_png())
    (root / "sub" / "b.txt").write_bytes(b"caf\xe9")  # latin-1
    a, b = read_corpus(root)
    assert isinstance(a, Item) and a.locator == str(root.resolve() / "sub" / "a.png")
    assert isinstance(b, Skipped) and b.locator == str(root.resolve() / "sub" / "b.txt")

    shard = _tar(
        tmp_path / "s.tar",
        [("x/0.txt", b"Zero."), ("x/0.jpg", _png()), ("1.txt", b"\xff"), ("2.json", b"[]")],
    )
    assert [(r.key, r.locator) for r in read_corpus(shard)] == [
        ("x/0", "member x/0.jpg"),
        ("1", "member 1.txt"),
        ("2", "member 2.json"),
    ]

    url = "ftp://example.com/a.png"
    [failed] = fetch_remote_images([Item("m.csv", "k", image=url, locator="row 9")])
    assert isinstance(failed, Skipped) and failed.locator == url


def test_coco_and_karpathy_locators_are_annotation_ids(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(_png())
    coco = tmp_path / "captions.json"
    coco.write_text(
        json.dumps(
            {
                "images": [
                    {"id": 1, "file_name": "a.jpg"},
                    {"id": 2, "file_name": "b.jpg"},
                    {"id": 3},
                ],
                "annotations": [
                    {"id": 10, "image_id": 1, "caption": "A."},
                    {"id": 11, "image_id": 1, "caption": "Also a."},
                    {"id": 12, "image_id": 99, "caption": "Orphan."},
                    {"id": 13, "image_id": 2},
                ],
            }
        )
    )
    located = [(r.key, r.locator) for r in read_corpus(coco, format="coco")]
    assert located == [
        ("a.jpg", "annotation id 10"),
        ("b.jpg", "image id 2"),  # no caption: the image entry
        ("images[2]", "image id 3"),
        ("annotations[3]", "annotation id 13"),
        ("image_id 99", "annotation id 12"),
    ]
    each = [r.locator for r in read_corpus(coco, format="coco", captions="each")][:2]
    assert each == ["annotation id 10", "annotation id 11"]
    joined = next(iter(read_corpus(coco, format="coco", captions="join")))
    assert joined.locator == "annotation id 10, annotation id 11"

    karpathy = tmp_path / "dataset_x.json"
    sentences = [{"raw": "C.", "sentid": 40}, {"raw": "Also c.", "sentid": 41}]
    entry = {"filename": "c.jpg", "imgid": 5, "split": "test", "sentences": sentences}
    karpathy.write_text(json.dumps({"images": [entry]}))
    records = list(read_corpus(karpathy, format="karpathy", captions="each"))
    assert [r.locator for r in records] == ["sentid 40", "sentid 41"]


# --- the ingest run: errors file, truncation count, duplicates ---------------------------------


class _Backbone:
    """Stands in for the real backbone: 4 numbers per image (its mean colour) and per text."""

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.tensor(np.asarray(image, dtype=np.float32).mean((0, 1)) / 255)

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        return np.pad(pixels.numpy(), ((0, 0), (0, 1)), constant_values=1.0)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return np.array([[len(t) % 7, t.count(" "), 1.0, 0.5] for t in texts], np.float32)


def _ingest(records: Any, store: EdgeStore, tmp_path: Path, errors: Path) -> Any:
    config = EncoderConfig(image_dim=4, text_dim=4, dim=8, hidden=8)
    torch.manual_seed(0)
    model = GatedEncoder(config)
    card = ModelCard("m1", str(tmp_path), {"spec": "stand-in", "fingerprint": "f"}, config, {})
    cache = FeatureCache(tmp_path / "cache.sqlite")
    try:
        return run_ingest(
            records, store, "c", model, card, _Backbone, cache, errors, batch_size=2, workers=0
        )
    finally:
        cache.close()


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    for color in ("red", "blue"):
        (tmp_path / "img" / f"{color}.png").write_bytes(_png(color))
    path = tmp_path / "m.csv"
    path.write_text(
        "image,text\n"
        "img/red.png,A red square.\n"  # row 1
        "img/missing.png,Not there.\n"  # row 2: skipped when its image is read
        "img/red.png,A red square.\n"  # row 3: row 1 again
        f"img/blue.png,{'b' * 100_000}\n"  # row 4: caption cut
        ",\n"  # row 5: neither image nor text
        "img/blue.png,A blue square.\n"  # row 6
        "img/red.png,A red square.\n",  # row 7: row 1 once more
        encoding="utf-8",
    )
    return path


def test_ingest_counts_duplicates_once(manifest: Path, tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "store")
    report = _ingest(read_corpus(manifest), store, tmp_path, tmp_path / "e1.jsonl")
    assert report.ingested == store.count("c") == 3  # distinct points written
    assert (report.duplicates, report.skipped) == (2, 2)
    # A re-run: what is stored is counted as such, the repeats still as duplicates.
    again = _ingest(read_corpus(manifest), store, tmp_path, tmp_path / "e2.jsonl")
    assert (again.ingested, again.already_stored, again.duplicates) == (0, 3, 2)
    assert store.count("c") == 3


def test_ingest_reports_truncated_captions(manifest: Path, tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "store")
    errors = tmp_path / "errors.jsonl"
    report = _ingest(read_corpus(manifest), store, tmp_path, errors)
    assert report.truncated == 1 and report.errors_file == str(errors)
    entries = [json.loads(line) for line in errors.read_text(encoding="utf-8").splitlines()]
    [cut] = [e for e in entries if e["reason"] == TRUNCATED]
    assert cut["locator"] == "row 4" and cut["ingested"] is True
    stored = [p.payload["text"] for p in store.scroll("c")]
    assert "b" * CAP in stored  # the cut caption is still ingested
    assert report.skipped_by_reason == {
        "image file not found": 1,
        "row has neither image nor text": 1,
    }  # the cut caption is no skip


def test_errors_file_points_back_to_the_row(manifest: Path, tmp_path: Path) -> None:
    errors = tmp_path / "errors.jsonl"
    _ingest(read_corpus(manifest), EdgeStore(tmp_path / "store"), tmp_path, errors)
    entries = [json.loads(line) for line in errors.read_text(encoding="utf-8").splitlines()]
    skipped = {e["locator"]: e for e in entries if e["reason"] != TRUNCATED}
    assert set(skipped) == {"row 2", "row 5"}
    assert skipped["row 2"]["reason"].startswith("image file not found")
    assert skipped["row 5"]["reason"] == "row has neither image nor text"
    for entry in entries:
        assert entry["source"] == str(manifest.resolve())
        assert set(entry) == {"source", "key", "locator", "reason", "ingested"}


def test_only_truncation_still_writes_the_errors_file(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.png").write_bytes(_png())
    (root / "a.txt").write_text("z" * 70_000, encoding="utf-8")
    errors = tmp_path / "errors.jsonl"
    report = _ingest(read_corpus(root), EdgeStore(tmp_path / "store"), tmp_path, errors)
    assert (report.ingested, report.skipped, report.truncated) == (1, 0, 1)
    assert report.errors_file == str(errors)
    [entry] = [json.loads(line) for line in errors.read_text(encoding="utf-8").splitlines()]
    assert entry["locator"] == str(root.resolve() / "a.png") and entry["reason"] == TRUNCATED


# --- 6. WebDataset labels -----------------------------------------------------------------------


def test_webdataset_json_label_becomes_labels(tmp_path: Path) -> None:
    shard = _tar(
        tmp_path / "s.tar",
        [
            ("0.png", _png()),
            ("0.json", json.dumps({"caption": "A cat.", "label": "cat", "k": 1}).encode()),
            ("1.png", _png()),
            ("1.json", json.dumps({"caption": "Pets.", "labels": ["cat", "dog"]}).encode()),
            ("2.png", _png()),
            ("2.json", json.dumps({"caption": "Class 3.", "label": 3}).encode()),
            ("3.png", _png()),
            ("3.json", json.dumps({"caption": "Both.", "label": "a|b", "labels": ["b"]}).encode()),
        ],
    )
    records = _by_key(read_corpus(shard))
    assert records["0"].labels == ("cat",)  # type: ignore[union-attr]
    assert records["0"].extra == {"k": 1, "image_member": "0.png"}  # type: ignore[union-attr]
    assert records["1"].labels == ("cat", "dog")  # type: ignore[union-attr]
    assert records["2"].labels == ("3",)  # type: ignore[union-attr]
    assert records["3"].labels == ("a", "b")  # type: ignore[union-attr]

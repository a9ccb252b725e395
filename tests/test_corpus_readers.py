"""Corpus readers: folders with captions, manifests in four formats, format detection."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from jointspace.corpus.images import decode_image, read_image_bytes
from jointspace.corpus.item import Item, Skipped
from jointspace.corpus.readers import READERS, detect_format, read_corpus
from jointspace.errors import BadItem, JointspaceError

STAMPS = Path("/usr/share/tuxpaint/stamps")


def _items(records: object) -> list[Item]:
    return [r for r in records if isinstance(r, Item)]  # type: ignore[attr-defined]


def _skipped(records: object) -> list[Skipped]:
    return [r for r in records if isinstance(r, Skipped)]  # type: ignore[attr-defined]


# --- folder -----------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "stamps"
    (root / "animals" / "birds").mkdir(parents=True)
    (root / "food").mkdir()
    (root / ".thumbnails").mkdir()
    Image.new("RGB", (4, 4), "red").save(root / "animals" / "birds" / "penguin.png")
    (root / "animals" / "birds" / "penguin.txt").write_text("  A penguin. \nfr.utf8=Un manchot\n")
    Image.new("RGB", (4, 4)).save(root / "animals" / "birds" / "Owl.JPG")
    (root / "animals" / "birds" / "Owl.TXT").write_text("An owl.")
    Image.new("RGB", (4, 4)).save(root / "animals" / "cat.webp")  # no caption
    (root / "animals" / "dog.bmp").write_bytes(b"")  # a bad image is still an item here
    (root / "animals" / "dog.txt").write_text("\nsecond line only\n")  # empty first line
    Image.new("RGB", (4, 4)).save(root / "food" / "apple.gif")
    (root / "food" / "apple.txt").write_bytes(b"\xef\xbb\xbfAn apple.\n")  # BOM
    Image.new("RGB", (4, 4)).save(root / "food" / "pear.png")
    (root / "food" / "pear.txt").write_bytes(b"A p\xe9ar.\n")  # latin-1, not utf-8
    (root / "food" / "notes.md").write_text("not an image")
    (root / "food" / "leaf.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    Image.new("RGB", (4, 4)).save(root / "top.png")
    Image.new("RGB", (4, 4)).save(root / ".thumbnails" / "hidden.png")
    return root


def test_folder_items(folder: Path) -> None:
    records = list(read_corpus(folder))
    by_key = {r.key: r for r in records}
    assert list(by_key) == [
        "top.png",
        "animals/cat.webp",
        "animals/dog.bmp",
        "animals/birds/Owl.JPG",
        "animals/birds/penguin.png",
        "food/apple.gif",
        "food/leaf.svg",
        "food/pear.png",
    ]
    penguin = by_key["animals/birds/penguin.png"]
    assert isinstance(penguin, Item)
    assert penguin.source == str(folder.resolve())
    assert penguin.image == str(folder.resolve() / "animals/birds/penguin.png")
    assert penguin.text == "A penguin."
    assert penguin.labels == ("animals", "animals/birds")
    assert penguin.extra == {"name": "penguin"}
    assert by_key["animals/birds/Owl.JPG"].text == "An owl."  # type: ignore[union-attr]
    assert by_key["animals/cat.webp"].text is None  # type: ignore[union-attr]
    assert by_key["animals/cat.webp"].labels == ("animals",)  # type: ignore[union-attr]
    assert by_key["animals/dog.bmp"].text is None  # type: ignore[union-attr]
    assert by_key["food/apple.gif"].text == "An apple."  # type: ignore[union-attr]
    assert by_key["top.png"].labels == ()  # type: ignore[union-attr]
    assert by_key["food/pear.png"] == Skipped(
        str(folder.resolve()), "food/pear.png", "caption is not valid utf-8"
    )


def test_a_mirror_stamp_takes_the_original_caption_and_split(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "penguin.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "penguin_mirror.png")
    (tmp_path / "penguin.txt").write_text("A Magellanic penguin.\n")
    original, mirror = list(read_corpus(tmp_path))
    assert mirror.key == "penguin_mirror.png" and mirror.text == "A Magellanic penguin."
    assert mirror.split_key == original.split_key and mirror.group == original.group


def test_folder_order_is_deterministic(folder: Path) -> None:
    assert list(read_corpus(folder)) == list(read_corpus(folder, format="folder"))


def test_folder_is_lazy(folder: Path) -> None:
    records = read_corpus(folder)
    assert not isinstance(records, list)
    assert isinstance(next(iter(records)), Item)


def test_folder_format_on_a_file(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("image,text\n")
    with pytest.raises(JointspaceError, match="not a folder"):
        read_corpus(path, format="folder")


def test_folder_takes_no_column_options(folder: Path) -> None:
    with pytest.raises(JointspaceError, match="--image-column"):
        read_corpus(folder, image_column="path")
    # None means "not given", so a CLI can pass every flag through.
    assert list(read_corpus(folder, image_column=None))


# --- format detection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("m.csv", "csv"),
        ("m.TSV", "tsv"),
        ("m.jsonl", "jsonl"),
        ("m.ndjson", "jsonl"),
        ("m.parquet", "parquet"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, fmt: str) -> None:
    assert detect_format(tmp_path / name) == fmt


def test_detect_folder_and_unknown(tmp_path: Path) -> None:
    assert detect_format(tmp_path) == "folder"
    choices = r"folder\|csv\|tsv\|jsonl\|parquet\|coco\|karpathy\|webdataset"
    with pytest.raises(JointspaceError, match=rf"pass --format {choices}"):
        detect_format(tmp_path / "m.xlsx")


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(JointspaceError, match="No such file or folder: "):
        read_corpus(tmp_path / "nope.csv")


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(JointspaceError, match="Unknown format 'xlsx'"):
        read_corpus(tmp_path, format="xlsx")


def test_registry_has_every_format() -> None:
    assert set(READERS) == {
        "folder",
        "csv",
        "tsv",
        "jsonl",
        "parquet",
        "coco",
        "karpathy",
        "webdataset",
    }


def test_brace_pattern_is_a_source_only_for_webdataset(tmp_path: Path) -> None:
    pattern = tmp_path / "{0..1}.tar"
    assert detect_format(pattern) == "webdataset"
    with pytest.raises(JointspaceError, match="No file matches the shard pattern"):
        read_corpus(pattern)
    with pytest.raises(JointspaceError, match="No such file or folder"):
        read_corpus(pattern, format="folder")
    with pytest.raises(JointspaceError, match="No such file or folder"):
        read_corpus(tmp_path / "{x}.tar")  # no range nor list: a plain (missing) name


# --- manifests --------------------------------------------------------------------------------

ROWS = [
    {"id": "007", "image": "img/a.png", "text": " A red square. ", "label": "shapes|red",
     "width": 4, "score": 0.5, "ok": True, "note": "first"},
    {"id": "008", "image": "https://example.com/b.jpg", "text": "NA", "label": "photos",
     "width": 8, "score": None, "ok": False, "note": None},
    {"id": "009", "image": None, "text": "Only words.", "label": None,
     "width": 1, "score": 1.5, "ok": True, "note": "x"},
    {"id": "010", "image": None, "text": "   ", "label": "empty",
     "width": 2, "score": 2.0, "ok": False, "note": "y"},
]  # fmt: skip


def _write_manifest(path: Path, rows: list[dict[str, object]]) -> Path:
    df = pd.DataFrame(rows)
    suffix = path.suffix
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        df.to_parquet(path, index=False)
    return path


@pytest.fixture(params=["csv", "tsv", "jsonl", "parquet"])
def manifest(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    (tmp_path / "data" / "img").mkdir(parents=True)
    Image.new("RGB", (4, 4), "red").save(tmp_path / "data" / "img" / "a.png")
    return _write_manifest(tmp_path / "data" / f"manifest.{request.param}", ROWS)


def test_manifest_rows(manifest: Path) -> None:
    records = list(read_corpus(manifest))
    source = str(manifest.resolve())
    assert [r.key for r in records] == ["007", "008", "009", "010"]
    first, second, third, fourth = records
    assert first == Item(
        source=source,
        key="007",
        image=str(manifest.resolve().parent / "img" / "a.png"),
        text="A red square.",
        labels=("shapes", "red"),
        extra={"width": 4, "score": 0.5, "ok": True, "note": "first"},
    )
    assert isinstance(second, Item)
    assert second.image == "https://example.com/b.jpg"
    assert second.text == "NA"  # a caption, not a missing value
    assert second.extra == {"width": 8, "score": None, "ok": False, "note": None}
    assert isinstance(third, Item) and third.image is None and third.labels == ()
    assert fourth == Skipped(source, "010", "row has neither image nor text")
    # Extra values are plain JSON types (no numpy scalars).
    for record in records[:3]:
        assert json.loads(json.dumps(record.extra)) == record.extra  # type: ignore[union-attr]
        assert {type(v) for v in record.extra.values()} <= {int, float, bool, str, type(None)}  # type: ignore[union-attr]
    # The relative path resolves to a readable image.
    assert decode_image(read_image_bytes(first), first.image or "").size == (4, 4)  # type: ignore[arg-type]


def test_manifest_renamed_columns(tmp_path: Path) -> None:
    rows = [{"uid": 1, "path": "a.png", "caption": "A.", "category": "x|y", "other": 3}]
    path = _write_manifest(tmp_path / "m.jsonl", rows)
    options = {"image_column": "path", "text_column": "caption", "label_column": "category"}
    [item] = read_corpus(path, key_column="uid", **options)
    assert isinstance(item, Item)
    assert (item.key, item.text, item.labels) == ("1", "A.", ("x", "y"))
    assert item.image == str(tmp_path.resolve() / "a.png")
    assert item.extra == {"other": 3}


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_manifest_missing_columns(tmp_path: Path, suffix: str) -> None:
    path = _write_manifest(tmp_path / f"m{suffix}", [{"file": "a.png", "caption": "A."}])
    with pytest.raises(JointspaceError) as e:
        read_corpus(path)
    message = str(e.value)
    assert "'image'" in message and "'text'" in message and "file, caption" in message
    with pytest.raises(JointspaceError, match=r"no column 'path' \(columns: file, caption\)"):
        read_corpus(path, image_column="path")


def test_manifest_renamed_optional_column_missing(tmp_path: Path) -> None:
    path = _write_manifest(tmp_path / "m.csv", [{"image": "a.png", "text": "A."}])
    with pytest.raises(JointspaceError, match="no column 'category'.*--label"):
        read_corpus(path, label_column="category")
    with pytest.raises(JointspaceError, match="no column 'uid'"):
        read_corpus(path, key_column="uid")


def test_manifest_text_only_and_image_only(tmp_path: Path) -> None:
    texts = _write_manifest(tmp_path / "t.csv", [{"text": "Words."}])
    [text_only] = read_corpus(texts, text_only=True)
    assert isinstance(text_only, Item) and text_only.image is None
    images = _write_manifest(tmp_path / "i.csv", [{"image": "/abs/a.png"}])
    [image_only] = read_corpus(images, image_only=True)
    assert isinstance(image_only, Item) and image_only.image == "/abs/a.png"


def test_manifest_content_keys_are_stable_and_collapse(tmp_path: Path) -> None:
    rows = [{"image": "a.png", "text": "A."}, {"image": "b.png", "text": "B."}]
    keys = [r.key for r in read_corpus(_write_manifest(tmp_path / "m.csv", rows))]
    reordered = [r.key for r in read_corpus(_write_manifest(tmp_path / "r.csv", rows[::-1]))]
    assert keys == reordered[::-1] and len(set(keys)) == 2 and len(keys[0]) == 16
    twice = [r.key for r in read_corpus(_write_manifest(tmp_path / "d.csv", rows[:1] * 2))]
    assert twice == keys[:1] * 2  # duplicates get the same key: one point in the store


def test_manifest_empty_id_falls_back_to_content_key(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,image,text\n,a.png,A.\n5,b.png,B.\n")
    keys = [r.key for r in read_corpus(path)]
    assert len(keys[0]) == 16 and keys[1] == "5"


def test_manifest_label_list_in_jsonl(tmp_path: Path) -> None:
    path = _write_manifest(tmp_path / "m.jsonl", [{"text": "A.", "label": ["a", "b", "a"]}])
    [item] = read_corpus(path, text_only=True)
    assert item.labels == ("a", "b")  # type: ignore[union-attr]


def test_csv_bad_rows_are_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(
        b"id,image,text\n"
        b"1,a.png,Good.\n"
        b"2,b.png,Bad \xe9ncoding.\n"
        b"3,c.png,Too,many,fields\n"
        b"4,,\n"
        b"5,e.png,Also good.\n"
    )
    records = list(read_corpus(path))
    assert [r.key for r in _items(records)] == ["1", "5"]
    reasons = {r.key: r.reason for r in _skipped(records)}
    assert reasons == {
        "2": "row is not valid utf-8",
        "line 4": "malformed row (expected 3 fields, saw 5)",
        "4": "row has neither image nor text",
    }


def test_jsonl_bad_lines_are_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        b'{"id": 1, "text": "Good."}\n'
        b"{not json\n"
        b"\n"
        b"[1, 2]\n"
        b'{"id": 5, "text": "Bad \xe9ncoding."}\n'
        b'{"id": 6, "text": "Also good.", "image": null}\n'
    )
    records = list(read_corpus(path))
    assert [r.key for r in _items(records)] == ["1", "6"]
    assert {r.key: r.reason for r in _skipped(records)} == {
        "line 2": "line is not valid json",
        "line 4": "line is not a json object",
        "line 5": "line is not valid utf-8",
    }


def test_empty_and_corrupt_manifests(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(JointspaceError, match="is empty"):
        read_corpus(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("image,text\n")
    assert list(read_corpus(header_only)) == []
    not_parquet = tmp_path / "m.parquet"
    not_parquet.write_text("image,text\n")
    with pytest.raises(JointspaceError, match="as Parquet"):
        read_corpus(not_parquet)
    with pytest.raises(JointspaceError, match="is not a file"):
        read_corpus(tmp_path, format="csv")


def test_inline_image_bytes_in_parquet(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    rows = [
        {"image": {"bytes": b"\x89PNG...", "path": "a.png"}, "text": "A."},
        {"image": {"bytes": None, "path": "b.png"}, "text": "B."},
    ]
    pd.DataFrame(rows).to_parquet(path, index=False)
    first, second = read_corpus(path)
    assert isinstance(first, Item) and first.image is None and first.image_bytes == b"\x89PNG..."
    assert first.extra == {"image_path": "a.png"}
    assert isinstance(second, Item) and second.image == str(tmp_path.resolve() / "b.png")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_manifest_streams_in_chunks(tmp_path: Path, suffix: str) -> None:
    n = 5003
    rows = [{"id": f"k{i}", "image": f"img/{i}.png", "text": f"caption {i}"} for i in range(n)]
    path = _write_manifest(tmp_path / f"big{suffix}", rows)
    records = read_corpus(path, chunksize=64)
    assert not isinstance(records, list)
    keys = [r.key for r in records]
    assert keys == [f"k{i}" for i in range(n)]


def test_manifest_is_lazy(tmp_path: Path) -> None:
    # Reading the first item of a long manifest must not read the whole file first.
    path = tmp_path / "long.csv"
    with path.open("w") as f:
        f.write("image,text\n")
        for i in range(300_000):
            f.write(f"img/{i}.png,caption number {i}\n")
    start = time.perf_counter()
    first = next(iter(read_corpus(path, chunksize=100)))
    assert isinstance(first, Item) and first.text == "caption number 0"
    assert time.perf_counter() - start < 1.0


# --- the real stamps corpus -------------------------------------------------------------------


@pytest.mark.skipif(not STAMPS.is_dir(), reason="tuxpaint-stamps-default is not installed")
def test_real_stamps() -> None:
    records = list(read_corpus(STAMPS))
    items = _items(records)
    assert len(items) >= 1000
    assert len(_skipped(records)) == 0
    assert len({i.key for i in items}) == len(items)
    assert any(i.text and "penguin" in i.text.lower() for i in items)
    penguin = next(i for i in items if i.key == "animals/birds/penguin.png")
    assert penguin.text == "A penguin."
    assert penguin.labels == ("animals", "animals/birds")
    assert sum(i.text is not None for i in items) >= 0.95 * len(items)
    assert Counter(i.labels[0] for i in items if i.labels)["animals"] > 50

    failures = {}
    svgs = [i for i in items if i.key.endswith(".svg")]
    assert len(svgs) > 200
    for item in svgs:
        try:
            image = decode_image(read_image_bytes(item), item.image or "")
            assert image.mode == "RGB" and max(image.size) == 512
        except BadItem as e:
            failures[item.key] = e.reason
    assert 0 < len(failures) <= 5, failures
    assert all(os.path.basename(k).endswith(".svg") for k in failures)


def test_folder_file_name_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    try:
        with open(os.path.join(os.fsencode(root), b"caf\xe9.png"), "wb") as f:
            Image.new("RGB", (2, 2)).save(f, "PNG")
    except OSError:
        pytest.skip("this file system refuses non-utf-8 names")
    [record] = read_corpus(root)
    assert record == Skipped(str(root.resolve()), "caf\\xe9.png", "file name is not valid utf-8")


def test_folder_unreadable_subfolder_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "corpus"
    (root / "locked").mkdir(parents=True)
    Image.new("RGB", (2, 2)).save(root / "a.png")
    Image.new("RGB", (2, 2)).save(root / "locked" / "b.png")
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # chmod 000 does not stop root, so fake the refusal
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    records = list(read_corpus(root))
    assert records[0].key == "a.png"
    assert records[1] == Skipped(
        str(root.resolve()), "locked", "folder could not be read (permission denied)"
    )
    assert len(records) == 2

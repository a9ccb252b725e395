"""Corpus formats: COCO captions, Karpathy splits, WebDataset shards, inline base64 images."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from jointspace.corpus import webdataset
from jointspace.corpus.images import decode_image, image_name, read_image_bytes
from jointspace.corpus.item import Item, Skipped
from jointspace.corpus.jsonhead import read_json_head
from jointspace.corpus.readers import detect_format, read_corpus
from jointspace.corpus.shards import expand_braces, is_brace_pattern
from jointspace.corpus.split import split_of
from jointspace.errors import JointspaceError


def _png(color: str = "red", size: tuple[int, int] = (4, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def _items(records: object) -> list[Item]:
    return [r for r in records if isinstance(r, Item)]  # type: ignore[attr-defined]


def _skipped(records: object) -> dict[str, str]:
    return {r.key: r.reason for r in records if isinstance(r, Skipped)}  # type: ignore[attr-defined]


def _write_json(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


# --- COCO -------------------------------------------------------------------------------------

COCO = {
    "info": {"description": "test"},
    "licenses": [],
    "images": [
        {"id": 1, "file_name": "a.jpg", "height": 4, "width": 4, "coco_url": "http://x/a.jpg"},
        {"id": 2, "file_name": "b.jpg", "height": 4, "width": 4},
        {"id": 3, "file_name": "c.jpg"},  # no captions
        {"id": 4},  # no file_name
        {"id": 5, "file_name": "a.jpg"},  # duplicate
    ],
    "annotations": [
        {"id": 10, "image_id": 1, "caption": " A red square. "},
        {"id": 11, "image_id": 2, "caption": "A blue square."},
        {"id": 12, "image_id": 1, "caption": "Something red."},
        {"id": 13, "image_id": 99, "caption": "An orphan."},
        {"id": 14, "image_id": 2, "caption": None},
        {"id": 15, "caption": "No image id."},
    ],
}


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """The usual layout: annotations/captions_val2017.json next to val2017/."""
    images = tmp_path / "coco" / "val2017"
    images.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (images / name).write_bytes(_png())
    return _write_json(tmp_path / "coco" / "annotations" / "captions_val2017.json", COCO)


def test_coco_first_caption(coco: Path) -> None:
    records = read_corpus(coco)
    assert not isinstance(records, list)
    records = list(records)
    images = (coco.parent.parent / "val2017").resolve()
    source = str(coco.resolve())
    a, b, c = _items(records)
    assert a == Item(
        source=source,
        key="a.jpg",
        image=str(images / "a.jpg"),
        text="A red square.",
        extra={"image_id": 1, "height": 4, "width": 4, "coco_url": "http://x/a.jpg"},
        group="a.jpg",
    )
    assert (b.key, b.text) == ("b.jpg", "A blue square.")
    assert (c.key, c.text) == ("c.jpg", None)  # an image without captions is image-only
    assert _skipped(records) == {
        "images[3]": "image entry has no file_name",
        "a.jpg": "duplicate file_name",
        "annotations[4]": "annotation has no caption",
        "annotations[5]": "annotation has no image_id",
        "image_id 99": "annotations refer to an unknown image (1 captions)",
    }
    assert decode_image(read_image_bytes(a), image_name(a)).size == (4, 4)


def test_coco_join_and_each(coco: Path) -> None:
    joined = _items(read_corpus(coco, captions="join"))
    assert joined[0].text == "A red square.\nSomething red."
    each = _items(read_corpus(coco, format="coco", captions="each"))
    assert [(i.key, i.text, i.group) for i in each] == [
        ("a.jpg#0", "A red square.", "a.jpg"),
        ("a.jpg#1", "Something red.", "a.jpg"),
        ("b.jpg#0", "A blue square.", "b.jpg"),
        ("c.jpg", None, "c.jpg"),
    ]
    assert each[1].extra["caption_index"] == 1
    # All captions of one image land in one split, whatever the split sizes.
    assert len({split_of(i.split_key, 40, 40) for i in each[:2]}) == 1
    assert len({i.point_id for i in each}) == 4


def test_coco_images_dir(coco: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "pictures"
    elsewhere.mkdir()
    first = next(iter(read_corpus(coco, images_dir=str(elsewhere))))
    assert isinstance(first, Item) and first.image == str(elsewhere.resolve() / "a.jpg")
    with pytest.raises(JointspaceError, match="--images-dir .* is not a folder"):
        read_corpus(coco, images_dir=str(tmp_path / "nope"))


def test_coco_images_next_to_json(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "captions.json", COCO)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "b.jpg").write_bytes(_png())
    first = _items(read_corpus(path))[0]
    assert first.image == str(tmp_path.resolve() / "images" / "a.jpg")


def test_coco_images_not_found(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "captions_train2014.json", COCO)
    with pytest.raises(JointspaceError, match=r"Cannot find the images .*a\.jpg.*--images-dir"):
        read_corpus(path)


def test_coco_bad_files_and_options(coco: Path, tmp_path: Path) -> None:
    with pytest.raises(JointspaceError, match=r"Unknown --captions 'all'; use first\|join\|each"):
        read_corpus(coco, captions="all")
    no_annotations = _write_json(tmp_path / "x.json", {"images": []})
    with pytest.raises(JointspaceError, match="not a COCO captions file"):
        read_corpus(no_annotations, format="coco")
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(JointspaceError, match="as JSON"):
        read_corpus(broken, format="coco")
    with pytest.raises(JointspaceError, match="takes no --split"):
        read_corpus(coco, split="train")


def test_coco_detected_when_annotations_are_past_the_head(tmp_path: Path) -> None:
    # Real caption files list all images before the annotations: far past the bytes detection
    # reads. The first image's "file_name" tells it is COCO.
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 480} for i in range(25_000)]
    document = {"info": {}, "images": images, "annotations": [{"image_id": 0, "caption": "x"}]}
    path = _write_json(tmp_path / "captions_train2017.json", document)
    assert path.stat().st_size > 1024 * 1024
    head = read_json_head(path)
    assert head is not None and "annotations" not in head.keys and not head.complete
    assert detect_format(path) == "coco"


# --- Karpathy ---------------------------------------------------------------------------------

KARPATHY = {
    "dataset": "coco",
    "images": [
        {
            "filepath": "val2014",
            "filename": "COCO_val2014_1.jpg",
            "imgid": 0,
            "split": "test",
            "cocoid": 1,
            "sentids": [0, 1],
            "sentences": [
                {"raw": "A cat on a mat.", "tokens": ["a", "cat"], "sentid": 0},
                {"tokens": ["a", "cat", "sleeping"], "sentid": 1},
            ],
        },
        {
            "filepath": "train2014",
            "filename": "COCO_train2014_2.jpg",
            "imgid": 1,
            "split": "train",
            "cocoid": 2,
            "sentences": [{"raw": "A dog."}],
        },
        {
            "filepath": "val2014",
            "filename": "COCO_val2014_3.jpg",
            "imgid": 2,
            "split": "restval",
            "sentences": [],
        },
        {"imgid": 3, "split": "train", "sentences": [{"raw": "No file."}]},
        "not an entry",
    ],
}


@pytest.fixture
def karpathy(tmp_path: Path) -> Path:
    for relative in (
        "val2014/COCO_val2014_1.jpg",
        "train2014/COCO_train2014_2.jpg",
        "val2014/COCO_val2014_3.jpg",
    ):
        (tmp_path / "images" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / relative).write_bytes(_png())
    return _write_json(tmp_path / "dataset_coco.json", KARPATHY)


def test_karpathy_all(karpathy: Path) -> None:
    assert detect_format(karpathy) == "karpathy"
    records = list(read_corpus(karpathy))
    first, second, third = _items(records)
    images = karpathy.parent.resolve() / "images"
    assert first == Item(
        source=str(karpathy.resolve()),
        key="val2014/COCO_val2014_1.jpg",
        image=str(images / "val2014" / "COCO_val2014_1.jpg"),
        text="A cat on a mat.",
        extra={"imgid": 0, "cocoid": 1, "karpathy_split": "test"},
        group="val2014/COCO_val2014_1.jpg",
    )
    assert second.extra["karpathy_split"] == "train" and second.text == "A dog."
    assert third.text is None and third.extra["karpathy_split"] == "restval"
    assert _skipped(records) == {
        "images[3]": "image entry has no filename",
        "images[4]": "image entry is not an object",
    }


def test_karpathy_split_and_captions(karpathy: Path) -> None:
    records = list(read_corpus(karpathy, split="test", captions="each"))
    test = _items(records)
    assert _skipped(records) == {"images[4]": "image entry is not an object"}  # split unknown
    assert [(r.key, r.text) for r in test] == [
        ("val2014/COCO_val2014_1.jpg#0", "A cat on a mat."),
        ("val2014/COCO_val2014_1.jpg#1", "a cat sleeping"),  # tokens when there is no raw
    ]
    assert {r.group for r in test} == {"val2014/COCO_val2014_1.jpg"}
    [joined] = _items(read_corpus(karpathy, split="test", captions="join"))
    assert joined.text == "A cat on a mat.\na cat sleeping"
    restval = _items(read_corpus(karpathy, split="restval"))
    assert [r.key for r in restval] == ["val2014/COCO_val2014_3.jpg"]
    with pytest.raises(JointspaceError, match=r"Unknown --split 'dev'"):
        read_corpus(karpathy, split="dev")


def test_karpathy_flickr_layout(tmp_path: Path) -> None:
    document = {
        "dataset": "flickr30k",
        "images": [
            {"filename": "1000.jpg", "split": "train", "sentences": [{"raw": "Two men."}]},
        ],
    }
    path = _write_json(tmp_path / "data" / "dataset_flickr30k.json", document)
    (tmp_path / "data" / "flickr30k-images").mkdir()
    (tmp_path / "data" / "flickr30k-images" / "1000.jpg").write_bytes(_png())
    [item] = read_corpus(path)
    assert isinstance(item, Item) and item.key == "1000.jpg"
    assert item.image == str(tmp_path.resolve() / "data" / "flickr30k-images" / "1000.jpg")


def test_json_that_is_neither(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "other.json", {"rows": [{"image": "a.png"}]})
    with pytest.raises(JointspaceError, match="Cannot tell the format of .*other.json"):
        read_corpus(path)
    array = tmp_path / "array.json"
    array.write_text("[1, 2]")
    with pytest.raises(JointspaceError, match="Cannot tell the format"):
        detect_format(array)


# --- WebDataset -------------------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _shard_members(prefix: str, n: int) -> list[tuple[str, bytes]]:
    members = []
    for i in range(n):
        members += [(f"{prefix}{i:03d}.png", _png()), (f"{prefix}{i:03d}.txt", f"cap {i}".encode())]
    return members


def test_webdataset_samples(tmp_path: Path) -> None:
    meta = {"caption": " From json. ", "url": "http://x/1.jpg", "width": 4}
    shard = _tar(
        tmp_path / "shard.tar",
        [
            ("000.jpg", _png("blue")),
            ("000.txt", b"A blue square.\n"),
            ("001.png", _png()),
            ("001.json", json.dumps(meta).encode()),
            ("dir/002.txt", "Только текст.".encode()),
            ("003.json", b'{"text": "", "other": 1}'),
            ("004.cls", b"7"),
            ("005.webp", b""),  # empty: an item here, a bad image when decoded
            ("006.jpg", _png()),
            ("006.seg.png", _png()),  # another field, not a second image
            ("007.txt", b"Caption wins."),
            ("007.json", b'{"caption": "json caption", "text": "json text", "k": "v"}'),
            ("008.txt", b"caf\xe9"),
            ("009.jpg", _png()),
            ("009.json", b"{not json"),
            ("010.jpg", _png()),
            ("010.png", _png()),
            (".hidden.jpg", _png()),
            ("README", b"no dot"),
        ],
    )
    assert detect_format(shard) == "webdataset"
    records = list(read_corpus(shard))
    source = str(shard.resolve())
    by_key = {r.key: r for r in records}
    assert list(by_key) == [f"{i:03d}" if i != 2 else "dir/002" for i in range(11)]
    assert by_key["000"] == Item(
        source=source,
        key="000",
        text="A blue square.",
        image_bytes=_png("blue"),
        extra={"image_member": "000.jpg"},
    )
    one = by_key["001"]
    assert isinstance(one, Item) and one.text == "From json." and one.image is None
    assert one.extra == {"url": "http://x/1.jpg", "width": 4, "image_member": "001.png"}
    assert decode_image(read_image_bytes(one), image_name(one)).size == (4, 4)
    two = by_key["dir/002"]
    assert isinstance(two, Item) and two.text == "Только текст." and two.image_bytes is None
    assert by_key["005"].image_bytes == b""  # type: ignore[union-attr]
    assert by_key["006"].extra == {"image_member": "006.jpg"}  # type: ignore[union-attr]
    assert by_key["007"].text == "Caption wins."  # type: ignore[union-attr]
    assert by_key["007"].extra == {"k": "v"}  # type: ignore[union-attr]
    assert _skipped(records) == {
        "003": "sample has neither image nor text",
        "004": "sample has neither image nor text",
        "008": "caption is not valid utf-8",
        "009": "sample json is not valid json",
        "010": "sample has more than one image (010.jpg, 010.png)",
    }


def test_webdataset_reads_a_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shard = _tar(tmp_path / "s.tar", _shard_members("", 3))
    modes = []
    real_open = tarfile.open

    def spy(*args: Any, **kwargs: Any) -> tarfile.TarFile:
        modes.append(kwargs.get("mode"))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(tarfile, "open", spy)
    records = read_corpus(shard)
    assert not isinstance(records, list) and modes == []  # nothing read until asked
    assert next(iter(records)).key == "000"
    assert modes == ["r|*"]


def test_webdataset_member_names_cannot_escape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    shard = _tar(
        work / "evil.tar",
        [
            ("../../x.jpg", _png()),
            ("../../x.txt", b"Escaped?"),
            ("/tmp/jointspace-abs-evil.jpg", _png()),
        ],
    )
    before = sorted(p for p in tmp_path.rglob("*"))
    records = list(read_corpus(shard))
    assert [r.key for r in records] == ["../../x", "/tmp/jointspace-abs-evil"]
    assert records[0].text == "Escaped?"  # type: ignore[union-attr]
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "a" / "x.jpg").exists()
    assert not Path("/tmp/jointspace-abs-evil.jpg").exists()


def test_webdataset_brace_pattern(tmp_path: Path) -> None:
    for n in range(3):
        _tar(tmp_path / "shards" / f"{n:05d}.tar", _shard_members(f"s{n}-", 2))
    pattern = tmp_path / "shards" / "{00000..00002}.tar"
    assert is_brace_pattern(pattern) and detect_format(pattern) == "webdataset"
    records = list(read_corpus(pattern))
    assert [r.key for r in records] == ["s0-000", "s0-001", "s1-000", "s1-001", "s2-000", "s2-001"]
    assert records[2].source == str((tmp_path / "shards" / "00001.tar").resolve())
    # The same shards named by their folder are the same points.
    assert list(read_corpus(tmp_path / "shards")) == records
    assert detect_format(tmp_path / "shards") == "webdataset"
    with pytest.raises(JointspaceError, match="No file matches the shard pattern"):
        read_corpus(tmp_path / "shards" / "{00005..00009}.tar")
    with pytest.raises(JointspaceError, match=r"2 of the 5 shards .* are missing"):
        read_corpus(tmp_path / "shards" / "{00000..00004}.tar", format="webdataset")
    with pytest.raises(JointspaceError, match="No such file or folder"):
        read_corpus(tmp_path / "shards" / "{00000..00002}.tar", format="csv")


def test_expand_braces() -> None:
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{8..10}") == ["8", "9", "10"]
    assert expand_braces("{08..10}") == ["08", "09", "10"]
    assert expand_braces("{2..0}") == ["2", "1", "0"]
    assert expand_braces("{a,b}-{1..2}.tar") == ["a-1.tar", "a-2.tar", "b-1.tar", "b-2.tar"]
    assert expand_braces("{x}.tar") == ["{x}.tar"] and not is_brace_pattern("{x}.tar")
    with pytest.raises(JointspaceError, match="narrow it"):
        expand_braces("{0..99999999}.tar")


def test_webdataset_folder_detection(tmp_path: Path) -> None:
    _tar(tmp_path / "mixed" / "backup.tar", [("a.txt", b"x")])
    (tmp_path / "mixed" / "photo.png").write_bytes(_png())
    assert detect_format(tmp_path / "mixed") == "folder"
    _tar(tmp_path / "nested" / "x.tar", [("a.txt", b"x")])
    (tmp_path / "nested" / "sub").mkdir()
    assert detect_format(tmp_path / "nested") == "folder"
    with pytest.raises(JointspaceError, match="holds no .tar shards"):
        read_corpus(tmp_path / "nested" / "sub", format="webdataset")
    for name in ("a.tgz", "a.tar.gz", "A.TAR"):
        assert detect_format(tmp_path / name) == "webdataset"


def test_webdataset_bad_shards_do_not_stop_the_run(tmp_path: Path) -> None:
    good = _tar(tmp_path / "shards" / "0.tar", _shard_members("a", 3))
    raw = good.read_bytes()
    (tmp_path / "shards" / "1.tar").write_bytes(raw[: 512 * 5 + 100])  # cut in a001.png
    (tmp_path / "shards" / "2.tar").write_bytes(b"this is not a tar file\n" * 40)
    _tar(tmp_path / "shards" / "3.tar.gz", _shard_members("gz", 1), mode="w:gz")
    records = list(read_corpus(tmp_path / "shards"))
    keys = [(Path(r.source).name, r.key) for r in records]
    assert keys == [
        ("0.tar", "a000"),
        ("0.tar", "a001"),
        ("0.tar", "a002"),
        ("1.tar", "a000"),
        ("1.tar", "a001"),
        ("2.tar", "2.tar"),
        ("3.tar.gz", "gz000"),
    ]
    assert isinstance(records[3], Item)
    assert isinstance(records[4], Skipped) and "cut short" in records[4].reason
    assert isinstance(records[5], Skipped) and records[5].reason.startswith("not a tar file")
    assert isinstance(records[6], Item) and records[6].text == "cap 0"


def test_webdataset_member_size_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webdataset, "MAX_TEXT_BYTES", 10)
    monkeypatch.setattr(webdataset, "MAX_IMAGE_BYTES", 100)
    shard = _tar(
        tmp_path / "s.tar",
        [("a.txt", b"x" * 11), ("b.png", b"y" * 101), ("c.txt", b"fine")],
    )
    records = list(read_corpus(shard))
    assert _skipped(records) == {
        "a": "txt file too large (11 bytes, limit 10)",
        "b": "image file too large (101 bytes, limit 100)",
    }
    assert records[2].text == "fine"  # type: ignore[union-attr]


# --- inline base64 images in manifests ----------------------------------------------------------


def _inline_rows() -> list[dict[str, Any]]:
    png = _png("green", (3, 2))
    encoded = base64.b64encode(png).decode()
    wrapped = "\n".join(encoded[i : i + 20] for i in range(0, len(encoded), 20))
    return [
        {"id": "uri", "image": f"data:image/png;base64,{encoded}", "text": "A."},
        {"id": "wrapped", "image": f"DATA:image/png;base64,{wrapped}", "text": "B."},
        {"id": "bad", "image": "data:image/png;base64,!!!not base64!!!", "text": "C."},
        {"id": "path", "image": "img/a.png", "text": "D."},
        {"id": "empty", "image": "data:image/png;base64,", "text": "E."},
    ]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pd.DataFrame(rows).to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_data_uri_images(tmp_path: Path, suffix: str) -> None:
    records = list(read_corpus(_write(tmp_path / f"m{suffix}", _inline_rows())))
    by_key = {r.key: r for r in records}
    for key in ("uri", "wrapped"):
        item = by_key[key]
        assert isinstance(item, Item) and item.image is None
        assert decode_image(read_image_bytes(item), image_name(item)).size == (3, 2)
    assert by_key["bad"] == Skipped(
        str((tmp_path / f"m{suffix}").resolve()), "bad", "image is not valid base64"
    )
    assert by_key["path"].image == str(tmp_path.resolve() / "img" / "a.png")  # type: ignore[union-attr]
    empty = by_key["empty"]
    assert isinstance(empty, Item) and empty.image is None and empty.image_bytes is None


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_base64_image_encoding_option(tmp_path: Path, suffix: str) -> None:
    png = _png("blue", (2, 5))
    rows = [
        {"id": "std", "image": base64.b64encode(png).decode(), "text": "A."},
        {
            "id": "urlsafe",
            "image": base64.urlsafe_b64encode(png).decode().rstrip("="),
            "text": "B.",
        },
        {"id": "uri", "image": "data:image/png;base64," + base64.b64encode(png).decode()},
        {"id": "bad", "image": "img/a.png", "text": "C."},
        {"id": "none", "image": None, "text": "D."},
    ]
    path = _write(tmp_path / f"m{suffix}", rows)
    records = list(read_corpus(path, image_encoding="base64"))
    for item in records[:3]:
        assert isinstance(item, Item) and item.image_bytes == png and item.image is None
    assert records[3] == Skipped(str(path.resolve()), "bad", "image is not valid base64")
    assert isinstance(records[4], Item) and records[4].image_bytes is None
    # Without the option, plain base64 text is a relative path like any other.
    assert next(iter(read_corpus(path))).image_bytes is None  # type: ignore[union-attr]
    with pytest.raises(JointspaceError, match="Unknown --image-encoding 'hex'"):
        read_corpus(path, image_encoding="hex")
    with pytest.raises(JointspaceError, match="takes no --image-encoding"):
        read_corpus(tmp_path, image_encoding="base64")


def test_data_uri_in_csv(tmp_path: Path) -> None:
    encoded = base64.b64encode(_png()).decode()
    path = tmp_path / "m.csv"
    path.write_text(f'image,text\n"data:image/png;base64,{encoded}",A.\n')
    [item] = read_corpus(path)
    assert isinstance(item, Item) and item.image_bytes == _png()
    assert os.path.basename(str(item.image)) != encoded

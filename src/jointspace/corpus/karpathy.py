"""Karpathy splits: `dataset_coco.json`, `dataset_flickr30k.json`, `dataset_flickr8k.json`.

`{"images": [{"filepath": "val2014", "filename": "a.jpg", "split": "test", "sentences":
[{"raw": "A cat.", "tokens": [...]}, ...], "imgid": 0, ...}]}` is one unit per image: key
"val2014/a.jpg" (the path below the images folder), the Karpathy split in
`extra["karpathy_split"]`, the entry's other scalar fields (imgid, cocoid) in `extra`. With
captions="each" it is one item per sentence, keys "<path>#0", "<path>#1", ..., all with group
"<path>" so they share a split.

The JSON file itself is loaded whole: it is metadata (about 150 MB for COCO); images are never
opened here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jointspace.corpus.captioned import (
    check_caption_mode,
    clean_caption,
    find_images_dir,
    image_items,
    load_json_object,
)
from jointspace.corpus.item import Item, Skipped
from jointspace.errors import JointspaceError

KARPATHY_SPLITS = ("train", "val", "test", "restval", "all")
# Where the images of the usual downloads unpack to, next to the JSON or one folder up.
_IMAGE_FOLDERS = ("", "images", "flickr30k-images", "Flicker8k_Dataset", "Flickr8k_Dataset")
_NOT_EXTRA = frozenset({"filename", "filepath", "split", "sentences", "sentids"})


def read_karpathy(
    path: Path,
    *,
    split: str = "all",
    images_dir: str | os.PathLike[str] | None = None,
    captions: str = "first",
) -> Iterator[Item | Skipped]:
    """Yield the items of a Karpathy split file, in file order, optionally of one split only.

    `split`: train, val, test, restval or all. `images_dir` defaults to the first of the JSON's
    folder, its `images/`, `flickr30k-images/`, `Flicker8k_Dataset/` and the same one folder up
    that holds one of the first images. `captions`: first, join (one per line) or each.
    Raises JointspaceError for a file that is not a Karpathy split file or a bad option.
    """
    path = Path(path)
    mode = check_caption_mode(captions)
    if split not in KARPATHY_SPLITS:
        raise JointspaceError(f"Unknown --split {split!r}; use {'|'.join(KARPATHY_SPLITS)}.")
    images = load_json_object(path, "Karpathy").get("images")
    if not isinstance(images, list) or not all(isinstance(e, dict) for e in images[:1]):
        raise JointspaceError(f'{path} is not a Karpathy split file (it needs an "images" list).')
    source = str(path.resolve())
    names = (n for e in images if _selected(e, split) and (n := _relative_path(e)) is not None)
    here = path.resolve().parent
    candidates = [base / f for base in (here, here.parent) for f in _IMAGE_FOLDERS]
    folder = find_images_dir(path, names, candidates, images_dir)
    return _records(source, images, split, folder, mode)


def _records(
    source: str, images: list[Any], split: str, folder: Path, mode: str
) -> Iterator[Item | Skipped]:
    for index, entry in enumerate(images):
        where = f"images[{index}]"
        if not isinstance(entry, dict):
            yield Skipped(source, where, "image entry is not an object", where)
            continue
        if not _selected(entry, split):
            continue
        image_locator = _locator("imgid", entry, where)
        name = _relative_path(entry)
        if name is None:
            yield Skipped(source, where, "image entry has no filename", image_locator)
            continue
        texts, locators = [], []
        for n, sentence in enumerate(_sentences(entry)):
            if (text := _sentence(sentence)) is not None:
                texts.append(text)
                locators.append(_locator("sentid", sentence, f"{where}.sentences[{n}]"))
        extra = {k: v for k, v in entry.items() if k not in _NOT_EXTRA and not isinstance(v, list)}
        extra["karpathy_split"] = entry.get("split")
        image = os.path.normpath(folder / name)
        yield from image_items(source, name, image, texts, mode, extra, locators, image_locator)


def _locator(id_field: str, entry: dict[str, Any], where: str) -> str:
    """The locator of a sentence or image: "sentid 12" / "imgid 3", else its place `where`."""
    value = entry.get(id_field)
    ok = isinstance(value, (int, str)) and not isinstance(value, bool)
    return f"{id_field} {value}" if ok else where


def _selected(entry: Any, split: str) -> bool:
    return isinstance(entry, dict) and (split == "all" or entry.get("split") == split)


def _relative_path(entry: dict[str, Any]) -> str | None:
    name, folder = entry.get("filename"), entry.get("filepath")
    if not isinstance(name, str) or not name.strip():
        return None
    if isinstance(folder, str) and folder.strip():
        return f"{folder.strip().rstrip('/')}/{name.strip()}"
    return name.strip()


def _sentences(entry: dict[str, Any]) -> list[Any]:
    sentences = entry.get("sentences")
    return sentences if isinstance(sentences, list) else []


def _sentence(sentence: Any) -> str | None:
    """The raw sentence, else its tokens joined by spaces."""
    if not isinstance(sentence, dict):
        return None
    raw = clean_caption(sentence.get("raw"))
    if raw is None and isinstance(sentence.get("tokens"), list):
        raw = clean_caption(" ".join(str(t) for t in sentence["tokens"]))
    return raw

"""COCO captions: `captions_*.json` ("images" + "annotations") and a folder of images.

`{"images": [{"id": 1, "file_name": "a.jpg", ...}], "annotations": [{"image_id": 1,
"caption": "A cat."}, ...]}` is one unit per image: key "a.jpg", the image's other fields in
`extra` (its "id" as "image_id"). With captions="each" it is one item per caption, keys
"a.jpg#0", "a.jpg#1", ..., all with group "a.jpg" so they share a split.

The JSON file itself is loaded whole: it is metadata (tens to hundreds of MB for all of COCO);
the annotations are grouped by image id in a dict of captions (each with its annotation id, for
the locator: "annotation id 10"). Images are never opened here.
"""

from __future__ import annotations

import os
import re
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

# captions_train2017.json -> the images are in train2017/
_COCO_SPLIT = re.compile(r"(train|val|test)(\d{4})", re.IGNORECASE)


def read_coco(
    path: Path,
    *,
    images_dir: str | os.PathLike[str] | None = None,
    captions: str = "first",
) -> Iterator[Item | Skipped]:
    """Yield the items of a COCO captions file, in the order of its "images" list.

    `images_dir` defaults to the first of: the JSON's folder, its `images/`, `<split>/`,
    `images/<split>/` (split from the file name, e.g. train2017), and the same below the parent
    folder — the first that holds one of the first images. `captions`: first, join (one per
    line) or each. Invalid image entries come as Skipped records in place; invalid annotations
    and annotations of unknown images as Skipped records after the items. Raises
    JointspaceError for a file that is not COCO captions.
    """
    path = Path(path)
    mode = check_caption_mode(captions)
    data = load_json_object(path, "COCO")
    images, annotations = data.get("images"), data.pop("annotations", None)
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise JointspaceError(
            f'{path} is not a COCO captions file (it needs "images" and "annotations" lists).'
        )
    source = str(path.resolve())
    by_image, bad = _group_captions(source, annotations)
    del annotations, data  # the grouped captions are all that is kept
    names = (n for e in images if isinstance(e, dict) and (n := _name(e)) is not None)
    folder = find_images_dir(path, names, _candidates(path), images_dir)
    return _records(source, images, by_image, bad, folder, mode)


# A caption and where it was read: the annotation's id (an int, shared with the parsed JSON, so
# it costs no memory) or, for an annotation without one, its locator as text.
_Caption = tuple[str, Any]


def _records(
    source: str,
    images: list[Any],
    by_image: dict[Any, list[_Caption]],
    bad: list[Skipped],
    folder: Path,
    mode: str,
) -> Iterator[Item | Skipped]:
    seen: set[str] = set()
    for index, entry in enumerate(images):
        name = _name(entry) if isinstance(entry, dict) else None
        where = f"images[{index}]"
        image_locator = _image_locator(entry, where)
        if name is None:
            yield Skipped(source, where, "image entry has no file_name", image_locator)
            continue
        image_id = entry.get("id")
        captions = by_image.pop(image_id, []) if _hashable(image_id) else []
        if name in seen:
            yield Skipped(source, name, "duplicate file_name", image_locator)
            continue
        seen.add(name)
        extra = {("image_id" if k == "id" else k): v for k, v in entry.items() if k != "file_name"}
        image = os.path.normpath(folder / name)
        texts = [text for text, _ in captions]
        locators = [_annotation_locator(ref) for _, ref in captions]
        yield from image_items(source, name, image, texts, mode, extra, locators, image_locator)
    yield from bad
    for image_id, captions in by_image.items():
        reason = f"annotations refer to an unknown image ({len(captions)} captions)"
        locator = ", ".join(_annotation_locator(ref) for _, ref in captions)
        yield Skipped(source, f"image_id {image_id}", reason, locator)


def _group_captions(
    source: str, annotations: list[Any]
) -> tuple[dict[Any, list[_Caption]], list[Skipped]]:
    """Captions by image id, in file order; bad annotations as Skipped records."""
    by_image: dict[Any, list[_Caption]] = {}
    bad: list[Skipped] = []
    for index, annotation in enumerate(annotations):
        where = f"annotations[{index}]"
        if not isinstance(annotation, dict):
            bad.append(Skipped(source, where, "annotation has no image_id", where))
            continue
        annotation_id = annotation.get("id")
        ref = annotation_id if _hashable(annotation_id) else where
        if not _hashable(annotation.get("image_id")):
            reason = "annotation has no image_id"
            bad.append(Skipped(source, where, reason, _annotation_locator(ref)))
            continue
        caption = clean_caption(annotation.get("caption"))
        if caption is None:
            reason = "annotation has no caption"
            bad.append(Skipped(source, where, reason, _annotation_locator(ref)))
            continue
        by_image.setdefault(annotation["image_id"], []).append((caption, ref))
    return by_image, bad


def _annotation_locator(ref: Any) -> str:
    """The locator of a caption: "annotation id 10", or `ref` itself when it is one already
    ("annotations[3]", for an annotation without an id)."""
    if isinstance(ref, str) and ref.startswith("annotations["):
        return ref
    return f"annotation id {ref}"


def _image_locator(entry: Any, where: str) -> str:
    """The locator of an image entry: "image id 3", else its place ("images[4]")."""
    image_id = entry.get("id") if isinstance(entry, dict) else None
    return f"image id {image_id}" if _hashable(image_id) else where


def _name(entry: dict[str, Any]) -> str | None:
    name = entry.get("file_name")
    return name.strip() or None if isinstance(name, str) else None


def _hashable(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _candidates(path: Path) -> list[Path]:
    here = path.resolve().parent
    match = _COCO_SPLIT.search(path.stem)
    folders = []
    for base in (here, here.parent):
        folders += [base, base / "images"]
        if match:
            folders += [base / match.group(0), base / "images" / match.group(0)]
    return folders

"""Deterministic train/validation/test assignment by content.

An item's split is drawn from a hash of its *content key* (`content_key`, `Item.split_key`):
what the item is, not how it was packaged. The same files read as a folder, as a CSV manifest
or as Parquet get the same split item for item, so a model trained on one packaging and
evaluated on another is never tested on what it was trained on. (Keys and reader groups are
no use for this: a folder's key is a relative path, a manifest's an id column or a hash of the
row's cells, and only some readers know that several files are renderings of one picture.)

The content key is, in this order:
- `group:` + the reader's group for one of several captions of one image (COCO and Karpathy
  read with captions="each", which mark the item with `caption_index`): an image's captions
  differ, and splitting them apart would hold out images the model was trained on.
- `text:` + the item's caption, normalised (Unicode NFC, casefolded, runs of whitespace made
  one space), when it has a non-empty caption that says what the item is. Items that say the
  same thing share a split: the PNG, SVG and mirrored renderings of one Tux Paint stamp share
  their caption, so no rendering of a training picture is held out, in a folder or a manifest
  alike; and a caption seen in training is never a held-out query.
- Not so an item marked `split_by: image` (`extra[SPLIT_BY] == BY_IMAGE`): its caption is
  boilerplate, which says nothing about *what* the drawing is, and would put whole blocks of
  unrelated drawings in one split. The folder reader marks an SVG captioned from its own
  metadata when its title is the creator's name ("Clipart by NAME"), a file-like string, or
  missing (the caption fell back to the file name), or when the title shares no word with the
  file's name: a series, collection or tool title put on many files (svgmeta.boilerplate_title).
  Keywords appended to the title do not save it: such series share their keywords too. In
  Debian's Open Clip Art (8,121 SVGs, default `title+keywords` captions) 4,791 items are
  marked; unmarked, "gramastar. stars, shapes, magick, geometry" keyed 1,375 different stars
  as one item and took 60% of the test split (and the test split 28% of the corpus); marked,
  the biggest content-key group is 54 items, the most common test caption holds 17% of the
  test split (its share of the corpus), and the test split is 21% of the corpus. (The caption
  kinds alone mark 1,034 items and miss "gramastar", whose creator is someone else: the test
  split stayed 57% one caption.) The rule looks at one item only, so the split stays
  computable item by item in a stream. The price: a boilerplate caption may be both a
  training caption and a held-out query, which says nothing either way. A manifest column
  `split_by` with the value `image` is honoured the same way.
- `sha256:` + the sha256 of the image bytes, for an item without text or marked `split_by:
  image`: inline bytes, or the image file (read only for such items, and only once per item).
  Byte-identical copies of a drawing still share a split.
- `url:` + the image URL for such a remote image (its bytes are not at hand before the
  download), else `key:` + the item key (an unreadable file: the item is skipped anyway).
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .item import Item

SPLITS = ("train", "val", "test")
# `extra[SPLIT_BY] == BY_IMAGE`: the item's caption must not decide its split (see above).
SPLIT_BY = "split_by"
BY_IMAGE = "image"
_REMOTE = ("http://", "https://")
_BLOCK = 1 << 20


def split_of(key: str, val_percent: int = 10, test_percent: int = 20) -> str:
    """`train`, `val` or `test`, from a hash of the key: stable across runs, machines and corpus
    order, so held-out items never leak into training."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big") % 100
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + val_percent:
        return "val"
    return "train"


def normalise_caption(text: str) -> str:
    """A caption as the content key sees it: NFC, casefolded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def content_key(item: Item) -> str:
    """What `item` is, for the split and the training digest (see the module docstring)."""
    if item.group and "caption_index" in item.extra:
        return f"group:{item.group}"
    by_image = item.extra.get(SPLIT_BY) == BY_IMAGE
    caption = normalise_caption(item.text) if item.text and not by_image else ""
    if caption:
        return f"text:{caption}"
    if item.image_bytes:
        return f"sha256:{hashlib.sha256(item.image_bytes).hexdigest()}"
    if item.image and item.image.lower().startswith(_REMOTE):
        return f"url:{item.image}"
    if item.image:
        digest = _file_sha256(item.image)
        if digest is not None:
            return f"sha256:{digest}"
    return f"key:{item.key}"


def _file_sha256(path: str) -> str | None:
    """The sha256 of a file's bytes, streamed; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as file:
            for block in iter(lambda: file.read(_BLOCK), b""):
                digest.update(block)
    except (OSError, ValueError):  # missing, unreadable, a folder, a NUL in the name
        return None
    return digest.hexdigest()

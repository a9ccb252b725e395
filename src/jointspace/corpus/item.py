"""The item: one image-text pair as read from a corpus, before any model sees it."""

from __future__ import annotations

import codecs
import hashlib
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

_POINT_NAMESPACE = uuid.UUID("5b0c5f2e-3c57-4f59-9a51-6a1f0d8f7c11")
# A caption is a sentence or a paragraph; past this it is cut (and the cut is reported), so a
# stray huge text costs neither the backbone nor the store's payload.
MAX_CAPTION_BYTES = 64 * 1024
TRUNCATED_REASON = f"caption truncated to {MAX_CAPTION_BYTES} bytes"


@dataclass(frozen=True)
class Item:
    """One image-text pair.

    `key` is unique within `source`; `image` is a local path or an http(s) URL (or None when the
    image is inline in `image_bytes`, or absent); `labels` are category labels used for filtering
    and label-based evaluation; `extra` holds every other field of the source, kept as payload.
    Items of one `group` (e.g. the PNG and SVG renderings of one picture) count as the same item
    in the paired evaluation; the split is drawn from content (`split_key`).
    `locator` says where in `source` the item was read (see `Skipped`); `truncated` that its
    text was cut to MAX_CAPTION_BYTES.
    """

    source: str
    key: str
    image: str | None = None
    text: str | None = None
    image_bytes: bytes | None = field(default=None, repr=False)
    labels: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    # Where the item was read is not what it is: two reads of one item compare equal.
    locator: str | None = field(default=None, compare=False)
    truncated: bool = False

    @property
    def point_id(self) -> str:
        """Deterministic point id (UUID5 of source and key): a re-run upserts, never duplicates."""
        return str(uuid.uuid5(_POINT_NAMESPACE, f"{self.source}\x00{self.key}"))

    @cached_property
    def split_key(self) -> str:
        """What the train/val/test split is drawn from: the item's content key (its normalised
        caption, else the sha256 of its image bytes, ...; see corpus/split.py), the same
        whatever format the item was read from. Computed once per item."""
        from .split import content_key

        return content_key(self)

    def skipped(self, reason: str) -> Skipped:
        """This item as a Skipped record with `reason`, pointing where the item was read."""
        return Skipped(self.source, self.key, reason, self.locator)


def text_hash(text: str) -> str:
    """Content hash of a text, the feature cache's key for text features."""
    return hashlib.sha256(b"text\x00" + text.encode("utf-8")).hexdigest()


def bytes_hash(data: bytes) -> str:
    """Content hash of an image file's bytes, the feature cache's key for image features."""
    return hashlib.sha256(data).hexdigest()


def limit_caption(text: str) -> tuple[str, bool]:
    """(`text`, False), or (its first MAX_CAPTION_BYTES bytes of UTF-8, whole characters only,
    right-stripped, True) when it is longer."""
    if len(text) * 4 <= MAX_CAPTION_BYTES:  # no character takes more than 4 bytes
        return text, False
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_CAPTION_BYTES:
        return text, False
    return cut_caption(data[:MAX_CAPTION_BYTES], "surrogatepass").rstrip(), True


def cut_caption(data: bytes, errors: str = "strict") -> str:
    """UTF-8 bytes that were cut at an arbitrary byte, decoded: a character the cut split in
    two is dropped. UnicodeDecodeError (with errors="strict") for bytes that are not UTF-8."""
    return codecs.getincrementaldecoder("utf-8")(errors).decode(data, final=False)


@dataclass(frozen=True)
class Skipped:
    """A record a reader could not turn into an item (e.g. an undecodable caption).

    `source` is the file read (the root folder for a folder corpus); `locator` is where in it
    the record sits, as the format knows it: "row 12" (CSV, TSV, Parquet; data rows from 1,
    header excluded), "line 7" (JSONL, and CSV lines the parser could not split), "member
    000123.jpg" (a WebDataset tar member), the image URL (a failed download), the file's path
    (a folder corpus), "annotation id 10" (COCO), "sentid 12" (Karpathy); None when unknown.
    """

    source: str
    key: str
    reason: str
    locator: str | None = field(default=None, compare=False)

"""The item: one image-text pair as read from a corpus, before any model sees it."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

_POINT_NAMESPACE = uuid.UUID("5b0c5f2e-3c57-4f59-9a51-6a1f0d8f7c11")


@dataclass(frozen=True)
class Item:
    """One image-text pair.

    `key` is unique within `source`; `image` is a local path or an http(s) URL (or None when the
    image is inline in `image_bytes`, or absent); `labels` are category labels used for filtering
    and label-based evaluation; `extra` holds every other field of the source, kept as payload.
    Items of one `group` (e.g. the PNG and SVG renderings of one picture) share a split.
    """

    source: str
    key: str
    image: str | None = None
    text: str | None = None
    image_bytes: bytes | None = field(default=None, repr=False)
    labels: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    group: str | None = None

    @property
    def point_id(self) -> str:
        """Deterministic point id (UUID5 of source and key): a re-run upserts, never duplicates."""
        return str(uuid.uuid5(_POINT_NAMESPACE, f"{self.source}\x00{self.key}"))

    @property
    def split_key(self) -> str:
        """What the train/val/test split is drawn from: the group, else the key."""
        return self.group or self.key


def text_hash(text: str) -> str:
    """Content hash of a text, the feature cache's key for text features."""
    return hashlib.sha256(b"text\x00" + text.encode("utf-8")).hexdigest()


def bytes_hash(data: bytes) -> str:
    """Content hash of an image file's bytes, the feature cache's key for image features."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Skipped:
    """A record a reader could not turn into an item (e.g. an undecodable caption)."""

    source: str
    key: str
    reason: str

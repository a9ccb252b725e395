"""Search results as users see them."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store.base import Hit as StoredHit


@dataclass(frozen=True)
class Hit:
    """One search result, best first: the point's id and score, its text, a resolvable reference
    to its image (a path, a URL, or `item:<id>` when the image was stored inline), its labels,
    source and whole payload, and `ref`: a short reference a person can follow to the item (its
    path in a folder corpus, else its source's name and where in it: "captions.csv row 12",
    "shard-000.tar member 000123.jpg")."""

    id: str
    score: float
    text: str | None
    image: str | None
    labels: list[str] = field(default_factory=list)
    source: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None

    @classmethod
    def from_stored(cls, hit: StoredHit) -> Hit:
        payload = dict(hit.payload)
        image = payload.get("image")
        if image is None and payload.get("sha256"):
            image = f"item:{hit.id}"  # inline bytes: the service resolves it by id
        return cls(
            id=hit.id,
            score=float(hit.score),
            text=payload.get("text"),
            image=image,
            labels=list(payload.get("labels") or []),
            source=payload.get("source"),
            payload=payload,
            ref=readable_ref(payload),
        )

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Hit:
        """From `to_dict()`'s form (e.g. a service's response); `ref` is computed from the
        payload when the document has none."""
        payload = dict(document.get("payload") or {})
        return cls(
            id=str(document["id"]),
            score=float(document["score"]),
            text=document.get("text"),
            image=document.get("image"),
            labels=list(document.get("labels") or []),
            source=document.get("source"),
            payload=payload,
            ref=document.get("ref") or readable_ref(payload),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`query --json`'s results entries)."""
        return {
            "id": self.id,
            "score": round(self.score, 6),
            "text": self.text,
            "image": self.image,
            "labels": self.labels,
            "source": self.source,
            "payload": self.payload,
            "ref": self.ref,
        }


def readable_ref(payload: Mapping[str, Any]) -> str | None:
    """A short human reference to a stored item, from its payload alone.

    - a file of a folder corpus: its path below the folder (`animals/birds/penguin.png`);
    - an item read from a file (manifest row, WebDataset member, COCO annotation, ...): the
      file's name and where in it (`captions.csv row 12`, `shard-000.tar member 000123.jpg`),
      from the `locator` ingest records (or a WebDataset's `image_member`);
    - else the image's path relative to the source's folder, its URL, or the source's name and
      the item's key."""
    source = _text(payload.get("source"))
    image = _text(payload.get("image"))
    key = _text(payload.get("key"))
    locator = _text(payload.get("locator"))
    local_image = image if image and "://" not in image else None
    if source and local_image and _is_below(local_image, source):
        return _relative(local_image, source)  # a folder corpus
    name = _basename(source) if source else None
    if locator and locator != image:
        return f"{name} {locator}" if name else locator
    member = _text(payload.get("image_member"))
    if member:
        return f"{name} member {member}" if name else f"member {member}"
    if source and local_image and _is_below(local_image, _dirname(source)):
        return _relative(local_image, _dirname(source))  # beside its manifest
    if image:
        return image
    if name and key:
        return f"{name} {key}"
    return key or name


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _normal(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/"))


def _is_below(path: str, folder: str) -> bool:
    folder = _normal(folder)
    return bool(folder) and folder != "." and _normal(path).startswith(folder.rstrip("/") + "/")


def _relative(path: str, folder: str) -> str:
    return posixpath.relpath(_normal(path), _normal(folder))


def _dirname(path: str) -> str:
    return posixpath.dirname(_normal(path))


def _basename(path: str) -> str:
    return posixpath.basename(_normal(path).rstrip("/")) or path

"""From encoded items and their vectors to stored points with payload."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..corpus.split import split_of
from ..pipeline.features import EncodedItem
from ..store.base import Point

RESERVED_FIELDS = (
    "key",
    "text",
    "image",
    "source",
    "locator",
    "labels",
    "split",
    "width",
    "height",
    "sha256",
)
KEYWORD_FIELDS = ("key", "source", "labels", "split")
# Numeric payload fields, by kind, indexed so that range filters work (create_collection's
# `fields`). Extra source columns are not: their types are unknown when the collection is made.
NUMERIC_FIELDS = {"width": "integer", "height": "integer"}


def payload_of(encoded: EncodedItem) -> dict[str, Any]:
    """The payload of a point: the text, the image's URI, source and where in it the item was
    read (`locator`), labels, split, image size and sha256, and every extra field of the source
    (renamed `extra_NAME` if it clashes)."""
    item = encoded.item
    payload: dict[str, Any] = {
        "key": item.key,
        "text": item.text,
        "image": item.image,
        "source": item.source,
        "locator": item.locator,  # where in the source: "row 12", "member 000123.jpg", ...
        "labels": list(item.labels),
        "split": split_of(item.split_key),
        "width": encoded.width,
        "height": encoded.height,
        "sha256": encoded.image_sha256,
    }
    for name, value in item.extra.items():
        payload[f"extra_{name}" if name in RESERVED_FIELDS else name] = value
    return payload


def build_points(encoded: list[EncodedItem], vectors: dict[str, np.ndarray]) -> list[Point]:
    """Points with named vectors; a missing modality's own vector is left out."""
    points = []
    for row, e in enumerate(encoded):
        named = {"unit": vectors["unit"][row].tolist()}
        if e.image_features is not None:
            named["image"] = vectors["image"][row].tolist()
        if e.text_features is not None:
            named["text"] = vectors["text"][row].tolist()
        points.append(Point(id=e.item.point_id, vectors=named, payload=payload_of(e)))
    return points


def extra_field_kinds(points: list[Point]) -> dict[str, str]:
    """The filterable kind of each extra (source) field in these points' payloads: keyword for
    text (or lists of text), integer, float or bool for numbers; a field whose values disagree
    (text here, a number there), or holds anything else, is left out."""
    kinds: dict[str, str | None] = {}
    for point in points:
        for key, value in point.payload.items():
            if key in RESERVED_FIELDS or value is None:
                continue
            kind = _kind_of(value)
            seen = kinds.setdefault(key, kind)
            if seen != kind:
                numbers = {seen, kind} == {"integer", "float"}
                kinds[key] = "float" if numbers else None
    return {key: kind for key, kind in kinds.items() if kind is not None}


def _kind_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str) or (
        isinstance(value, list) and value and all(isinstance(v, str) for v in value)
    ):
        return "keyword"
    return None

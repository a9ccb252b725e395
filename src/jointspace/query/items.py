"""A collection's stored items as a browser shows them: a point's own image, the common labels."""

from __future__ import annotations

import io
import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..corpus.images import MAX_IMAGE_BYTES, decode_image, is_svg, read_image_bytes
from ..corpus.item import Item, Skipped
from ..corpus.thumbnails import THUMBNAIL_SIZE, make_thumbnail, thumbnail_path
from ..errors import BadItem, InvalidQuery, NotFound
from ..store.base import Store

IMAGE_SIZES = ("thumb", "full")
# as ingest fetches images (IngestOptions.download_timeout)
FETCH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ItemImage:
    """A point's image as bytes: a JPEG thumbnail, or the original with its media type (an
    SVG rendered to PNG)."""

    data: bytes
    content_type: str


def point_image(
    store: Store, collection: str, point_id: str, size: str, thumbnails: Path
) -> ItemImage:
    """The image of point `point_id`, from its own payload only: its path or http(s) URL (read
    with the limits of ingest), or, for an image stored inline, the thumbnail ingest kept under
    `thumbnails`. `size` "thumb": a JPEG whose longest side is THUMBNAIL_SIZE; "full": the
    original bytes. NotFound when there is no such point or its image cannot be had."""
    if size not in IMAGE_SIZES:
        raise InvalidQuery(f"Unknown image size {size!r}; use one of {', '.join(IMAGE_SIZES)}.")
    points = store.retrieve(collection, [point_id])
    if not points:
        raise NotFound(f"Collection '{collection}' has no point with id {point_id}.")
    payload = points[0].payload
    source, sha256 = payload.get("image"), payload.get("sha256")
    if not source:
        if not sha256:
            raise NotFound(f"Point {point_id} has no image (its item is a text alone).")
        return _stored_thumbnail(point_id, thumbnails, str(sha256))
    data = _read_source(point_id, str(source))
    name = str(source)
    try:
        if size == "thumb":
            return ItemImage(make_thumbnail(data, name, THUMBNAIL_SIZE), "image/jpeg")
        return _original(data, name)
    except BadItem as bad:
        raise NotFound(f"The image of point {point_id} cannot be shown: {bad.reason}.") from None


def _stored_thumbnail(point_id: str, root: Path, sha256: str) -> ItemImage:
    # A full-size inline image is not kept outside the corpus: the thumbnail serves both sizes.
    path = thumbnail_path(root, sha256)
    try:
        return ItemImage(path.read_bytes(), "image/jpeg")
    except OSError:
        raise NotFound(
            f"The image of point {point_id} was stored inline and its thumbnail is not in "
            f"{root} (ingested before thumbnails were kept, or on another machine); re-ingest "
            "it with --refresh to make one."
        ) from None


def _read_source(point_id: str, source: str) -> bytes:
    item = Item(source="payload", key=point_id, image=source)
    try:
        if source.lower().startswith(("http://", "https://")):
            from ..corpus.remote import fetch_remote_images

            fetched = next(
                fetch_remote_images(
                    [item], workers=1, timeout=FETCH_TIMEOUT_S, max_bytes=MAX_IMAGE_BYTES
                )
            )
            if isinstance(fetched, Skipped):
                raise BadItem(fetched.reason)
            item = fetched
        return read_image_bytes(item)
    except BadItem as bad:
        raise NotFound(f"The image of point {point_id} cannot be read: {bad.reason}.") from None


def _original(data: bytes, name: str) -> ItemImage:
    """The original bytes with their media type; an SVG is rendered (a browser must not run a
    corpus's SVG as a document of this site), and what PIL cannot name is re-encoded as PNG."""
    image = decode_image(data, name)  # the same checks as everywhere: it is an image
    kind = None if is_svg(data, name) else Image.MIME.get(_format_of(data) or "")
    if kind:
        return ItemImage(data, kind)
    out = io.BytesIO()
    image.save(out, "PNG")
    return ItemImage(out.getvalue(), "image/png")


def _format_of(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except (OSError, ValueError):
        return None


def label_counts(store: Store, collection: str, top: int, scan: int) -> list[tuple[str, int]]:
    """The `top` most common label values among the first `scan` points (by id: a sample of a
    larger collection), most common first."""
    counts: Counter[str] = Counter()
    for point in itertools.islice(store.scroll(collection), max(0, scan)):
        labels = point.payload.get("labels") or []
        counts.update(str(label) for label in (labels if isinstance(labels, list) else [labels]))
    return counts.most_common(top)

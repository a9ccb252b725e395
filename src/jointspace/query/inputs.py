"""What a query may give as its image: a path, bytes, a PIL image or an http(s) URL."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..corpus.images import decode_image, read_image_bytes
from ..corpus.item import Item, Skipped
from ..corpus.remote import fetch_remote_images
from ..errors import BadItem, InvalidQuery, UnusableImage

QueryImage = str | Path | bytes | Image.Image


def load_query_image(image: QueryImage, timeout: float = 10.0) -> Image.Image:
    """The query image as RGB, decoded with the same limits as ingest (size, pixels, SVG);
    UnusableImage (a JointspaceError) that names it when it cannot be used."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray)):
        item = Item(source="query", key="uploaded image", image_bytes=bytes(image))
    elif isinstance(image, (str, Path)):
        item = Item(source="query", key=str(image), image=str(image))
    else:
        raise InvalidQuery(
            f"A query image must be a path, bytes, a PIL image or an http(s) URL, not "
            f"{type(image).__name__}."
        )
    name = item.key
    try:
        if item.image and "://" in item.image:
            fetched = next(fetch_remote_images([item], workers=1, timeout=timeout, retries=1))
            if isinstance(fetched, Skipped):
                raise BadItem(fetched.reason)
            item = fetched
        return decode_image(read_image_bytes(item), name)
    except BadItem as bad:
        raise UnusableImage(f"Cannot use {name} as a query image: {bad.reason}.") from None

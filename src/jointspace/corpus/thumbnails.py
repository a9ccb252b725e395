"""Thumbnails: small JPEGs of images, and where ingest keeps those of inline images.

An image stored inline (Parquet bytes, WebDataset members) has no path or URL to show it by, so
ingest writes a thumbnail of it under the home, named by the sha256 of its bytes (the point's
payload `sha256`): `{home}/thumbnails/{sha256[:2]}/{sha256}.jpg`. Content-addressed, so the same
picture in two collections is kept once and a re-run finds it already there.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from PIL import Image

from jointspace.corpus.images import decode_image

THUMBNAIL_SIZE = 256  # longest side, in pixels
_JPEG_QUALITY = 85


def make_thumbnail(data: bytes, name: str, size: int = THUMBNAIL_SIZE) -> bytes:
    """A JPEG of the image in `data` whose longest side is at most `size` pixels, decoded with
    the corpus limits (SVG rendered, transparency on white). Raises BadItem for what is not a
    usable image. `name` is the image's file name or key (it tells SVG by its suffix)."""
    image = decode_image(data, name, at_least=size)
    image.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=_JPEG_QUALITY)
    return out.getvalue()


def thumbnail_path(root: Path, sha256: str) -> Path:
    """Where the thumbnail of the image whose bytes hash to `sha256` is kept under `root`."""
    return Path(root) / sha256[:2] / f"{sha256}.jpg"


def save_thumbnail(root: Path, sha256: str, data: bytes, name: str) -> bool:
    """Write the thumbnail of `data` under `root` unless it is there already; True when it is
    there afterwards. Best effort: an image that cannot be thumbnailed, or a write that fails
    (a full disk), is skipped and returns False; it never stops an ingest."""
    path = thumbnail_path(root, sha256)
    if path.is_file():
        return True
    try:
        jpeg = make_thumbnail(data, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # written whole, then renamed: a reader never sees half a file
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(jpeg)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except Exception:  # noqa: BLE001 - a thumbnail is a convenience: any failure skips it
        return False
    return True

"""Image access with limits: read an item's image bytes, decode them to RGB.

Every failure here is a bad *item* (`BadItem` with a short lowercase reason), never a bad run:
a bulk ingest skips the item, counts it and writes the reason to its errors file.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, ImageOps, UnidentifiedImageError

from jointspace.corpus.item import Item
from jointspace.errors import BadItem

MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_IMAGE_PIXELS = 64_000_000
SVG_SIZE = 512  # longer side, in pixels, of a rendered SVG
# Some clip art takes minutes to draw (tens of thousands of paths, huge gradients): past these
# an SVG is a bad item. The time limit holds where a SIGALRM can interrupt the render: in the
# main thread of a process (ingest's decoding workers, or `--workers 0`).
MAX_SVG_BYTES = 16 * 1024 * 1024
SVG_RENDER_SECONDS = 20.0
_WHITE = (255, 255, 255, 255)

# PIL's decompression-bomb limit is a module global; we set it per call and restore it, under a
# lock so that concurrent decodes in threads never see each other's limit.
_PIL_LIMIT_LOCK = threading.Lock()

# An SVG document: optional BOM, XML declaration, comments and doctype, then the <svg> root.
_SVG_START = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*\?>\s*)?"
    rb"(?:(?:<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>)\s*)*<svg[\s>/]",
    re.DOTALL | re.IGNORECASE,
)
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def read_image_bytes(item: Item, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of `item`'s image: inline `image_bytes`, else the local file `item.image`.

    Raises BadItem for a missing, empty, unreadable or too large image and for remote URLs.
    """
    if item.image_bytes is not None:
        return _check_size(item.image_bytes, max_bytes)
    if not item.image:
        raise BadItem("item has no image")
    path = _local_path(item.image)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise BadItem(f"image path is not a file: {path}")
        if size > max_bytes:
            raise BadItem(_too_large(size, max_bytes))
        with path.open("rb") as f:
            # Read one byte past the limit: the file may have grown since stat().
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise BadItem(f"image file not found: {path}") from None
    except PermissionError:
        raise BadItem(f"image file is not readable (permission denied): {path}") from None
    except OSError as e:
        detail = str(e.strerror or e).lower()
        raise BadItem(f"image file could not be read ({detail}): {path}") from None
    return _check_size(data, max_bytes)


def _local_path(image: str) -> Path:
    """The local path named by `image` (a path or a file:// URL); BadItem for other URLs."""
    if not _URL_SCHEME.match(image):
        return Path(image)
    url = urlparse(image)
    scheme = url.scheme.lower()
    if scheme == "file":
        return Path(unquote(url.path))
    if scheme in ("http", "https"):
        raise BadItem("remote images are not supported by this reader yet")
    raise BadItem(f"unsupported image url scheme: {scheme}")


def _check_size(data: bytes, max_bytes: int) -> bytes:
    if not data:
        raise BadItem("image file is empty")
    if len(data) > max_bytes:
        raise BadItem(_too_large(len(data), max_bytes))
    return data


def _too_large(size: int, max_bytes: int) -> str:
    return f"image file too large ({size} bytes, limit {max_bytes})"


def decode_image(
    data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS, at_least: int | None = None
) -> Image.Image:
    """Decode image bytes to an RGB image; SVG is rendered, transparency composited onto white.

    `name` (a file name or key) is only used to recognise SVG by its suffix. Raises BadItem for
    content that is not an image, truncated or corrupt images, decompression bombs (more than
    `max_pixels` pixels) and SVGs that cannot be rendered. `at_least`: the caller will shrink
    the image to this many pixels a side, so a JPEG may be decoded at a reduced scale
    (libjpeg's DCT scaling, several times faster) whose sides stay at least that large.
    """
    if is_svg(data, name):
        data = _render_svg(data)
    img = _open_within_limit(data, max_pixels)
    try:
        if at_least and img.format == "JPEG":
            img.draft("RGB", (at_least, at_least))
        img.load()  # Image.open only reads the header; truncation shows up here.
        img = ImageOps.exif_transpose(img)  # photos: the pixels the camera meant
        return _to_rgb(img)
    except Image.DecompressionBombError:  # e.g. a later frame or tile larger than the header
        raise BadItem("decompression bomb (image is larger than the pixel limit)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise BadItem(_corrupt_reason(e)) from None


def is_svg(data: bytes, name: str) -> bool:
    """Whether the image is an SVG document, by `name`'s suffix or by its content."""
    if name.lower().endswith((".svg", ".svgz")):
        return True
    return bool(_SVG_START.match(data[:8192]))


def _render_svg(data: bytes) -> bytes:
    """Render an SVG to PNG bytes whose longer side is SVG_SIZE pixels, within MAX_SVG_BYTES of
    source and SVG_RENDER_SECONDS of time."""
    if len(data) > MAX_SVG_BYTES:
        raise BadItem(f"svg too large to render ({len(data)} bytes, limit {MAX_SVG_BYTES})")
    # Imported here: cairosvg loads the system's libcairo, which raster-only users never need.
    import cairosvg

    try:
        with _time_limit(SVG_RENDER_SECONDS):
            width, height = _svg_size(data)
            if width <= 0 or height <= 0:
                raise BadItem("svg has no size")
            fit = {"output_width": SVG_SIZE} if width >= height else {"output_height": SVG_SIZE}
            # unsafe=False (the default) forbids XML entities and fetching anything but data:
            # URLs.
            return cairosvg.svg2png(bytestring=data, unsafe=False, **fit)
    except BadItem:
        raise
    except Exception as e:  # cairosvg raises anything from XML errors to cairo errors
        if type(e).__name__ == "EntitiesForbidden":
            # Illustrator-style entity declarations; parsing them would open the door to XXE.
            raise BadItem("svg declares xml entities (refused for safety)") from None
        raise BadItem(_svg_reason(e)) from None


class _RenderTimeout(BadItem):
    pass


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise BadItem in the body once `seconds` have passed (a SIGALRM from a real-time timer).

    Only in a process's main thread, where Python runs signal handlers (elsewhere the body runs
    unlimited). A handler and a timer already set (e.g. a test runner's) are restored after: the
    outer timer resumes with what was left of it, or fires at once if it ran out meanwhile.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    reason = f"svg took longer than {seconds:g} s to render"
    armed, fired = True, False

    def on_alarm(signum: int, frame: object) -> None:
        nonlocal fired
        if armed:
            fired = True
            raise _RenderTimeout(reason)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    outer, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        try:
            yield
        finally:
            armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
            if outer > 0:
                left = outer - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), outer_interval)
    except Exception:
        if not fired:
            raise
    # Also when the renderer caught the timeout (in a cffi callback, a broad except) and went
    # on, or turned it into an error of its own: the reason is the time it took.
    if fired:
        raise _RenderTimeout(reason) from None


def _svg_reason(e: Exception) -> str:
    if type(e).__name__ == "ParseError":
        return "svg is not valid xml"
    if "size is undefined" in str(e):
        return "svg has no size"
    detail = " ".join(str(e).split()).lower()[:60] or type(e).__name__.lower()
    return f"svg could not be rendered ({detail})"


def _svg_size(data: bytes) -> tuple[float, float]:
    """The intrinsic size of an SVG in pixels, computed the way cairosvg does, without drawing."""
    from cairosvg.parser import Tree
    from cairosvg.surface import PNGSurface

    class _SizeProbe(PNGSurface):
        # Keep the size cairosvg computes, but allocate a 1x1 surface and draw nothing: the
        # intrinsic size may be huge, and rendering twice would double the cost.
        def _create_surface(self, width: float, height: float):  # type: ignore[override]
            self.intrinsic_size = (width, height)
            return super()._create_surface(1, 1)

        def draw(self, node) -> None:  # type: ignore[override]
            return None

    probe = _SizeProbe(Tree(bytestring=data, unsafe=False), None, 96)
    return probe.intrinsic_size


def _open_within_limit(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) with PIL's bomb check set to `max_pixels` for this call."""
    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        # PIL warns above the limit and raises only above twice the limit: make both errors.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise BadItem(f"not an image ({_describe(data)})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise BadItem("decompression bomb (image is larger than the pixel limit)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise BadItem(_corrupt_reason(e)) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    # Our own check as well: it holds whatever a plugin or a caller did to PIL's global.
    width, height = img.size
    if width * height > max_pixels:
        raise BadItem(f"decompression bomb ({width}x{height} pixels, limit {max_pixels})")
    return img


def _describe(data: bytes) -> str:
    """A few words on what non-image content looks like, for the reason."""
    head = data[:512]
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "looks like html"
    try:
        # Incremental, not final: the cut at 512 bytes may split a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "unknown format"
    return "looks like text"


def _corrupt_reason(e: BaseException) -> str:
    message = str(e).lower()
    if "truncated" in message:
        return "truncated image"
    return f"corrupt image ({(message or type(e).__name__)[:80]})"


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB pixels: transparency composited onto white, 16-bit grey scaled down, not clipped."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # A plain convert() clips 16-bit values at 255, turning most of the image white.
        img = img.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return img.convert("RGB")


def image_name(item: Item) -> str:
    """The name `decode_image` should see for `item`: its image path or URL, else its key."""
    return os.fspath(item.image) if item.image else item.key

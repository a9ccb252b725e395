"""Image access with limits: reading bytes and decoding every kind of good and bad image."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from jointspace.corpus.images import decode_image, is_svg, read_image_bytes
from jointspace.corpus.item import Item
from jointspace.errors import BadItem

SVG = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20" viewBox="0 0 40 20">'
    '<rect x="0" y="0" width="20" height="20" fill="#ff0000"/></svg>'
)


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels but holds no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _reason(excinfo: pytest.ExceptionInfo[BadItem]) -> str:
    reason = excinfo.value.reason
    phrase = reason.split(": ")[0]  # a path may follow the phrase
    assert phrase and phrase == phrase.lower() and len(phrase) < 80
    return reason


# --- read_image_bytes -------------------------------------------------------------------------


def test_read_local_file(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(_png(Image.new("RGB", (4, 4))))
    assert read_image_bytes(Item("s", "a", image=str(path))) == path.read_bytes()


def test_read_inline_bytes_win_over_path(tmp_path: Path) -> None:
    item = Item("s", "a", image=str(tmp_path / "missing.png"), image_bytes=b"abc")
    assert read_image_bytes(item) == b"abc"


def test_read_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.png"
    with pytest.raises(BadItem) as e:
        read_image_bytes(Item("s", "a", image=str(path)))
    assert _reason(e) == f"image file not found: {path}"


def test_read_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(BadItem) as e:
        read_image_bytes(Item("s", "a", image=str(path)))
    assert _reason(e) == "image file is empty"


def test_read_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(b"x" * 1000)
    with pytest.raises(BadItem) as e:
        read_image_bytes(Item("s", "a", image=str(path)), max_bytes=999)
    assert _reason(e).startswith("image file too large")
    with pytest.raises(BadItem):
        read_image_bytes(Item("s", "a", image_bytes=b"x" * 1000), max_bytes=999)


def test_read_folder_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(BadItem) as e:
        read_image_bytes(Item("s", "a", image=str(tmp_path)))
    assert "not a file" in _reason(e)


@pytest.mark.parametrize("url", ["http://example.com/a.png", "HTTPS://example.com/a.png"])
def test_read_remote_url_is_not_supported(url: str) -> None:
    with pytest.raises(BadItem) as e:
        read_image_bytes(Item("s", "a", image=url))
    assert _reason(e) == "remote images are not supported by this reader yet"


def test_read_file_url(tmp_path: Path) -> None:
    path = tmp_path / "a b.png"
    path.write_bytes(b"data")
    assert read_image_bytes(Item("s", "a", image=path.as_uri())) == b"data"


def test_read_item_without_image() -> None:
    with pytest.raises(BadItem) as e:
        read_image_bytes(Item("s", "a", text="only text"))
    assert _reason(e) == "item has no image"


# --- decode_image: good images ----------------------------------------------------------------


def test_decode_png_and_jpeg() -> None:
    img = Image.new("RGB", (30, 20), (10, 200, 30))
    out = io.BytesIO()
    img.save(out, "JPEG")
    for data, name in ((_png(img), "a.png"), (out.getvalue(), "a.jpg")):
        decoded = decode_image(data, name)
        assert decoded.mode == "RGB" and decoded.size == (30, 20)
        red, green, blue = decoded.getpixel((5, 5))
        assert abs(red - 10) < 8 and abs(green - 200) < 8 and abs(blue - 30) < 8


def test_decode_grayscale_and_palette() -> None:
    assert decode_image(_png(Image.new("L", (3, 3), 77)), "g.png").getpixel((1, 1)) == (77,) * 3
    palette = Image.new("RGB", (3, 3), (0, 0, 255)).convert("P")
    assert decode_image(_png(palette), "p.png").getpixel((1, 1)) == (0, 0, 255)


def test_decode_rgba_cutout_goes_onto_white() -> None:
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # transparent black, a stamp's background
    img.paste((200, 0, 0, 255), (3, 3, 7, 7))  # an opaque red cut-out
    decoded = decode_image(_png(img), "cut.png")
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((5, 5)) == (200, 0, 0)


def test_decode_half_transparent_blends_with_white() -> None:
    decoded = decode_image(_png(Image.new("LA", (2, 2), (0, 128))), "la.png")
    assert decoded.getpixel((0, 0))[0] == pytest.approx(127, abs=2)


def test_decode_palette_with_transparency_goes_onto_white() -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    out = io.BytesIO()
    img.save(out, "PNG", transparency=0)
    decoded = decode_image(out.getvalue(), "p.png")
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((1, 1)) == (255, 0, 0)


def test_decode_16_bit_grey_is_scaled_not_clipped() -> None:
    img = Image.new("I;16", (2, 2), 32768)  # mid grey in 16 bits
    decoded = decode_image(_png(img), "g16.png")
    assert decoded.getpixel((0, 0))[0] == pytest.approx(127, abs=2)


def test_decode_svg_by_suffix_and_by_content() -> None:
    for name in ("drawing.svg", "no-suffix"):
        decoded = decode_image(SVG.encode(), name)
        assert decoded.mode == "RGB"
        assert decoded.size == (512, 256)  # longer side 512, aspect kept
        assert decoded.getpixel((100, 100)) == (255, 0, 0)
        assert decoded.getpixel((400, 100)) == (255, 255, 255)  # transparent -> white


def test_decode_tall_svg_fits_its_height() -> None:
    tall = SVG.replace('width="40" height="20" viewBox="0 0 40 20"', 'width="10" height="40"')
    assert decode_image(tall.encode(), "tall.svg").size == (128, 512)


def test_svg_sniffing() -> None:
    assert is_svg(b"\xef\xbb\xbf<!-- c --><!DOCTYPE svg [ <!ENTITY a 'b'> ]><svg>", "x")
    assert not is_svg(b"<html><body><svg></svg></body></html>", "page.html")
    assert not is_svg(_png(Image.new("RGB", (1, 1))), "a.png")


# --- decode_image: bad images -----------------------------------------------------------------


def test_decode_truncated_png() -> None:
    noise = Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48)
    data = _png(noise)
    with pytest.raises(BadItem) as e:
        decode_image(data[: len(data) // 2], "cut.png")
    assert _reason(e) == "truncated image"


def test_decode_truncated_jpeg() -> None:
    out = io.BytesIO()
    Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48).save(out, "JPEG")
    with pytest.raises(BadItem) as e:
        decode_image(out.getvalue()[:600], "cut.jpg")
    assert _reason(e) == "truncated image"


def test_decode_text_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are my notes, not a picture\n")
    with pytest.raises(BadItem) as e:
        decode_image(read_image_bytes(Item("s", "a", image=str(path))), path.name)
    assert _reason(e) == "not an image (looks like text)"


def test_decode_binary_junk() -> None:
    with pytest.raises(BadItem) as e:
        decode_image(bytes(range(256)), "junk.png")
    assert _reason(e).startswith("not an image")


def test_decode_bomb_small_image_with_lowered_limit() -> None:
    data = _png(Image.new("RGB", (100, 100)))
    assert decode_image(data, "ok.png", max_pixels=10_000).size == (100, 100)
    with pytest.raises(BadItem) as e:
        decode_image(data, "bomb.png", max_pixels=9_999)
    assert _reason(e).startswith("decompression bomb")


def test_decode_bomb_header_claiming_huge_dimensions() -> None:
    data = _png_header_only(100_000, 100_000)
    assert len(data) < 100
    with pytest.raises(BadItem) as e:
        decode_image(data, "bomb.png")
    assert _reason(e).startswith("decompression bomb")


@pytest.fixture(scope="module")
def real_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 9000 x 9000 palette PNG: 81 M pixels, but the file is tiny."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("P", (9000, 9000), 0).save(path, "PNG")
    return path


def test_decode_real_large_png_bomb(real_bomb: Path) -> None:
    data = real_bomb.read_bytes()
    assert len(data) < 1_000_000
    with pytest.raises(BadItem) as e:
        decode_image(data, real_bomb.name)  # default limit: 64 M pixels
    assert _reason(e).startswith("decompression bomb")


def test_decode_does_not_leak_pil_limit() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(BadItem):
        decode_image(_png(Image.new("RGB", (10, 10))), "a.png", max_pixels=5)
    decode_image(_png(Image.new("RGB", (10, 10))), "a.png", max_pixels=10**9)
    after = Image.MAX_IMAGE_PIXELS
    assert after == before


def test_decode_broken_svg() -> None:
    with pytest.raises(BadItem) as e:
        decode_image(b"<svg><rect></svg", "broken.svg")
    assert _reason(e) == "svg is not valid xml"


def test_decode_svg_without_size() -> None:
    with pytest.raises(BadItem) as e:
        decode_image(b'<svg xmlns="http://www.w3.org/2000/svg" width="0" height="0"/>', "a.svg")
    assert _reason(e) == "svg has no size"


def test_decode_svg_with_entities_is_refused() -> None:
    evil = (
        b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x "y">]>'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><text>&x;</text></svg>'
    )
    with pytest.raises(BadItem) as e:
        decode_image(evil, "evil.svg")
    assert _reason(e) == "svg declares xml entities (refused for safety)"

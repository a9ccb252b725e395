"""A boilerplate caption does not decide the split: an SVG captioned from its own metadata whose
title is the creator's name, a file-like string, missing, or a series title that shares no word
with the file's name is marked `split_by: image` and keyed by its image bytes, so unrelated
drawings under one such title are split item by item; a real title shared by several drawings
keeps them in one split, and `.txt` captions (the Tux Paint stamps) are untouched.

Fixture SVGs are written by the tests (the `_svg` of test_corpus_svgmeta); one test reads the
real Tux Paint stamps and skips when they are not installed."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from conftest import STAMPS, requires_stamps
from test_corpus_svgmeta import _svg, _write

from jointspace.corpus.item import Item
from jointspace.corpus.readers import read_corpus
from jointspace.corpus.split import BY_IMAGE, SPLIT_BY, content_key, split_of
from jointspace.corpus.svgmeta import SvgMeta, boilerplate_title

STARS = ("stars", "shapes", "magick", "geometry")


def _drawing(n: int) -> str:
    """A distinct drawing per `n` (its bytes differ, not only its metadata)."""
    return f'<circle cx="{n % 20}" cy="5" r="{1 + n % 4}" fill="#{n:06x}"/>'


def _items(source: Path, **options: str) -> dict[str, Item]:
    records = list(read_corpus(source, **options))
    assert all(isinstance(r, Item) for r in records), records
    return {r.key: r for r in records}  # type: ignore[union-attr]


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def clipart(tmp_path: Path) -> Path:
    """Open Clip Art in small: pairs of different drawings under one title of each kind."""
    root = tmp_path / "clipart"
    drawings = {
        # the creator's name as the title (file names from the title, as Debian writes them)
        "people/jane_roe_01.svg": ("Jane Roe", ("people",), "Jane Roe"),
        "people/jane_roe_02.svg": ("Jane Roe", ("people",), "Jane Roe"),
        # "Clipart by NAME - ..." with the same keywords
        "shapes/jigsaw_red_1.svg": ("Clipart by Nicu - jigsaw", ("jigsaw",), "Nicu"),
        "shapes/jigsaw_red_2.svg": ("Clipart by Nicu - jigsaw", ("jigsaw",), "Nicu"),
        # a tool's name put on many files, none of them named after it
        "shapes/star_05pt02step.svg": ("gramastar", STARS, "codifiedivining"),
        "shapes/star_07pt03step.svg": ("gramastar", STARS, "codifiedivining"),
        # a file-like title
        "signs/aiga_toilets.svg": ("aiga_symbol_signs", ("symbol",), "AIGA"),
        "signs/aiga_exit.svg": ("aiga_symbol_signs", ("symbol",), "AIGA"),
        # a real title that two different drawings share
        "food/red_apple_01.svg": ("Red apple", ("fruit",), "Kurt"),
        "food/red_apple_02.svg": ("Red apple", ("fruit",), "Ann"),
    }
    for n, (name, (title, keywords, creator)) in enumerate(drawings.items()):
        _write(root / name, _svg(title, None, keywords, creator, body=_drawing(n)))
    # no metadata: the caption falls back to the file name
    _write(root / "misc" / "blob_one.svg", _svg(body=_drawing(50)))
    return root


MARKED_PAIRS = (
    ("people/jane_roe_01.svg", "people/jane_roe_02.svg"),
    ("shapes/jigsaw_red_1.svg", "shapes/jigsaw_red_2.svg"),
    ("shapes/star_05pt02step.svg", "shapes/star_07pt03step.svg"),
    ("signs/aiga_toilets.svg", "signs/aiga_exit.svg"),
)


@pytest.mark.parametrize("caption", ["title+keywords", "title", "title+description"])
def test_a_shared_boilerplate_title_is_keyed_by_each_image(clipart: Path, caption: str) -> None:
    items = _items(clipart, caption=caption)
    for a, b in MARKED_PAIRS:
        assert items[a].text == items[b].text  # one caption, as before: it would be one key
        for key in (a, b):
            assert items[key].extra[SPLIT_BY] == BY_IMAGE
            assert items[key].split_key == _sha(Path(items[key].image))
        assert items[a].split_key != items[b].split_key


def test_a_real_shared_title_keeps_one_key(clipart: Path) -> None:
    items = _items(clipart)
    a, b = items["food/red_apple_01.svg"], items["food/red_apple_02.svg"]
    assert SPLIT_BY not in a.extra and SPLIT_BY not in b.extra
    assert a.split_key == b.split_key == "text:red apple. fruit"
    assert split_of(a.split_key) == split_of(b.split_key)


def test_a_missing_title_is_keyed_by_the_image(clipart: Path) -> None:
    item = _items(clipart)["misc/blob_one.svg"]
    assert item.text == "blob one" and "no-title" in item.extra["caption_kinds"]
    assert item.extra[SPLIT_BY] == BY_IMAGE and item.split_key == _sha(Path(item.image))


def test_byte_identical_copies_still_share_a_key(clipart: Path) -> None:
    star = clipart / "shapes" / "star_05pt02step.svg"
    (clipart / "shapes" / "copies").mkdir()
    shutil.copy(star, clipart / "shapes" / "copies" / star.name)
    items = _items(clipart)
    original, copy = items["shapes/star_05pt02step.svg"], items["shapes/copies/star_05pt02step.svg"]
    assert original.split_key == copy.split_key == _sha(star)


def test_the_key_is_per_item_whatever_else_is_read(clipart: Path, tmp_path: Path) -> None:
    """The mark needs no corpus-wide count: a file read alone keys as it does among the rest."""
    together = _items(clipart)
    for name in ("shapes/star_05pt02step.svg", "food/red_apple_01.svg", "misc/blob_one.svg"):
        alone = tmp_path / "alone" / name
        alone.parent.mkdir(parents=True)
        shutil.copy(clipart / name, alone)
        assert _items(tmp_path / "alone")[name].split_key == together[name].split_key
        shutil.rmtree(tmp_path / "alone")


def test_a_caption_file_wins_and_is_not_marked(tmp_path: Path) -> None:
    """Stamps-style `.txt` captions decide the split as before, even for an SVG whose own
    metadata title is boilerplate: its PNG, SVG and mirror keep one key."""
    stamp = tmp_path / "stamps" / "animals" / "penguin"
    _write(stamp.with_suffix(".svg"), _svg("Jane Roe", creator="Jane Roe", body=_drawing(1)))
    stamp.with_suffix(".png").write_bytes(b"not read")
    (stamp.parent / "penguin_mirror.png").write_bytes(b"not read either")
    stamp.with_suffix(".txt").write_text("A penguin.\nfr.utf8=Un manchot.\n")
    items = _items(tmp_path / "stamps")
    assert len(items) == 3
    for item in items.values():
        assert SPLIT_BY not in item.extra and item.split_key == "text:a penguin."


def test_real_stamps_are_not_marked() -> None:
    """The Tux Paint stamps have `.txt` captions: no item is marked, each keys by its caption
    (the split of every stamp is as before this rule)."""
    requires_stamps()
    items = [r for r in read_corpus(STAMPS) if isinstance(r, Item)]
    assert len(items) > 500
    assert not [i.key for i in items if SPLIT_BY in i.extra]
    assert all(i.split_key.startswith("text:") for i in items if i.text)


def test_content_key_honours_the_mark_on_any_item(tmp_path: Path) -> None:
    marked = {SPLIT_BY: BY_IMAGE}
    data = b"\x89PNG same bytes"
    inline = Item("s", "a", text="Jane Roe", image_bytes=data, extra=marked)
    assert content_key(inline) == "sha256:" + hashlib.sha256(data).hexdigest()
    url = "https://example.org/a.svg"
    assert content_key(Item("s", "b", image=url, text="Jane Roe", extra=marked)) == f"url:{url}"
    assert content_key(Item("s", "c", text="Jane Roe", extra=marked)) == "key:c"
    # any other value of the field is no mark
    other = Item("s", "d", text="Jane Roe", extra={SPLIT_BY: "caption"})
    assert content_key(other) == "text:jane roe"


def test_a_manifest_column_split_by_image_splits_as_the_folder(clipart: Path) -> None:
    folder = _items(clipart)
    rows = ["image,text,split_by"]
    for item in folder.values():
        mark = item.extra.get(SPLIT_BY, "")
        rows.append(f'{item.image},"{item.text}",{mark}')
    manifest = clipart.parent / "clipart.csv"
    manifest.write_text("\n".join(rows) + "\n")
    by_file = {
        r.image: r.split_key for r in read_corpus(manifest) if isinstance(r, Item) and r.image
    }
    assert by_file == {item.image: item.split_key for item in folder.values()}


def test_boilerplate_title_rule() -> None:
    def title(text: str | None, stem: str, *kinds: str) -> bool:
        return boilerplate_title(SvgMeta(title=text), stem, kinds or ("english-title",))

    assert title("Metal Cage", "metal_cage_kurt_nordstro_01") is False
    assert title("gramastar", "star_05pt02step") is True  # no shared word ("star" is a part)
    assert title("Card", "bordered_c_10") is True
    assert title("R2", "x") is False  # no word of three letters: nothing to compare
    assert title("Jane Roe", "jane_roe_01", "name-title") is True
    assert title("tux_01", "tux_01", "file-title") is True
    assert title(None, "blob", "no-title") is True
    assert boilerplate_title(None, "blob", ["no-title"]) is True

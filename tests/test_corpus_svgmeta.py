"""SVG metadata as captions (the Open Clip Art layout) and the limits on rendering SVGs.

Fixture SVGs are written by the tests; one test reads a sample of the real Open Clip Art corpus
(Debian's `openclipart-svg`): it skips with a reason when the package is missing, and fails
instead when CI=true (scripts/setup.sh installs it)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from PIL import Image
from typer.testing import CliRunner

from jointspace.cli import app
from jointspace.corpus import images
from jointspace.corpus.images import decode_image, read_image_bytes
from jointspace.corpus.item import Item
from jointspace.corpus.readers import read_corpus
from jointspace.corpus.select import SourceOptions, read_sources
from jointspace.corpus.svgmeta import (
    DEFAULT_CAPTION,
    MAX_FIELD_CHARS,
    SvgMeta,
    parse_svg_meta,
    read_svg_meta,
    svg_caption,
)
from jointspace.errors import BadItem, JointspaceError

OPENCLIPART = Path("/usr/share/openclipart/svg")
CC = "http://web.resource.org/cc/"
PUBLIC_DOMAIN = CC + "PublicDomain"
DRAWING = '<rect x="0" y="0" width="20" height="10" fill="#2040c0"/>'
PLAIN = f'<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">{DRAWING}</svg>'


def _svg(
    title: str | None = None,
    description: str | None = None,
    keywords: tuple[str, ...] = (),
    creator: str | None = None,
    license: str | None = PUBLIC_DOMAIN,
    creator_plain: bool = False,
    head: str = "",
    body: str = DRAWING,
) -> str:
    """An Inkscape / Open Clip Art style SVG: `<metadata>` with a cc:Work first, then drawing.
    The publisher's Agent (whose dc:title is not the clip's) comes before the clip's own title,
    as a trap for a reader that takes the first dc:title it sees."""

    def element(name: str, value: str | None) -> str:
        return "" if value is None else f"<dc:{name}>{escape(value)}</dc:{name}>"

    items = "".join(f"<rdf:li>{escape(k)}</rdf:li>" for k in keywords)
    if creator is None:
        who = ""
    elif creator_plain:
        who = element("creator", creator)
    else:
        who = (
            f"<dc:creator><cc:Agent><dc:title>{escape(creator)}</dc:title></cc:Agent></dc:creator>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
        f"{head}"
        '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10" '
        f'xmlns:cc="{CC}" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '<metadata><rdf:RDF><cc:Work rdf:about="">'
        "<dc:publisher><cc:Agent><dc:title>Open Clip Art Library</dc:title></cc:Agent>"
        "</dc:publisher>"
        + element("title", title)
        + element("description", description)
        + (f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>" if keywords else "")
        + who
        + (f'<cc:license rdf:resource="{license}"/>' if license else "")
        + f"</cc:Work></rdf:RDF></metadata>\n{body}</svg>\n"
    )


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _items(source: Path, **options: str) -> dict[str, Item]:
    records = list(read_corpus(source, **options))
    assert all(isinstance(r, Item) for r in records), records
    return {r.key: r for r in records}  # type: ignore[union-attr]


def _cage(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "tools" / "metal_cage_kurt_01.svg",
        _svg(
            "Metal Cage",
            "A standard, metal cage",
            ("structure", "Zoo", "cage", "zoo", " "),
            creator="Kurt Nordström",
        ),
    )


# -- the metadata and the caption ---------------------------------------------------------------


def test_title_and_keywords_are_the_default_caption(tmp_path: Path) -> None:
    _cage(tmp_path)
    item = _items(tmp_path)["tools/metal_cage_kurt_01.svg"]
    assert DEFAULT_CAPTION == "title+keywords"
    # keywords de-duplicated case-insensitively, blank ones and the title's own word dropped
    assert item.text == "Metal Cage. structure, Zoo, cage"
    assert not item.truncated


def test_each_caption_mode(tmp_path: Path) -> None:
    _cage(tmp_path)
    key = "tools/metal_cage_kurt_01.svg"
    assert _items(tmp_path, caption="title")[key].text == "Metal Cage"
    assert _items(tmp_path, caption="title+description")[key].text == (
        "Metal Cage. A standard, metal cage"
    )
    assert _items(tmp_path, caption="title+keywords")[key].text == (
        "Metal Cage. structure, Zoo, cage"
    )


def test_an_unknown_caption_mode_is_a_bad_run(tmp_path: Path) -> None:
    _cage(tmp_path)
    with pytest.raises(JointspaceError, match=r"--caption 'summary'.*title\+keywords"):
        read_corpus(tmp_path, caption="summary")  # before any record is read
    manifest = _write(tmp_path / "m.csv", "image,text\na.png,a\n")
    with pytest.raises(JointspaceError, match="takes no --caption option"):
        read_corpus(manifest, caption="title")


def test_an_empty_description_or_one_equal_to_the_title_is_left_out(tmp_path: Path) -> None:
    _write(tmp_path / "a.svg", _svg("Red apple", ""))
    _write(tmp_path / "b.svg", _svg("Red apple", "  red APPLE. "))
    _write(tmp_path / "c.svg", _svg("Red apple!", "A shiny apple\n  on a   table"))
    items = _items(tmp_path, caption="title+description")
    assert items["a.svg"].text == "Red apple"
    assert items["b.svg"].text == "Red apple"
    assert items["c.svg"].text == "Red apple! A shiny apple on a table"  # whitespace collapsed


def test_a_title_in_another_language_is_kept_as_written(tmp_path: Path) -> None:
    _write(tmp_path / "x.svg", _svg("Barattolo di pillole è città", keywords=("medicina",)))
    assert _items(tmp_path)["x.svg"].text == "Barattolo di pillole è città. medicina"


def test_the_creator_is_the_agent_not_the_clip_title(tmp_path: Path) -> None:
    _write(tmp_path / "owl.svg", _svg("Owl", creator="Nicu Buculei"))
    _write(tmp_path / "cat.svg", _svg("Cat", creator="Jane Doe", creator_plain=True))
    _write(tmp_path / "dog.svg", _svg("Dog", license=None))
    # files named after their titles: not marked split_by (test_split_shared_captions)
    items = _items(tmp_path)
    assert items["owl.svg"].text == "Owl"  # not the publisher's "Open Clip Art Library"
    assert items["owl.svg"].extra == {
        "name": "owl",
        "creator": "Nicu Buculei",
        "license": PUBLIC_DOMAIN,
        "caption_kinds": ["english-title", "empty-description"],
    }
    assert items["cat.svg"].extra["creator"] == "Jane Doe"
    nobody = items["dog.svg"].extra  # no empty payload fields
    assert nobody == {"name": "dog", "caption_kinds": ["english-title", "empty-description"]}


def test_labels_are_the_folder_path_then_the_keywords(tmp_path: Path) -> None:
    _write(
        tmp_path / "animals" / "birds" / "owl.svg",
        _svg("Owl", keywords=("Bird ", "animals", "night bird", "BIRD")),
    )
    item = _items(tmp_path)["animals/birds/owl.svg"]
    assert item.labels == ("animals", "animals/birds", "bird", "night bird")


def test_no_metadata_falls_back_to_the_file_name(tmp_path: Path) -> None:
    _write(tmp_path / "red_fire-truck_01.svg", PLAIN)
    _write(tmp_path / "not_xml.svg", "<svg><g></svg>")
    _write(tmp_path / "empty_work.svg", _svg(keywords=("truck",), license=None))
    items = _items(tmp_path)
    assert items["red_fire-truck_01.svg"].text == "red fire truck 01"
    assert items["red_fire-truck_01.svg"].labels == ()
    assert items["not_xml.svg"].text == "not xml"
    assert items["empty_work.svg"].text == "empty work. truck"  # no title: the name's words


def test_an_svg_title_element_stands_in_for_a_missing_dc_title(tmp_path: Path) -> None:
    _write(
        tmp_path / "t.svg",
        f'<svg xmlns="http://www.w3.org/2000/svg"><title> A  blue box </title>{DRAWING}</svg>',
    )
    assert _items(tmp_path)["t.svg"].text == "A blue box"


def test_entities_are_unescaped_and_mislabelled_text_repaired() -> None:
    meta = parse_svg_meta(
        _svg(
            "Caf&eacute; &amp; bar",  # written escaped twice: "Caf&amp;eacute; &amp;amp; bar"
            creator="Mikol\xe1\x9a Ale\x9a",  # Windows-1252 bytes read as Latin-1
            keywords=("a&amp;b", "x" * 65),  # a 65-character "keyword" is not one
        ).encode()
    )
    assert meta == SvgMeta("Café & bar", None, ("a&b",), "Mikoláš Aleš", PUBLIC_DOMAIN)


def test_long_fields_are_cut(tmp_path: Path) -> None:
    _write(tmp_path / "long.svg", _svg("word " * 5000, keywords=tuple(f"k{i}" for i in range(99))))
    item = _items(tmp_path)["long.svg"]
    title, keywords = item.text.split(". ", 1)  # type: ignore[union-attr]
    assert len(title) <= MAX_FIELD_CHARS
    assert keywords.count(",") == 31  # 32 keywords at most
    assert len(item.labels) == 32


def test_doctype_is_read_but_entities_are_refused(tmp_path: Path) -> None:
    secret = _write(tmp_path / "secret.txt", "TOP-SECRET")
    doctype = (
        '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.0//EN" '
        '"http://www.w3.org/TR/2001/REC-SVG-20010904/DTD/svg10.dtd">\n'
    )
    external = f'<!DOCTYPE svg [<!ENTITY leak SYSTEM "file://{secret}">]>\n'
    laughs = (
        '<!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>\n'
    )
    _write(tmp_path / "c" / "public_dtd.svg", _svg("Crayon", head=doctype))
    _write(tmp_path / "c" / "xxe_leak.svg", _svg("&leak;", head=external).replace("&amp;", "&"))
    _write(tmp_path / "c" / "lol_bomb.svg", _svg("&d;", head=laughs).replace("&amp;", "&"))
    items = _items(tmp_path / "c")
    assert items["public_dtd.svg"].text == "Crayon"  # a plain DOCTYPE is harmless, never fetched
    assert items["xxe_leak.svg"].text == "xxe leak"  # refused: the file name's words
    assert items["lol_bomb.svg"].text == "lol bomb"
    assert not any("SECRET" in str(i) for i in items.values())


def test_only_the_head_of_a_file_is_read(tmp_path: Path) -> None:
    # well-formed metadata first, then a megabyte that is not XML: read up to the metadata only
    head = _svg("Big drawing", body="")[: -len("</svg>\n")]
    _write(tmp_path / "big.svg", head + "<g>" + "&&& not xml " * 100_000)
    # the metadata beyond the read limit: the file name's words
    late = _svg("Never seen").replace("\n<metadata>", f"<!-- {'x' * 300_000} -->\n<metadata>")
    _write(tmp_path / "late_meta.svg", late)
    items = _items(tmp_path)
    assert items["big.svg"].text == "Big drawing"
    assert items["late_meta.svg"].text == "late meta"
    assert read_svg_meta(tmp_path / "late_meta.svg", max_bytes=10 << 20) is not None


def test_a_named_pipe_is_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.svg")  # opening it would wait for a writer forever
    assert _items(tmp_path)["pipe.svg"].text == "pipe"


def test_a_caption_file_beside_the_svg_wins(tmp_path: Path) -> None:
    _write(tmp_path / "owl.svg", _svg("Owl", keywords=("bird",), creator="A. Artist"))
    _write(tmp_path / "owl.txt", "A snowy owl.\nfr.utf8=Une chouette\n")
    _write(tmp_path / "cat.svg", _svg("Cat", keywords=("pet",)))
    _write(tmp_path / "cat.txt", "\n")  # an empty caption file says: no caption
    items = _items(tmp_path)
    assert items["owl.svg"].text == "A snowy owl."
    assert items["owl.svg"].labels == ()
    assert items["owl.svg"].extra == {"name": "owl"}
    assert items["cat.svg"].text is None


def test_raster_images_are_untouched(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png")
    assert _items(tmp_path)["photo.png"].text is None


def test_svg_caption_without_metadata() -> None:
    assert svg_caption(None, "blue_car", "title+keywords") == "blue car"
    assert svg_caption(SvgMeta(title="Car?", keywords=("car", "auto")), "x") == "Car? auto"
    with pytest.raises(ValueError, match="Unknown --caption"):
        svg_caption(None, "x", "keywords")


# -- through the sources and the command line ---------------------------------------------------


def test_an_openclipart_like_folder_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "svg"
    _write(
        root / "animals" / "birds" / "owl_nicu_01.svg",
        _svg("Owl", "An owl at night", ("bird", "night"), creator="Nicu"),
    )
    _write(root / "food" / "pane.svg", _svg("Pane e burro", "", ("bread",), creator="Arch. F."))
    _write(root / "food" / "apple.svg", _svg("Apple", keywords=("fruit",)))
    _write(root / "food" / "apple.txt", "A green apple.\n")
    Image.new("RGB", (8, 8), "red").save(root / "food" / "tomato.png")
    _write(root / "shapes" / "star_5pt.svg", PLAIN)

    records = list(read_sources([root], SourceOptions(caption="title+description")))
    by_key = {r.key: r for r in records if isinstance(r, Item)}
    assert len(by_key) == len(records) == 5
    assert by_key["animals/birds/owl_nicu_01.svg"].text == "Owl. An owl at night"
    assert by_key["animals/birds/owl_nicu_01.svg"].labels == (
        "animals",
        "animals/birds",
        "bird",
        "night",
    )
    assert by_key["food/pane.svg"].text == "Pane e burro"
    assert by_key["food/apple.svg"].text == "A green apple."
    assert by_key["food/tomato.png"].text is None
    assert by_key["shapes/star_5pt.svg"].text == "star 5pt"
    assert by_key["food/pane.svg"].extra["creator"] == "Arch. F."
    # the default mode when no option is given
    default = {r.key: r for r in read_sources([root]) if isinstance(r, Item)}
    assert default["animals/birds/owl_nicu_01.svg"].text == "Owl. bird, night"
    # and every SVG renders
    for key in ("animals/birds/owl_nicu_01.svg", "food/pane.svg", "shapes/star_5pt.svg"):
        assert decode_image(read_image_bytes(by_key[key]), key).size == (512, 256)


@pytest.mark.parametrize("command", ["train", "ingest", "eval"])
def test_the_commands_that_read_sources_take_caption(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--caption " in result.output and "title+keywords" in result.output


def test_source_options_pass_caption_to_the_reader() -> None:
    assert SourceOptions(caption="title").reader_options()["caption"] == "title"
    assert SourceOptions().reader_options()["caption"] is None  # the folder reader's default


# -- the real corpus ----------------------------------------------------------------------------


def _requires_openclipart() -> None:
    if OPENCLIPART.is_dir():
        return
    reason = f"Open Clip Art is not installed at {OPENCLIPART} (apt-get install openclipart-svg)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: scripts/setup.sh installs it)")
    pytest.skip(reason)


def test_a_sample_of_the_real_openclipart_corpus(tmp_path: Path) -> None:
    _requires_openclipart()
    files = sorted(p.relative_to(OPENCLIPART) for p in OPENCLIPART.rglob("*.svg"))
    assert len(files) > 8000
    by_category: dict[str, list[Path]] = {}
    for path in files:
        by_category.setdefault(path.parts[0], []).append(path)
    assert len(by_category) >= 20
    # the first, middle and last files of ten categories
    sample = []
    for category in sorted(by_category)[::2]:
        paths = by_category[category]
        sample += {paths[0], paths[len(paths) // 2], paths[-1]}
    for path in sample:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(OPENCLIPART / path, tmp_path / path)  # symlinks copied as files

    items = list(_items(tmp_path).values())
    assert len(items) == len(sample) >= 25
    for item in items:
        category = item.key.split("/", 1)[0]
        assert item.text and item.text.strip() == item.text, item
        assert item.labels[0] == category, item
        folder = item.key.rsplit("/", 1)[0]
        assert folder == category or item.labels[1] == folder, item
    with_metadata = [i for i in items if "creator" in i.extra]
    assert len(with_metadata) >= 0.9 * len(items)
    assert Counter(i.extra.get("license") for i in with_metadata).most_common(1)[0][1] >= 10


# -- render limits ------------------------------------------------------------------------------


def _slow_svg(circles: int = 2000) -> bytes:
    """About a millisecond of cairo work per circle: ~2 s for 2000 on one core."""
    shapes = "".join(
        f'<circle cx="{i % 100}" cy="{i * 7 % 100}" r="40" fill="url(#g)" opacity="0.5"/>'
        for i in range(circles)
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><defs>'
        '<radialGradient id="g"><stop offset="0" stop-color="red"/>'
        '<stop offset="1" stop-color="blue"/></radialGradient></defs>' + shapes + "</svg>"
    ).encode()


def test_an_svg_that_renders_too_long_is_a_bad_item(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "SVG_RENDER_SECONDS", 0.2)
    started = time.monotonic()
    with pytest.raises(BadItem, match=r"^svg took longer than 0.2 s to render$"):
        decode_image(_slow_svg(), "slow.svg")
    assert time.monotonic() - started < 1.5


def test_the_time_limit_restores_the_previous_alarm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "SVG_RENDER_SECONDS", 5.0)
    fired: list[int] = []

    def outer_handler(signum: int, frame: object) -> None:
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, outer_handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        decode_image(_slow_svg(10), "quick.svg")
        assert signal.getsignal(signal.SIGALRM) is outer_handler
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 25.0 < left <= 30.0  # the outer timer still runs, less the time spent
        assert fired == []
        # an outer timer that ran out during the render fires right after it, not during it
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        decode_image(_slow_svg(100), "a.svg")
        time.sleep(0.05)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_outside_the_main_thread_there_is_no_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "SVG_RENDER_SECONDS", 1e-6)
    with pytest.raises(BadItem, match="took longer"):  # in the main thread even a tiny one
        decode_image(_slow_svg(50), "a.svg")
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(decode_image(_slow_svg(50), "a.svg")))
    thread.start()
    thread.join()
    assert len(results) == 1 and getattr(results[0], "size", None) == (512, 512)


def test_an_svg_source_over_the_size_limit_is_a_bad_item(monkeypatch: pytest.MonkeyPatch) -> None:
    assert images.MAX_SVG_BYTES == 16 * 1024 * 1024
    monkeypatch.setattr(images, "MAX_SVG_BYTES", 1000)
    data = _slow_svg(20)
    assert len(data) > 1000
    with pytest.raises(
        BadItem, match=rf"^svg too large to render \({len(data)} bytes, limit 1000\)$"
    ):
        decode_image(data, "big.svg")


def _decode_reason(data: bytes) -> str:
    try:
        decode_image(data, "slow.svg")
    except BadItem as bad:
        return bad.reason
    return "rendered"


def test_the_time_limit_holds_in_a_forked_decoding_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # ingest decodes in worker processes forked from the main one (pipeline/features.py)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    monkeypatch.setattr(images, "SVG_RENDER_SECONDS", 0.2)
    with ProcessPoolExecutor(1, multiprocessing.get_context("fork")) as pool:
        assert pool.submit(_decode_reason, _slow_svg()).result(timeout=60) == (
            "svg took longer than 0.2 s to render"
        )


def test_caption_kinds_name_the_natural_noise() -> None:
    from jointspace.corpus.caption_kinds import CAPTION_KINDS, caption_kinds
    from jointspace.corpus.svgmeta import SvgMeta

    keywords = ("penguin", "bird", "animal", "ice")
    english = SvgMeta(title="A penguin on the ice", keywords=keywords)
    assert caption_kinds(english) == [
        "english-title",
        "empty-description",
        "rich-keywords",
    ]
    described = SvgMeta(title="Penguin", description="A penguin standing on ice.", keywords=("x",))
    assert caption_kinds(described) == ["english-title"]
    assert caption_kinds(SvgMeta(title="Cigno di notte nella palude"))[0] == "non-english-title"
    assert caption_kinds(SvgMeta(title="Clipart by Nicu Buculei - head1"))[0] == "name-title"
    creator = SvgMeta(
        title="Architetto Francesco Rollandin", creator="Architetto Francesco Rollandin"
    )
    assert caption_kinds(creator)[0] == "name-title"
    assert caption_kinds(SvgMeta(title="07_lastquarter_openclipart"))[0] == "file-title"
    assert caption_kinds(SvgMeta(title="Rana01"))[0] == "file-title"
    assert caption_kinds(None) == ["no-title", "empty-description"]
    same = SvgMeta(title="Tux", description="tux.")
    assert "empty-description" in caption_kinds(same)
    assert set(caption_kinds(english)) <= set(CAPTION_KINDS)


def test_svg_items_carry_their_caption_kinds_as_a_filterable_list(tmp_path) -> None:
    from jointspace.corpus.folder import read_folder

    (tmp_path / "birds").mkdir()
    (tmp_path / "birds" / "puffin.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><title>Puffin</title></svg>'
    )
    (item,) = read_folder(tmp_path)
    assert item.extra["caption_kinds"] == ["english-title", "empty-description"]

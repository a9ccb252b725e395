"""Captions from an SVG's own metadata (the Open Clip Art layout).

Inkscape and the Open Clip Art Library write RDF into `<metadata>` near the start of the file::

    <cc:Work rdf:about="">
      <dc:title>Metal Cage</dc:title>
      <dc:description>A standard, metal cage</dc:description>
      <dc:subject><rdf:Bag><rdf:li>zoo</rdf:li><rdf:li>cage</rdf:li></rdf:Bag></dc:subject>
      <dc:creator><cc:Agent><dc:title>Kurt Nordstrom</dc:title></cc:Agent></dc:creator>
      <cc:license rdf:resource="http://web.resource.org/cc/PublicDomain"/>

Only the first META_READ_BYTES of a file are read (the drawing that follows may be megabytes),
with a parser that refuses entity declarations and never fetches anything (defusedxml). A file
without usable metadata in that prefix gets a caption from its file name's words.

A title that says nothing about which drawing a file is (`boilerplate_title`: the creator's
name, a file-like string, none at all, or a series or collection title that shares no word with
the file's name) must not decide the item's split: such items are split by their image bytes
(see split.py).
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from xml.etree.ElementTree import Element, ParseError

# defusedxml comes with cairosvg (which renders the SVGs): entity declarations raise
# EntitiesForbidden, external references are never resolved.
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

META_READ_BYTES = 256 * 1024
CAPTION_MODES = ("title", "title+description", "title+keywords")
DEFAULT_CAPTION = "title+keywords"
MAX_KEYWORDS = 32  # more are dropped: a keyword list is a few tags, not a document
MAX_KEYWORD_CHARS = 64  # a longer "keyword" is a sentence pasted in the wrong field: dropped
MAX_FIELD_CHARS = 200  # title, description, creator and license are cut here (payload stays small)
_WHITESPACE = re.compile(r"\s+")
_PUNCTUATION = " .,;:!?"
_C1 = re.compile("[\x80-\x9f]")
_STEM_SEPARATORS = re.compile(r"[_\-.+]+")
_NAME_WORD = re.compile(r"[^\W\d_]{3,}")  # letters only, three or more: not "of", "a", "01"
# Caption kinds (caption_kinds.py) of a title that does not say what the drawing is.
BOILERPLATE_TITLE_KINDS = frozenset({"name-title", "file-title", "no-title"})


@dataclass(frozen=True)
class SvgMeta:
    """What an SVG says about itself; empty fields are None (or no keywords)."""

    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()
    creator: str | None = None
    license: str | None = None


def read_svg_meta(path: Path, max_bytes: int = META_READ_BYTES) -> SvgMeta | None:
    """The metadata of the SVG at `path`, from its first `max_bytes`; None when there is none
    there (no RDF, not XML, entity declarations refused, unreadable, not a regular file)."""
    try:
        if not Path(path).is_file():  # a FIFO would block the reader
            return None
        with open(path, "rb") as file:
            return _parse(_Capped(file, max_bytes))
    except OSError:
        return None


def parse_svg_meta(data: bytes, max_bytes: int = META_READ_BYTES) -> SvgMeta | None:
    """`read_svg_meta` for SVG bytes already in memory."""
    return _parse(_Capped(io.BytesIO(data), max_bytes))


class _Capped:
    """A file that ends after `limit` bytes: the parser reads in chunks and stops early."""

    def __init__(self, file: BinaryIO, limit: int) -> None:
        self._file, self._left = file, limit

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size < 0 else min(size, self._left)
        data = self._file.read(size)
        self._left -= len(data)
        return data


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _parse(source: _Capped) -> SvgMeta | None:
    svg_title: str | None = None
    depth = 0
    events = iterparse(source, events=("start", "end"))
    try:
        for event, element in events:
            if event == "start":
                depth += 1
                continue
            depth -= 1
            name = _local(element.tag)
            if name == "RDF":
                meta = _from_rdf(element)
                if meta is not None:
                    return meta if meta.title or not svg_title else _with_title(meta, svg_title)
            elif name == "title" and depth == 1 and svg_title is None:
                svg_title = _clean(_text(element))  # <svg><title>: a fallback title
            elif name == "metadata" and depth == 1 and svg_title:
                return SvgMeta(title=svg_title)
    except (ParseError, DefusedXmlException, ValueError, LookupError):
        # cut at max_bytes, not XML, or declares entities (refused): what was seen counts
        pass
    return SvgMeta(title=svg_title) if svg_title else None


def _with_title(meta: SvgMeta, title: str) -> SvgMeta:
    return SvgMeta(title, meta.description, meta.keywords, meta.creator, meta.license)


def _from_rdf(rdf: Element) -> SvgMeta | None:
    works = [child for child in rdf if _local(child.tag) == "Work"]
    if not works:
        return None
    work = works[0]
    fields: dict[str, Element] = {}
    for child in work:
        fields.setdefault(_local(child.tag), child)
    license_uri = _license(fields.get("license"))
    if license_uri is None:  # the licence's own description, beside the work
        licences = [c for c in rdf if _local(c.tag) == "License"]
        license_uri = _clean(_resource(licences[0], "about")) if licences else None
    return SvgMeta(
        title=_clean(_text(fields.get("title"))),
        description=_clean(_text(fields.get("description"))),
        keywords=_keywords(fields.get("subject")),
        creator=_agent(fields.get("creator")),
        license=license_uri,
    )


def _text(element: Element | None) -> str | None:
    """All text inside `element` (a plain value or an rdf:Alt/rdf:li wrapped one)."""
    if element is None:
        return None
    return " ".join(element.itertext())


def _resource(element: Element, name: str) -> str | None:
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return None


def _license(element: Element | None) -> str | None:
    if element is None:
        return None
    return _clean(_resource(element, "resource") or _text(element))


def _agent(element: Element | None) -> str | None:
    """dc:creator as `<cc:Agent><dc:title>NAME</dc:title></cc:Agent>` or as plain text."""
    if element is None:
        return None
    for node in element.iter():
        if node is not element and _local(node.tag) == "title":
            return _clean(_text(node))
    return _clean(_text(element))


def _keywords(subject: Element | None) -> tuple[str, ...]:
    """dc:subject's rdf:li items (or its text), split at commas and semicolons, de-duplicated
    (case-insensitively, first spelling kept)."""
    if subject is None:
        return ()
    items = [node.text or "" for node in subject.iter() if _local(node.tag) == "li"]
    if not items:
        items = [_text(subject) or ""]
    keywords: list[str] = []
    seen: set[str] = set()
    for item in items:
        for part in re.split(r"[,;]", html.unescape(item)):  # "&amp;" is no separator
            keyword = _clean(part, unescape=False)
            if keyword and len(keyword) <= MAX_KEYWORD_CHARS and keyword.lower() not in seen:
                seen.add(keyword.lower())
                keywords.append(keyword)
    return tuple(keywords[:MAX_KEYWORDS])


def _clean(text: str | None, limit: int = MAX_FIELD_CHARS, unescape: bool = True) -> str | None:
    """Entities unescaped (a title written as `Caf&amp;eacute;` is Café), Windows-1252 text
    mislabelled as Latin-1 repaired, other control characters dropped, whitespace collapsed,
    cut at `limit` characters; None when nothing is left."""
    if not text:
        return None
    if unescape:
        text = html.unescape(text)
    if _C1.search(text):
        try:  # "Mikol\xe1\x9a Ale\x9a" was "Mikoláš Aleš" in Windows-1252
            text = text.encode("latin-1").decode("cp1252")
        except UnicodeError:
            text = _C1.sub("", text)
    text = _WHITESPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[:limit].rstrip()
    return text or None


def stem_words(stem: str) -> str:
    """A file name's words: `metal_cage_kurt_nordstro_01` -> "metal cage kurt nordstro 01"."""
    return _WHITESPACE.sub(" ", _STEM_SEPARATORS.sub(" ", stem)).strip() or stem


def boilerplate_title(meta: SvgMeta | None, stem: str, kinds: Iterable[str]) -> bool:
    """Whether an SVG's title says nothing about which drawing the file is, so that its caption
    must not decide the split (split.py keys such an item by its image bytes instead).

    True when its caption `kinds` (caption_kinds.py) say the title is the creator's name or
    "Clipart by NAME", a file-like string, or missing (the caption fell back to the file name);
    or when the title shares no word of three letters or more with the file's name (`stem`):
    a series, collection or tool title that was put on many files, such as "gramastar" on
    1,375 different stars (`star_05pt02step.svg`, ...) or "Part of the Flat Icon Collection
    (...)" on hundreds of icons in Open Clip Art, where the file name is the drawing's own.
    Keywords are not looked at: such series share their keywords too. A file's own title
    unrelated to its name (`agent.svg`, "Owl") is taken for boilerplate as well, which costs
    little: a caption no other item has is a group of one either way, and a real title on
    files named otherwise ("card" on the 54 `bordered_*.svg` of one deck) is most often a
    series too.
    """
    if BOILERPLATE_TITLE_KINDS.intersection(kinds):
        return True
    title = (meta.title if meta else None) or ""
    title_words = set(_NAME_WORD.findall(title.casefold()))
    return bool(title_words) and title_words.isdisjoint(_NAME_WORD.findall(stem.casefold()))


def check_caption_mode(mode: str) -> None:
    """ValueError naming the choices for a mode that is not one of CAPTION_MODES."""
    if mode not in CAPTION_MODES:
        raise ValueError(f"Unknown --caption {mode!r}; use {' | '.join(CAPTION_MODES)}.")


def svg_caption(meta: SvgMeta | None, stem: str, mode: str = DEFAULT_CAPTION) -> str:
    """The caption of an SVG: its title (else its file name's words), and by `mode` its
    description (when it says more than the title) or its keywords, joined with ", "."""
    check_caption_mode(mode)
    meta = meta or SvgMeta()
    title = meta.title or stem_words(stem)
    if mode == "title+description":
        description = meta.description
        if description and not _same(description, title):
            return _join(title, description)
    elif mode == "title+keywords":
        keywords = [k for k in meta.keywords if not _same(k, title)]
        if keywords:
            return _join(title, ", ".join(keywords))
    return title


def _same(a: str, b: str) -> bool:
    return a.casefold().strip(_PUNCTUATION) == b.casefold().strip(_PUNCTUATION)


def _join(title: str, rest: str) -> str:
    return f"{title} {rest}" if title.endswith((".", "!", "?", ":")) else f"{title}. {rest}"


def keyword_labels(meta: SvgMeta | None) -> tuple[str, ...]:
    """The keywords as labels: lower-cased and trimmed, once each."""
    if meta is None:
        return ()
    return tuple(dict.fromkeys(k.lower().strip() for k in meta.keywords if k.strip()))

"""What kind of caption an item's own metadata gave it: the natural noise of a corpus like Open
Clip Art, named so that a report can show what the gate does with each kind.

Kinds (an item may have several): `english-title`, `non-english-title`, `name-title` (the
title is the creator's name, or "Clipart by NAME"), `file-title` (a file-like string:
underscores, an extension, a word glued to digits), `no-title` (the
caption fell back to the file name); and `empty-description` (none, or a copy of the title),
`rich-keywords` (at least RICH_KEYWORDS keywords that are not the title). Heuristics, written
for the report, not for filtering: the language test counts function words of English against
those of Italian, Spanish, French, German and Portuguese, and accented letters.
"""

from __future__ import annotations

import re

from .svgmeta import SvgMeta

RICH_KEYWORDS = 4
CAPTION_KINDS = (
    "english-title",
    "non-english-title",
    "name-title",
    "file-title",
    "no-title",
    "empty-description",
    "rich-keywords",
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ENGLISH = _words(
    "the a an of and with in on for to at by from is are man woman boy girl old new red blue "
    "green black white yellow big small little icon"
)
# Italian, Spanish, French, German, Portuguese function words (not also English words)
_OTHER = _words(
    "il lo la le gli dei della delle degli di da con per una uno che nel nella sul sulla el "
    "los las del al y por para un es en les des du au aux et avec pour une est sur dans der die "
    "das den dem des und mit für ein eine auf im ist o os as do dos em um uma com não"
)
_ACCENTED = re.compile(r"[à-öø-ÿÀ-ÖØ-ßœŒ]")
_FILE_LIKE = re.compile(r"_|\.(svg|png|jpe?g|ai|eps|gif)\b|[A-Za-z]{2,}\d{2,}|^\d+$", re.I)
_BY_NAME = re.compile(r"\b(clip ?art|drawn|made) by\b", re.I)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def caption_kinds(meta: SvgMeta | None) -> list[str]:
    """The kinds of the caption an SVG's metadata gives it (see the module docstring)."""
    meta = meta or SvgMeta()
    kinds = [_title_kind(meta)]
    description = (meta.description or "").strip()
    if not description or _same(description, meta.title or ""):
        kinds.append("empty-description")
    keywords = [k for k in meta.keywords if not _same(k, meta.title or "")]
    if len(keywords) >= RICH_KEYWORDS:
        kinds.append("rich-keywords")
    return kinds


def _title_kind(meta: SvgMeta) -> str:
    title = (meta.title or "").strip()
    if not title:
        return "no-title"
    creator = (meta.creator or "").strip()
    if _BY_NAME.search(title) or (creator and creator.casefold() in title.casefold()):
        return "name-title"
    if _FILE_LIKE.search(title):
        return "file-title"
    return "non-english-title" if _looks_foreign(title) else "english-title"


def _looks_foreign(title: str) -> bool:
    words = [w.casefold() for w in _WORD.findall(title)]
    other = sum(w in _OTHER for w in words)
    english = sum(w in _ENGLISH for w in words)
    return other > english or (english == 0 and bool(_ACCENTED.search(title)))


def _same(a: str, b: str) -> bool:
    return a.casefold().strip(" .,;:!?") == b.casefold().strip(" .,;:!?")

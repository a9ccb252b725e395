"""A folder of images with same-named `.txt` captions (the Tux Paint stamps layout).

`animals/birds/penguin.png` + `animals/birds/penguin.txt` ("A penguin.\\nfr.utf8=...") is one
item: key `animals/birds/penguin.png`, text "A penguin.", labels ("animals", "animals/birds").

An SVG without a caption file takes its caption from its own metadata (the Open Clip Art layout,
see svgmeta.py): by `caption`, its title alone, with its description, or with its keywords; its
keywords join its labels, its creator and licence its payload. When its title is boilerplate
(svgmeta.boilerplate_title) it is marked `split_by: image`: its split is drawn from its image
bytes, not its caption (split.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from jointspace.corpus.caption_kinds import caption_kinds
from jointspace.corpus.item import MAX_CAPTION_BYTES, Item, Skipped, cut_caption, limit_caption
from jointspace.corpus.split import BY_IMAGE, SPLIT_BY
from jointspace.corpus.svgmeta import (
    DEFAULT_CAPTION,
    SvgMeta,
    boilerplate_title,
    check_caption_mode,
    keyword_labels,
    read_svg_meta,
    svg_caption,
)
from jointspace.errors import JointspaceError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".svg"})
CAPTION_SUFFIX = ".txt"
# A caption is one short line; reading at most this much keeps a stray huge .txt harmless. The
# slack leaves room for a byte-order mark and a line end, so that a longer line is known to be.
_READ_CAPTION_LINE = MAX_CAPTION_BYTES + 8
_BOM = b"\xef\xbb\xbf"


class _CaptionError(Exception):
    """A caption file exists but cannot be used: the item's skip reason and the file."""

    def __init__(self, reason: str, path: Path) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = str(path)


def read_folder(root: Path, caption: str = DEFAULT_CAPTION) -> Iterator[Item | Skipped]:
    """Yield one Item per image below `root` (or Skipped), in a deterministic order.

    Streams: one directory listing in memory at a time. Hidden folders and files are ignored;
    a folder that cannot be listed becomes one Skipped record. `caption` says what an SVG
    without a caption file is captioned with (svgmeta.CAPTION_MODES); a bad run when unknown.
    """
    try:
        check_caption_mode(caption)
    except ValueError as e:
        raise JointspaceError(str(e)) from None
    return _read_folder(Path(root), caption)


def _read_folder(root: Path, caption: str) -> Iterator[Item | Skipped]:
    root = root.resolve()
    source = str(root)
    unreadable: list[OSError] = []
    # os.walk drops unreadable folders silently unless told otherwise: collect them to report.
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append):
        # Sorting in place makes os.walk descend in sorted order; hidden folders (.git,
        # .thumbnails) are tooling, not corpus.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield from _unreadable_folders(root, source, unreadable)
        yield from _read_directory(root, source, Path(dirpath), filenames, caption)
    yield from _unreadable_folders(root, source, unreadable)


def _unreadable_folders(root: Path, source: str, errors: list[OSError]) -> Iterator[Skipped]:
    while errors:
        error = errors.pop(0)
        path = Path(error.filename or root)
        folder = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        reason = f"folder could not be read ({_os_reason(error)})"
        yield Skipped(source, _printable(folder), reason, _printable(str(path)))


def _read_directory(
    root: Path, source: str, directory: Path, filenames: list[str], caption: str
) -> Iterator[Item | Skipped]:
    captions = _Captions(filenames)
    folder = directory.relative_to(root).as_posix()
    labels = _labels(folder)
    for name in sorted(filenames):
        if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        stem = Path(name).stem
        key = name if folder == "." else f"{folder}/{name}"
        image = str(directory / name)
        if _printable(key) != key:
            # os.walk smuggles undecodable bytes in as surrogates, which no JSON payload,
            # errors file or store accepts.
            reason = "file name is not valid utf-8"
            yield Skipped(source, _printable(key), reason, _printable(image))
            continue
        try:
            text, truncated = _caption(directory, stem, captions)
        except _CaptionError as e:
            yield Skipped(source, key, e.reason, e.path)
            continue
        extra, item_labels = {"name": stem}, labels
        if name.lower().endswith(".svg") and _caption_name(stem, captions) is None:
            # an SVG without a caption file (a caption file wins, even an empty one)
            meta = read_svg_meta(directory / name)
            text, truncated = limit_caption(svg_caption(meta, stem, caption))
            item_labels += tuple(k for k in keyword_labels(meta) if k not in labels)
            kinds = caption_kinds(meta)
            extra |= _svg_payload(meta) | {"caption_kinds": kinds}
            if boilerplate_title(meta, stem, kinds):
                extra[SPLIT_BY] = BY_IMAGE
        yield Item(
            source=source,
            key=key,
            image=image,
            text=text,
            labels=item_labels,
            extra=extra,
            group=_group(folder, stem),
            locator=image,
            truncated=truncated,
        )


def _svg_payload(meta: SvgMeta | None) -> dict[str, str]:
    """An SVG's creator and licence, as payload fields (those it names)."""
    if meta is None:
        return {}
    fields = {"creator": meta.creator, "license": meta.license}
    return {k: v for k, v in fields.items() if v}


def _group(folder: str, stem: str) -> str:
    """Renderings of one picture share a group, so none of them leaks across splits: the same
    stem in another format (`penguin.png`, `penguin.svg`) and a Tux Paint mirror variant
    (`penguin_mirror.png`)."""
    base = stem.removesuffix("_mirror")
    return base if folder == "." else f"{folder}/{base}"


def _os_reason(error: OSError) -> str:
    return str(error.strerror or error).lower()


def _printable(name: str) -> str:
    """`name` with undecodable bytes (surrogate escapes) shown as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _labels(folder: str) -> tuple[str, ...]:
    """(top folder, full folder path), once each; () for images at the root."""
    if folder == ".":
        return ()
    top = folder.split("/", 1)[0]
    return (top,) if top == folder else (top, folder)


class _Captions:
    """The caption files of one directory.

    Matching is case-insensitive because cameras and some tools write upper-case suffixes
    (IMG_1.JPG + IMG_1.TXT); an exact match wins over a case-insensitive one.
    """

    def __init__(self, filenames: list[str]) -> None:
        self._names = {n for n in filenames if n.lower().endswith(CAPTION_SUFFIX)}
        self._by_lower: dict[str, str] = {}
        for name in sorted(self._names):
            self._by_lower.setdefault(name.lower(), name)

    def find(self, stem: str) -> str | None:
        exact = stem + CAPTION_SUFFIX
        return exact if exact in self._names else self._by_lower.get(exact.lower())


def _caption_name(stem: str, captions: _Captions) -> str | None:
    # a Tux Paint mirror variant (penguin_mirror.png) is the same picture: it has no caption
    # file of its own and takes the original's
    return captions.find(stem) or captions.find(stem.removesuffix("_mirror"))


def _caption(directory: Path, stem: str, captions: _Captions) -> tuple[str | None, bool]:
    """The first line of the image's caption file, stripped (None when there is none), and
    whether it was cut to MAX_CAPTION_BYTES."""
    caption_name = _caption_name(stem, captions)
    if caption_name is None:
        return None, False
    path = directory / caption_name
    try:
        with path.open("rb") as f:
            line = f.readline(_READ_CAPTION_LINE)
    except OSError as e:
        raise _CaptionError(f"caption file could not be read ({_os_reason(e)})", path) from None
    # editors on Windows often start the file with a byte-order mark
    line = line.removeprefix(_BOM).removesuffix(b"\n").removesuffix(b"\r")
    truncated = len(line) > MAX_CAPTION_BYTES
    try:
        text = cut_caption(line[:MAX_CAPTION_BYTES]) if truncated else line.decode("utf-8")
    except UnicodeDecodeError:
        raise _CaptionError("caption is not valid utf-8", path) from None
    return text.strip() or None, truncated

"""WebDataset tar shards: samples of adjacent members that share a key.

`000123.jpg` + `000123.txt` (or `000123.json` with a "caption" or "text" field) in a shard is one
item: key "000123" (the member name up to the first dot of its basename), the image's bytes in
`image_bytes`, the JSON's "label" and "labels" (a string, `a|b`, a number or a list of them) in
`labels`, its other fields in `extra`. Each shard is its own `source` (its resolved path), so
point ids do not depend on how the shards were named (file, folder or pattern).

Shards are read as streams (tarfile mode "r|*", gzip and friends included): one sample's bytes
in memory at a time, nothing extracted to disk, so member names such as `../../x.jpg` are
harmless. Like WebDataset, a key that comes back later in a shard is not noticed: it is another
sample with the same key.
"""

from __future__ import annotations

import json
import math
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from jointspace.corpus.images import MAX_IMAGE_BYTES
from jointspace.corpus.item import Item, Skipped, limit_caption
from jointspace.corpus.shards import shard_paths

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp"})
MAX_TEXT_BYTES = 1024 * 1024
# WebDataset's split of a member name: key = folders + basename up to its first dot.
# Hidden members (a dot first, e.g. macOS "._x.jpg") are skipped, as folders skip them.
_KEY_EXT = re.compile(r"^((?:.*/)?[^./][^./]*)\.([^/]*)$")
_CAPTION_FIELDS = ("caption", "text")
_LABEL_FIELDS = ("label", "labels")
_STREAM_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


@dataclass
class _Sample:
    """The members of one sample read so far (their bytes) or why it cannot be an item."""

    key: str
    first_member: str
    parts: dict[str, bytes] = field(default_factory=dict)
    image_member: str | None = None
    problem: str | None = None


def read_webdataset(path: Path) -> Iterator[Item | Skipped]:
    """Yield one Item (or Skipped) per sample of the shards `path` names, in shard order.

    `path`: a .tar shard, a folder of shards or a brace pattern (`shards/{00000..00009}.tar`).
    Raises JointspaceError when it names no shard; a shard that cannot be read or is cut short
    yields a Skipped record and the run goes on with the next shard.
    """
    shards = shard_paths(Path(path))
    return (record for shard in shards for record in _read_shard(shard))


def _read_shard(shard: Path) -> Iterator[Item | Skipped]:
    source = str(shard.resolve())
    try:
        f = shard.open("rb")
    except OSError as e:
        yield Skipped(source, shard.name, f"shard could not be read ({_detail(e)})", source)
        return
    sample: _Sample | None = None
    member_name: str | None = None  # the last member read, where a corrupt shard broke off
    started = False  # whether a member header was read: before that, it is not a tar at all
    try:
        with f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                started = True
                member_name = member.name
                split = _key_ext(member)
                if split is None:
                    continue
                key, ext = split
                if sample is not None and sample.key != key:
                    yield _to_record(source, sample)
                    sample = None
                sample = sample or _Sample(key, member.name)
                _add_member(sample, tar, member, ext)
    except _STREAM_ERRORS as e:
        if not started:
            yield Skipped(source, shard.name, f"not a tar file ({_detail(e)})", source)
        else:
            reason = f"tar shard is corrupt or cut short ({_detail(e)}); the rest is skipped"
            where = f"member {member_name}" if member_name else source
            yield Skipped(source, sample.key if sample else shard.name, reason, where)
        return
    if sample is not None:
        yield _to_record(source, sample)


def _detail(error: BaseException) -> str:
    detail = " ".join(str(getattr(error, "strerror", None) or error).split()).lower()
    return detail[:80] or type(error).__name__.lower()


def _key_ext(member: tarfile.TarInfo) -> tuple[str, str] | None:
    """(key, lowercase extension) of a regular file member; None for anything else."""
    if not member.isfile():
        return None
    match = _KEY_EXT.match(member.name)
    if match is None:
        return None
    return match.group(1), match.group(2).lower()


def _add_member(sample: _Sample, tar: tarfile.TarFile, member: tarfile.TarInfo, ext: str) -> None:
    if sample.problem is not None:
        return
    is_image = ext in IMAGE_EXTENSIONS
    if not is_image and ext not in ("txt", "json"):
        return  # other fields (.cls, .npy, ...) are not ours to read
    if is_image and sample.image_member is not None:
        sample.problem = f"sample has more than one image ({sample.image_member}, {member.name})"
        return
    if ext in sample.parts:
        sample.problem = f"sample has two {ext} members ({member.name})"
        return
    limit = MAX_IMAGE_BYTES if is_image else MAX_TEXT_BYTES
    if member.size > limit:
        kind = "image file" if is_image else f"{ext} file"
        sample.problem = f"{kind} too large ({member.size} bytes, limit {limit})"
        return  # never read: the stream skips over it
    sample.parts[ext] = _read(tar.extractfile(member))
    if is_image:
        sample.image_member = member.name


def _read(f: IO[bytes] | None) -> bytes:
    return f.read() if f is not None else b""


def _to_record(source: str, sample: _Sample) -> Item | Skipped:
    locator = f"member {sample.image_member or sample.first_member}"
    if sample.problem is not None:
        return Skipped(source, sample.key, sample.problem, locator)
    parts = sample.parts
    image = next((parts[e] for e in parts if e in IMAGE_EXTENSIONS), None)
    try:
        text = _text(parts["txt"]) if "txt" in parts else None
        fields = _json_object(parts["json"]) if "json" in parts else {}
    except ValueError as e:
        return Skipped(source, sample.key, str(e), locator)
    if text is None:
        text = next((c for f in _CAPTION_FIELDS if (c := _caption(fields.get(f)))), None)
    if image is None and text is None:
        return Skipped(source, sample.key, "sample has neither image nor text", locator)
    text, truncated = limit_caption(text) if text is not None else (None, False)
    not_extra = _CAPTION_FIELDS + _LABEL_FIELDS
    extra = {k: v for k, v in fields.items() if k not in not_extra}
    if sample.image_member is not None:
        extra["image_member"] = sample.image_member
    return Item(
        source=source,
        key=sample.key,
        text=text,
        image_bytes=image,
        labels=_labels(fields.get(f) for f in _LABEL_FIELDS),
        extra=extra,
        locator=locator,
        truncated=truncated,
    )


def _labels(values: Iterable[Any]) -> tuple[str, ...]:
    """Labels from "label" and "labels": each a string (`a|b` for several), a number, or a list
    of those; once each, in order."""
    labels: list[str] = []
    for value in values:
        for part in value if isinstance(value, list) else [value]:
            if isinstance(part, str):
                labels += (p.strip() for p in part.split("|"))
            elif isinstance(part, int) and not isinstance(part, bool):
                labels.append(str(part))
            elif isinstance(part, float) and math.isfinite(part):
                labels.append(str(int(part)) if part.is_integer() else str(part))
    return tuple(dict.fromkeys(label for label in labels if label))


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8-sig").strip() or None
    except UnicodeDecodeError:
        raise ValueError("caption is not valid utf-8") from None


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("sample json is not valid json") from None
    if not isinstance(value, dict):
        raise ValueError("sample json is not a json object")
    return value


def _caption(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None

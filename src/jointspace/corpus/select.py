"""Which records a run reads: several sources chained, a deterministic split, a shard, a limit."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import JointspaceError
from .item import Item, Skipped
from .shards import is_shard_folder
from .split import SPLITS, split_of


@dataclass(frozen=True)
class SourceOptions:
    """How to read the sources: the format and the reader options (None = the format's
    default; an option the format does not take is a bad run)."""

    format: str = "auto"
    image_column: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    images_dir: Path | None = None
    captions: str | None = None
    karpathy_split: str | None = None
    image_encoding: str | None = None
    text_only: bool = False
    image_only: bool = False
    caption: str | None = None  # folder SVGs without a .txt: svgmeta.CAPTION_MODES

    def reader_options(self) -> dict[str, Any]:
        return {
            "image_column": self.image_column,
            "text_column": self.text_column,
            "label_column": self.label_column,
            "images_dir": self.images_dir,
            "captions": self.captions,
            "split": self.karpathy_split,
            "image_encoding": self.image_encoding,
            "text_only": self.text_only,
            "image_only": self.image_only,
            "caption": self.caption,
        }


def read_sources(
    sources: Sequence[str | Path], options: SourceOptions | None = None
) -> Iterator[Item | Skipped]:
    """The records of every source, one after the other. Every source is opened before the
    first record is read, so a missing source or a bad format fails before any work starts."""
    from .readers import read_corpus

    options = options or SourceOptions()
    if not sources:
        raise JointspaceError("Give at least one source (a folder or a manifest).")
    streams = [
        read_corpus(Path(source), options.format, **options.reader_options()) for source in sources
    ]
    return itertools.chain.from_iterable(streams)


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """`I/N` as (I, N); a bad run when it is not 0 <= I < N."""
    if shard is None:
        return None
    index, _, count = shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise JointspaceError(f"--shard {shard!r} is not I/N with 0 <= I < N (e.g. 0/4).")
    return int(index), int(count)


def in_shard(records: Iterable[Item | Skipped], shard: str | None) -> Iterator[Item | Skipped]:
    """The slice `I/N` of the records (by a hash of each item's point id): N machines given
    0/N … N-1/N ingest disjoint parts that together are the whole corpus."""
    parsed = parse_shard(shard)
    if parsed is None:
        yield from records
        return
    index, count = parsed
    for record in records:
        key = record.point_id if isinstance(record, Item) else f"{record.source}\x00{record.key}"
        if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % count == index:
            yield record


def check_split(split: str, allow_all: bool = True) -> None:
    """A bad run for a split name that is not train, val, test (or all)."""
    names = (("all",) if allow_all else ()) + SPLITS
    if split not in names:
        raise JointspaceError(f"Unknown split {split!r}; use {', '.join(names)}.")


def only_split(records: Iterable[Item | Skipped], split: str) -> Iterator[Item | Skipped]:
    """The items of one deterministic split ("all": every record)."""
    check_split(split)
    if split == "all":
        yield from records
        return
    for record in records:
        if isinstance(record, Item) and split_of(record.split_key) == split:
            yield record


def count_hint(sources: Sequence[str | Path]) -> int | None:
    """Number of items when it is cheap to know, else None (for progress totals and ETAs):
    folders count their image files, CSV/TSV their lines less the header, JSONL its lines (a
    byte scan, so a quoted cell with line breaks or a blank line counts one too many), Parquet
    the row count in its footer. COCO, Karpathy and WebDataset sources: None."""
    total = 0
    for source in map(Path, sources):
        if source.is_dir():
            count = None if is_shard_folder(source) else _folder_count(source)
        else:
            count = _manifest_rows(source)
        if count is None:
            return None
        total += count
    return total


def _folder_count(folder: Path) -> int:
    from .folder import IMAGE_SUFFIXES

    return sum(
        sum(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files)
        for _, _, files in os.walk(folder)
    )


_LINE_MANIFESTS = {".csv": 1, ".tsv": 1, ".jsonl": 0, ".ndjson": 0}  # suffix: header lines
_SCAN_BLOCK = 4 << 20


def _manifest_rows(path: Path) -> int | None:
    """The data rows of a CSV, TSV, JSONL or Parquet manifest, cheaply; None for any other
    file, or one that cannot be read (the reader says why)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        if suffix in _LINE_MANIFESTS:
            return max(0, _count_lines(path) - _LINE_MANIFESTS[suffix])
    except Exception:  # only a hint: the reader reports what is wrong
        return None
    return None


def _count_lines(path: Path) -> int:
    """Lines in a file (a last line without a line end counts), by a block-wise byte scan."""
    lines, last = 0, b"\n"
    with path.open("rb") as file:
        for block in iter(lambda: file.read(_SCAN_BLOCK), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")

"""One entry point for every corpus format: detect the format, pick its reader, stream records.

A new format is one function and one entry in READERS. Readers check their source and options
when called (a bad run fails before any work starts) and return a lazy stream of records.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from jointspace.corpus.coco import read_coco
from jointspace.corpus.folder import read_folder
from jointspace.corpus.item import Item, Skipped
from jointspace.corpus.jsonhead import read_json_head
from jointspace.corpus.karpathy import read_karpathy
from jointspace.corpus.manifest import read_manifest
from jointspace.corpus.shards import is_brace_pattern, is_shard_folder, is_shard_name
from jointspace.corpus.webdataset import read_webdataset
from jointspace.errors import JointspaceError

Reader = Callable[..., Iterator[Item | Skipped]]

READERS: dict[str, Reader] = {
    "folder": read_folder,
    "csv": partial(read_manifest, format="csv"),
    "tsv": partial(read_manifest, format="tsv"),
    "jsonl": partial(read_manifest, format="jsonl"),
    "parquet": partial(read_manifest, format="parquet"),
    "coco": read_coco,
    "karpathy": read_karpathy,
    "webdataset": read_webdataset,
}

_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}


def _choices() -> str:
    return "|".join(READERS)


def detect_format(source: Path) -> str:
    """The format of `source`.

    A folder: "webdataset" if it holds .tar shards and neither images nor subfolders, else
    "folder". A brace pattern (`shards/{00000..00009}.tar`) or a .tar/.tar.gz/.tgz file:
    "webdataset". A .json file: "karpathy" if the first entry of its top-level "images" has
    "sentences", "coco" if its top level has "images" and "annotations" (or, when "annotations"
    lies beyond the first megabyte read, its first image has a "file_name"). Else by suffix.
    """
    source = Path(source)
    if source.is_dir():
        return "webdataset" if is_shard_folder(source) else "folder"
    if is_shard_name(source.name) or (not source.exists() and is_brace_pattern(source)):
        return "webdataset"
    if source.suffix.lower() == ".json":
        return _json_format(source)
    fmt = _SUFFIXES.get(source.suffix.lower())
    if fmt is None:
        raise JointspaceError(f"Cannot tell the format of {source}; pass --format {_choices()}")
    return fmt


def _json_format(source: Path) -> str:
    head = read_json_head(source)
    if head is not None and "images" in head.keys:
        if "sentences" in head.first_image_keys:
            return "karpathy"
        if "annotations" in head.keys:
            return "coco"
        if "file_name" in head.first_image_keys and not head.complete:
            return "coco"
    raise JointspaceError(
        f"Cannot tell the format of {source} (not COCO captions nor a Karpathy split file); "
        f"pass --format {_choices()}"
    )


def read_corpus(
    source: Path, format: str = "auto", **column_options: Any
) -> Iterator[Item | Skipped]:
    """Stream the records of `source` (Item, or Skipped for a bad record), in a stable order.

    `column_options` go to the format's reader (e.g. image_column="path" for manifests); options
    that are None or False (a switch left off, e.g. text_only) count as not given, so a CLI can
    pass all of its flags through. Raises JointspaceError for a missing source, an unknown format
    or options the format does not take.
    """
    source = Path(source)
    # A shard pattern names files without being one; the webdataset reader checks them.
    pattern = format in ("auto", "webdataset") and is_brace_pattern(source)
    if not source.exists() and not pattern:
        raise JointspaceError(f"No such file or folder: {source}")
    fmt = detect_format(source) if format == "auto" else format
    reader = READERS.get(fmt)
    if reader is None:
        raise JointspaceError(f"Unknown format {fmt!r}; pass --format {_choices()}")
    if fmt == "folder" and not source.is_dir():
        raise JointspaceError(f"{source} is not a folder; pass the folder of images and captions.")
    options = {k: v for k, v in column_options.items() if v is not None and v is not False}
    _check_options(reader, fmt, options)
    return reader(source, **options)


def _check_options(reader: Reader, fmt: str, options: dict[str, Any]) -> None:
    """A bad run, not a TypeError, when an option does not apply to the format."""
    accepted = inspect.signature(reader).parameters
    for name in options:
        if name not in accepted or name == "format":
            flag = "--" + name.replace("_", "-")
            raise JointspaceError(f"The {fmt} format takes no {flag} option; drop it.")

"""Which tar shards a WebDataset source names: one file, a folder of them, or a brace pattern.

`shards/{00000..00009}.tar` is ten files (zero-padding kept, as in bash and WebDataset);
`{a,b}` lists alternatives; several groups multiply out, left to right.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

from jointspace.corpus.folder import IMAGE_SUFFIXES
from jointspace.errors import JointspaceError

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
MAX_SHARDS = 100_000
_GROUP = re.compile(r"\{(\d+)\.\.(\d+)\}|\{([^{},]*(?:,[^{},]*)+)\}")


def is_shard_name(name: str) -> bool:
    """Whether a file name is a tar shard's (.tar, .tar.gz, .tgz)."""
    return name.lower().endswith(SHARD_SUFFIXES)


def is_brace_pattern(source: str | os.PathLike[str]) -> bool:
    """Whether `source` holds a `{a..b}` range or an `{a,b}` list."""
    return _GROUP.search(os.fspath(source)) is not None


def expand_braces(pattern: str) -> list[str]:
    """Every name `pattern` stands for, in order: `{8..10}` -> 8, 9, 10; `{08..10}` -> 08, 09,
    10; `{a,b}` -> a, b. Raises JointspaceError past MAX_SHARDS names."""
    names = list(itertools.islice(_expand(pattern), MAX_SHARDS + 1))
    if len(names) > MAX_SHARDS:
        raise JointspaceError(f"The pattern {pattern} names over {MAX_SHARDS} shards; narrow it.")
    return list(dict.fromkeys(names))


def _expand(pattern: str) -> Iterator[str]:
    match = _GROUP.search(pattern)
    if match is None:
        yield pattern
        return
    head, tail = pattern[: match.start()], pattern[match.end() :]
    for alternative in _alternatives(match):
        for rest in _expand(tail):
            yield head + alternative + rest


def _alternatives(match: re.Match[str]) -> Iterator[str]:
    if match.group(3) is not None:
        yield from match.group(3).split(",")
        return
    first, last = match.group(1), match.group(2)
    padded = any(len(b) > 1 and b.startswith("0") for b in (first, last))
    width = max(len(first), len(last)) if padded else 0
    start, stop = int(first), int(last)
    step = 1 if stop >= start else -1
    for number in range(start, stop + step, step):
        yield str(number).zfill(width)


def shard_paths(source: Path) -> list[Path]:
    """The shards of `source`: the file itself, the shard files in a folder (sorted, not
    recursive), or the files a brace pattern names. Raises JointspaceError when there are none,
    or when some files of a pattern are missing."""
    source = Path(source)
    if source.is_dir():
        shards = sorted(p for p in source.iterdir() if is_shard_name(p.name) and p.is_file())
        if not shards:
            raise JointspaceError(f"{source} holds no .tar shards; pass a shard or a folder.")
        return shards
    if source.exists() or not is_brace_pattern(source):
        if not source.is_file():
            raise JointspaceError(f"No such file or folder: {source}")
        return [source]
    shards = [Path(name) for name in expand_braces(os.fspath(source))]
    missing = [p for p in shards if not p.is_file()]
    if len(missing) == len(shards):
        raise JointspaceError(f"No file matches the shard pattern {source}; check the pattern.")
    if missing:
        raise JointspaceError(
            f"{len(missing)} of the {len(shards)} shards of {source} are missing "
            f"(first: {missing[0]}); fix the pattern or fetch them."
        )
    return shards


def is_shard_folder(folder: Path) -> bool:
    """Whether `folder` looks like a folder of WebDataset shards: shard files directly in it,
    and neither image files nor subfolders (those make it an image folder)."""
    found = False
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir() or Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                    return False
                found = found or is_shard_name(entry.name)
    except OSError:
        return False
    return found

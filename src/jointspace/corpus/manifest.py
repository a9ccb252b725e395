"""Manifests: one row per item in a CSV, TSV, JSONL or Parquet file.

Rows are read in chunks, so memory stays flat however long the manifest is. Columns (names are
options): `image` (a path relative to the manifest's folder, an absolute path or an http(s) URL;
inline image bytes: in Parquet a binary cell or a Hugging Face `{"bytes", "path"}` struct, in any
format a `data:image/...;base64,` URI, or base64 text with image_encoding="base64"), `text`,
`label` (optional; one label or `a|b|c`; a list in JSONL and Parquet), `id` (optional, the item
key). Every other column is kept in `item.extra`. A manifest needs both an image and a text
column, unless it is read with text_only=True (texts only; an image column is then ignored) or
image_only=True (the other way round): a missing column is far more often a misnamed one than a
wish for one modality.

Without an id column the key is a short SHA-256 of the image cell and the text, so it does not
change when rows are reordered or the manifest grows — but rows with the same image and text get
the same key and collapse into one item (one point in the store).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from jointspace.corpus.item import Item, Skipped, limit_caption
from jointspace.errors import JointspaceError

DEFAULT_CHUNKSIZE = 10_000
_DEFAULTS = {"image": "image", "text": "text", "label": "label", "key": "id"}
_OPTION_NAMES = {
    "image": "--image-column",
    "text": "--text-column",
    "label": "--label",
    "key": "--key-column",
}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DATA_URI = re.compile(r"^data:([^,]*),", re.IGNORECASE)
IMAGE_ENCODINGS = ("base64",)
_URLSAFE = str.maketrans("-_", "+/")
_BAD_LINE = re.compile(r"Skipping line (\d+): ([^\n]*)")
# pandas decodes CSV with errors="replace": a strict decode error would abort the whole read,
# and surrogate escapes do not survive pandas' string dtype. A replacement character in a cell
# therefore marks a row that was not valid UTF-8.
_REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class _Columns:
    """The manifest's columns for each role; None where the manifest has no such column."""

    image: str | None
    text: str | None
    label: str | None
    key: str | None
    ignored: str | None = None  # the image column of a text_only read, or the other way round

    @property
    def roles(self) -> frozenset[str]:
        columns = (self.image, self.text, self.label, self.key, self.ignored)
        return frozenset(c for c in columns if c)


@dataclass(frozen=True)
class _Context:
    source: str
    folder: Path
    columns: _Columns
    check_utf8: bool
    image_encoding: str | None = None


class _BadCell(ValueError):
    """A cell that cannot be used; the message is the row's skip reason."""


def read_manifest(
    path: Path,
    format: str,
    *,
    image_column: str = "image",
    text_column: str = "text",
    label_column: str = "label",
    key_column: str = "id",
    image_encoding: str | None = None,
    text_only: bool = False,
    image_only: bool = False,
    chunksize: int = DEFAULT_CHUNKSIZE,
) -> Iterator[Item | Skipped]:
    """Yield one Item (or Skipped) per row of a csv, tsv, jsonl or parquet manifest, in order.

    Image cells that are `data:` URIs are decoded to `image_bytes` in any case; with
    image_encoding="base64" every text image cell is base64 of the image file. `text_only`:
    the manifest may lack an image column, and any image column is ignored; `image_only`: the
    same for the text column. Raises JointspaceError when the file cannot be read as that format
    or lacks the columns (the image or the text column included, unless told it may).
    """
    path = Path(path)
    if image_encoding is not None and image_encoding not in IMAGE_ENCODINGS:
        raise JointspaceError(
            f"Unknown --image-encoding {image_encoding!r}; use {'|'.join(IMAGE_ENCODINGS)}."
        )
    if text_only and image_only:
        raise JointspaceError("--text-only and --image-only exclude each other; pass one.")
    if not path.is_file():
        raise JointspaceError(f"{path} is not a file; a {format} manifest must be a file.")
    wanted = {"image": image_column, "text": text_column, "label": label_column, "key": key_column}
    rows: Iterator[tuple[str, dict[str, Any] | Skipped]]
    if format in ("csv", "tsv"):
        header, rows = _csv_rows(path, "\t" if format == "tsv" else ",", wanted, chunksize)
    elif format == "jsonl":
        header, rows = _jsonl_rows(path, chunksize)
    elif format == "parquet":
        header, rows = _parquet_rows(path, chunksize)
    else:
        raise JointspaceError(f"Unknown manifest format {format!r}; use csv, tsv, jsonl, parquet.")
    columns = _resolve_columns(path, header, wanted, text_only, image_only)
    resolved = path.resolve()
    context = _Context(str(resolved), resolved.parent, columns, format != "parquet", image_encoding)
    return _records(rows, context)


def _records(
    rows: Iterator[tuple[str, dict[str, Any] | Skipped]], context: _Context
) -> Iterator[Item | Skipped]:
    for position, row in rows:
        if isinstance(row, Skipped):
            yield Skipped(context.source, row.key, row.reason, position)
        else:
            yield _to_record(position, row, context)


def _resolve_columns(
    path: Path, header: Iterable[str], wanted: dict[str, str], text_only: bool, image_only: bool
) -> _Columns:
    """Map roles to columns; JointspaceError for a renamed column that is missing, and for a
    missing image or text column unless `text_only` or `image_only` allows it."""
    present = list(dict.fromkeys(header))
    listing = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "") or "none"
    for role, column in wanted.items():
        if column != _DEFAULTS[role] and column not in present:
            raise JointspaceError(
                f"{path} has no column {column!r} (columns: {listing}); "
                f"check the {_OPTION_NAMES[role]} option."
            )
    found = {role: (column if column in present else None) for role, column in wanted.items()}
    if found["image"] is None and found["text"] is None:
        raise JointspaceError(
            f"{path} has neither an {wanted['image']!r} nor a {wanted['text']!r} column "
            f"(columns: {listing}); name them with --image-column and --text-column."
        )
    dropped = {"image": text_only, "text": image_only}
    ignored = None
    for role, other in (("image", "text"), ("text", "image")):
        if dropped[role]:
            ignored, found[role] = found[role], None
        elif found[role] is None:
            hint = "" if dropped[other] else f", or pass --{other}-only to read the {other}s alone"
            raise JointspaceError(
                f"{path} has no {role} column {wanted[role]!r} (columns: {listing}); name it "
                f"with {_OPTION_NAMES[role]}{hint}."
            )
    return _Columns(**found, ignored=ignored)


# --- row sources: (position, row dict | Skipped) ---------------------------------------------


def _csv_rows(
    path: Path, sep: str, wanted: dict[str, str], chunksize: int
) -> tuple[list[str], Iterator[tuple[str, dict[str, Any] | Skipped]]]:
    # pandas is imported here: it is slow to import and folders never need it.
    import pandas as pd

    options: dict[str, Any] = {
        "sep": sep,
        "encoding": "utf-8",
        "encoding_errors": "replace",
        # Only an empty cell is missing: a caption that reads "NA" or "null" is still a caption.
        "keep_default_na": False,
        "na_values": [""],
    }
    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0, **options).columns]
    except pd.errors.EmptyDataError:
        raise JointspaceError(
            f"{path} is empty; a manifest needs a header row naming its columns."
        ) from None
    except (pd.errors.ParserError, ValueError, OSError) as e:
        raise JointspaceError(
            f"Cannot read {path} as {_kind(sep)} ({_short(e)}); check the file or pass --format."
        ) from None
    # Keys, paths, captions and labels stay strings ("007" is not 7); other columns are inferred.
    as_text = {c: str for c in wanted.values() if c in header}
    return header, _csv_chunks(path, {**options, "dtype": as_text}, chunksize)


def _csv_chunks(
    path: Path, options: dict[str, Any], chunksize: int
) -> Iterator[tuple[str, dict[str, Any] | Skipped]]:
    import pandas as pd

    row = 0
    with pd.read_csv(path, chunksize=chunksize, on_bad_lines="warn", **options) as reader:
        while True:
            # A row with too many fields is a bad item, not a bad run: pandas reports it as a
            # warning, which becomes a Skipped record.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                try:
                    chunk = next(reader)
                except StopIteration:
                    chunk = None
                except (pd.errors.ParserError, ValueError) as e:
                    raise JointspaceError(
                        f"Cannot parse {path} after row {row} ({_short(e)}); fix the file."
                    ) from None
            bad = _bad_lines(caught)
            for line, reason in bad:
                yield f"line {line}", Skipped("", f"line {line}", reason)
            if chunk is None:
                return
            # A row pandas dropped keeps its place in the row count, so that later rows' numbers
            # stay right: its line number tells where (line N is row N - 1 unless a quoted
            # field spans lines or blank lines come first).
            dropped = sorted(line - 1 for line, _ in bad)
            for record in chunk.to_dict("records"):
                while dropped and dropped[0] <= row + 1:
                    dropped.pop(0)
                    row += 1
                row += 1
                yield f"row {row}", record
            row += len(dropped)


def _bad_lines(caught: list[warnings.WarningMessage]) -> list[tuple[int, str]]:
    """(line number, skip reason) of each row pandas' parser dropped."""
    return [
        (int(match.group(1)), f"malformed row ({match.group(2).strip()})")
        for warning in caught
        for match in _BAD_LINE.finditer(str(warning.message))
    ]


def _jsonl_rows(
    path: Path, chunksize: int
) -> tuple[list[str], Iterator[tuple[str, dict[str, Any] | Skipped]]]:
    # Read line by line rather than with pandas.read_json: one bad line there fails its whole
    # chunk, while here it is one Skipped record. JSONL has no header: the columns are those
    # seen in the first `chunksize` lines, which are buffered to check them.
    lines = _jsonl_lines(path)
    first: list[tuple[str, dict[str, Any] | Skipped]] = []
    header: dict[str, None] = {}
    for position, row in lines:
        first.append((position, row))
        if isinstance(row, dict):
            header.update(dict.fromkeys(row))
        if len(first) >= chunksize:
            break

    def rows() -> Iterator[tuple[str, dict[str, Any] | Skipped]]:
        yield from first
        yield from lines

    return list(header), rows()


def _jsonl_lines(path: Path) -> Iterator[tuple[str, dict[str, Any] | Skipped]]:
    try:
        f = path.open("rb")
    except OSError as e:
        raise JointspaceError(f"Cannot read {path} ({e.strerror or e}).") from None
    with f:
        for number, raw in enumerate(f, start=1):
            position = f"line {number}"
            if not raw.strip():
                continue
            yield position, _parse_json_line(raw, position)


def _parse_json_line(raw: bytes, position: str) -> dict[str, Any] | Skipped:
    try:
        text = raw.decode("utf-8-sig")  # tolerate a byte-order mark on the first line
    except UnicodeDecodeError:
        return Skipped("", position, "line is not valid utf-8")
    try:
        value = json.loads(text)
    except ValueError:
        return Skipped("", position, "line is not valid json")
    if not isinstance(value, dict):
        return Skipped("", position, "line is not a json object")
    return value


def _parquet_rows(
    path: Path, chunksize: int
) -> tuple[list[str], Iterator[tuple[str, dict[str, Any] | Skipped]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise JointspaceError(
            f"Cannot read {path} as Parquet ({_short(e)}); check the file or pass --format."
        ) from None

    def rows() -> Iterator[tuple[str, dict[str, Any] | Skipped]]:
        row = 0
        with parquet:
            # iter_batches decodes one batch at a time; to_pylist gives plain Python values.
            for batch in parquet.iter_batches(batch_size=chunksize):
                for record in batch.to_pylist():
                    row += 1
                    yield f"row {row}", record

    return list(parquet.schema_arrow.names), rows()


# --- one row to one record --------------------------------------------------------------------


def _to_record(position: str, row: dict[str, Any], context: _Context) -> Item | Skipped:
    columns = context.columns
    raw_key = _cell_text(row.get(columns.key)) if columns.key else None

    def skipped(reason: str) -> Skipped:
        return Skipped(context.source, raw_key or position, reason, position)

    image_cell = row.get(columns.image) if columns.image else None
    text_cell = row.get(columns.text) if columns.text else None
    if (kind := _container_kind(text_cell)) is not None:
        # JSONL and Parquet cells may be objects or lists: their repr is no caption.
        return skipped(f"text column holds a {kind}, not a string")
    text = _cell_text(text_cell)
    try:
        image, image_bytes, image_extra = _image(image_cell, context)
    except _BadCell as e:
        return skipped(str(e))
    if context.check_utf8 and _has_replacement(raw_key, text, image, row.get(columns.label)):
        return skipped("row is not valid utf-8")
    if image is None and image_bytes is None and text is None:
        return skipped("row has neither image nor text")
    extra = {
        str(k): _json_safe(v)
        for k, v in row.items()
        if k not in columns.roles
        and not isinstance(v, (bytes, bytearray))
        and not str(k).startswith("__index_level_")  # a DataFrame index pandas wrote along
    }
    caption, truncated = limit_caption(text) if text is not None else (None, False)
    return Item(
        source=context.source,
        key=raw_key or _content_key(image_cell, text),
        image=image,
        text=caption,
        image_bytes=image_bytes,
        labels=_labels(row.get(columns.label)) if columns.label else (),
        extra={**extra, **image_extra},
        locator=position,
        truncated=truncated,
    )


def _container_kind(cell: Any) -> str | None:
    """What a cell holds when it is a container ("struct", "list"; numpy arrays too), else None."""
    if isinstance(cell, dict):
        return "struct"
    if isinstance(cell, (list, tuple)) or getattr(cell, "ndim", 0) > 0:
        return "list"
    return None


def _image(cell: Any, context: _Context) -> tuple[str | None, bytes | None, dict[str, Any]]:
    """(path or URL, inline bytes, extra fields) from an image cell; _BadCell for bad base64."""
    if isinstance(cell, (bytes, bytearray)):
        return None, bytes(cell) or None, {}
    if isinstance(cell, dict):
        # Hugging Face datasets store images in Parquet as {"bytes": ..., "path": ...}.
        data, name = cell.get("bytes"), _cell_text(cell.get("path"))
        if data:
            return None, bytes(data), ({"image_path": name} if name else {})
        cell = name
    value = _cell_text(cell)
    if value is not None and (uri := _DATA_URI.match(value)):
        return None, _data_uri_bytes(value, uri) or None, {}
    if value is not None and context.image_encoding == "base64":
        return None, _base64_bytes(value) or None, {}
    if value is None or _URL.match(value) or os.path.isabs(value):
        return value, None, {}
    return os.path.normpath(context.folder / value), None, {}


def _data_uri_bytes(value: str, uri: re.Match[str]) -> bytes:
    """The bytes of a `data:[<type>][;base64],<data>` URI (RFC 2397)."""
    data = value[uri.end() :]
    if uri.group(1).lower().endswith(";base64"):
        return _base64_bytes(data)
    return unquote_to_bytes(data)


def _base64_bytes(text: str) -> bytes:
    """Standard or URL-safe base64, line breaks and missing padding tolerated."""
    compact = "".join(text.split()).translate(_URLSAFE)
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _BadCell("image is not valid base64") from None


def _cell_text(value: Any) -> str | None:
    """A cell as stripped text; None for missing (None, NaN) or blank cells."""
    value = _json_safe(value)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # an id column read as floats: 7.0 means "7"
    text = str(value).strip()
    return text or None


def _labels(cell: Any) -> tuple[str, ...]:
    """One label, an `a|b` list in one cell, or a list (JSONL, Parquet)."""
    cell = _json_safe(cell)
    parts = cell if isinstance(cell, list) else str(cell).split("|") if cell is not None else []
    labels = (_cell_text(p) for p in parts)
    return tuple(dict.fromkeys(label for label in labels if label))


def _has_replacement(*cells: Any) -> bool:
    return any(isinstance(c, str) and _REPLACEMENT in c for c in cells)


def _content_key(image_cell: Any, text: str | None) -> str:
    """A key from the content: stable under reordering; equal rows collapse into one item."""
    digest = hashlib.sha256()
    if isinstance(image_cell, (bytes, bytearray)):
        digest.update(bytes(image_cell))
    elif isinstance(image_cell, dict):
        digest.update(bytes(image_cell.get("bytes") or b""))
        digest.update(str(image_cell.get("path") or "").encode("utf-8", "surrogatepass"))
    else:
        digest.update((_cell_text(image_cell) or "").encode("utf-8", "surrogatepass"))
    digest.update(b"\x00" + (text or "").encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def _json_safe(value: Any) -> Any:
    """A JSON-safe Python value: numpy scalars unboxed, NaN as None, dates as ISO strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if _is_missing(value):
        return None
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar
        return _json_safe(value.item())
    if hasattr(value, "tolist"):  # numpy array
        return _json_safe(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, (bytes, bytearray)):
        return None
    return str(value)


def _is_missing(value: Any) -> bool:
    """pandas' NA and NaT, without importing pandas."""
    return type(value).__name__ in ("NAType", "NaTType")


def _kind(sep: str) -> str:
    return "TSV" if sep == "\t" else "CSV"


def _short(e: BaseException) -> str:
    message = " ".join(str(e).split())
    return message[:160] or type(e).__name__

"""The errors file: one JSON line per skipped item (and per item ingested with a caveat, such as
a truncated caption), with its source, key, locator and reason.

    {"source": "/data/m.csv", "key": "7", "locator": "row 12", "reason": "image file not found:
    /data/img/7.png", "ingested": false}

`source` is the file read (the root folder of a folder corpus), `locator` where in it the record
sits (see corpus.item.Skipped), `ingested` whether the item was stored nonetheless.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import TracebackType

from ..corpus.item import Item, Skipped


class ErrorsFile:
    """Appends records to a JSONL file (created on the first one) and counts reasons: those of
    skipped items in `reasons`, those of items ingested with a caveat in `notes`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reasons: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self._file = None

    def write(self, skipped: Skipped) -> None:
        """A skipped item."""
        self._append(skipped.source, skipped.key, skipped.locator, skipped.reason, False)
        self.reasons[_reason_kind(skipped.reason)] += 1

    def note(self, item: Item, reason: str) -> None:
        """An item that was ingested, but not quite as read (e.g. its caption was cut)."""
        self._append(item.source, item.key, item.locator, reason, True)
        self.notes[_reason_kind(reason)] += 1

    def _append(
        self, source: str, key: str, locator: str | None, reason: str, ingested: bool
    ) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        record = {
            "source": source,
            "key": key,
            "locator": locator,
            "reason": reason,
            "ingested": ingested,
        }
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        # flushed per line: a killed run still tells what it skipped
        self._file.flush()

    @property
    def count(self) -> int:
        """Skipped items written."""
        return sum(self.reasons.values())

    @property
    def written(self) -> bool:
        """Whether the file holds anything (skipped items or notes)."""
        return self._file is not None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> ErrorsFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _reason_kind(reason: str) -> str:
    """The reason without its details ("image file not found: /x.png" → "image file not
    found"), so the summary groups alike reasons."""
    return reason.split(":", 1)[0].split(" (", 1)[0].strip()

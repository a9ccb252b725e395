"""The errors file: one JSON line per skipped item, with its source, key and reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import TracebackType

from ..corpus.item import Skipped


class ErrorsFile:
    """Appends skipped items to a JSONL file (created on the first one) and counts reasons."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reasons: Counter[str] = Counter()
        self._file = None

    def write(self, skipped: Skipped) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        record = {"source": skipped.source, "key": skipped.key, "reason": skipped.reason}
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        # flushed per line: a killed run still tells what it skipped
        self._file.flush()
        self.reasons[_reason_kind(skipped.reason)] += 1

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

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

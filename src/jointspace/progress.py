"""Progress reports from long work (features, ingest, training), for whatever face shows them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """Where a stage of a long run stands: `done` of `total` (None when unknown) and a short
    `info` line (a rate, a loss)."""

    stage: str
    done: int
    total: int | None = None
    info: str = ""


ProgressCallback = Callable[[Progress], None]


class StageCounter:
    """Turns "n more done" callbacks into cumulative Progress reports for one stage."""

    def __init__(self, stage: str, total: int | None, report: ProgressCallback | None) -> None:
        self.stage, self.total, self.report, self.done = stage, total, report, 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.report:
            self.report(Progress(self.stage, self.done, self.total))

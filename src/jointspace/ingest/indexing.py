"""After an ingest: build the collection's HNSW search index when its size calls for it.

The policy (`--index auto`, the default) follows store/indexing.py's measurements: a collection
of at least INDEX_THRESHOLD units gets an index when it has none, and again whenever the units
added since the last build reach INDEX_THRESHOLD (points added after a build are searched
exactly, which costs what an exact search of that many units costs). A build is a full rebuild
(~1.5 s per 1,000 units on 2 cores at 100k units, more per unit beyond), done at the end of the
run, after every batch is stored: an interrupted build leaves the collection searchable
exactly, and the next ingest or `jointspace collections index NAME` builds it again.
`--index build` always builds, `--index skip` never does. While it builds, the progress line
says so, with an estimate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..errors import JointspaceError
from ..progress import Progress, ProgressCallback
from ..store.base import Store
from ..store.indexing import INDEX_THRESHOLD, should_build_index

INDEX_MODES = ("auto", "build", "skip")
# Written to the collection's metadata by each build: the point count then.
INDEXED_POINTS_KEY = "indexed_points"
# For the estimate on the progress line, from benchmarks/scale.py (2 cores, three 512-d vectors
# a unit): 100k units built in 153 s, 300k in 659 s, 1M in ~3,300 s (busy machines); an int8
# collection in about half that.
SECONDS_PER_UNIT_AT_100K = 1.5e-3


@dataclass(frozen=True)
class IndexOutcome:
    """Whether an index was built, over how many units, in how long."""

    built: bool
    points: int
    seconds: float = 0.0


def check_index_mode(mode: str) -> None:
    if mode not in INDEX_MODES:
        raise JointspaceError(f"Unknown --index {mode!r}; use {' | '.join(INDEX_MODES)}.")


def needs_index(points: int, indexed: bool, indexed_points: int) -> bool:
    """The auto policy: big enough, and no index yet or INDEX_THRESHOLD units added since."""
    if not should_build_index(points):
        return False
    return not indexed or points - indexed_points >= INDEX_THRESHOLD


def index_after_ingest(
    store: Store, collection: str, mode: str, on_progress: ProgressCallback | None = None
) -> IndexOutcome:
    """Build `collection`'s index if `mode` (auto|build|skip) says so; see the module."""
    check_index_mode(mode)
    info = store.info(collection)
    points = info.points or 0
    indexed_points = int(info.metadata.get(INDEXED_POINTS_KEY) or 0)
    if mode == "skip" or (mode == "auto" and not needs_index(points, info.indexed, indexed_points)):
        return IndexOutcome(False, points)
    return build_index(store, collection, on_progress)


def build_estimate_s(points: int, quantized: bool) -> int:
    """Roughly how long a build of `points` units takes here: n log n, fitted to the scale
    runs (52 s at 50k, 150 s at 100k, 660 s at 300k, 3,000 s at 1M; half with int8)."""
    if points <= 0:
        return 1
    seconds = SECONDS_PER_UNIT_AT_100K * points * max(0.5, 1 + math.log10(points / 100_000))
    return max(1, round(seconds / (2 if quantized else 1)))


def build_index(
    store: Store, collection: str, on_progress: ProgressCallback | None = None
) -> IndexOutcome:
    """Build (or rebuild) the HNSW index of `collection` now, saying so while it runs."""
    points = store.info(collection).points or 0
    if on_progress:
        estimate = build_estimate_s(points, store.info(collection).quantize is not None)
        message = f"building the search index over {points:,} units (about {estimate} s)"
        on_progress(Progress("index", 0, 1, message))
    started = time.perf_counter()
    store.build_index(collection)
    seconds = time.perf_counter() - started
    metadata = dict(store.info(collection).metadata)
    metadata[INDEXED_POINTS_KEY] = points
    store.set_metadata(collection, metadata)
    if on_progress:
        on_progress(Progress("index", 1, 1, f"search index built in {seconds:.0f} s"))
    return IndexOutcome(True, points, seconds)

"""Approximate search: when a collection gets an HNSW index, its parameters, and quantization.

A collection starts unindexed: every search is exact (brute force over its vectors), which
needs no build and is fast enough for small collections. `Store.build_index(name)` builds an
HNSW graph per named vector (blocking on the embedded store); from then on searches go through
the graph (`HNSW_EF` candidates), and `search(..., exact=True)` still forces an exact one.
Points upserted after the build are searched exactly (Edge keeps them in an unindexed
segment) until the next build_index. A collection created with `quantize="int8"` also keeps
int8 copies of its vectors once indexed; searches walk those and rescore the best candidates
with the original vectors.

The policy, from `benchmarks/scale.py` (benchmarks/RESULTS.md, "A million units"; three 512-d
vectors per unit, held-out top-10 queries, 2 shared cores, Qdrant Edge 0.9):

    units   exact p50   HNSW p50 (recall@10)   build_index   int8: build, p50 (recall@10)
    10k       0.9 ms      0.4 ms (0.999)           2 s          2 s, 0.2 ms (0.99)
    100k      8.8 ms      0.5 ms (1.000)         153 s         50 s, 0.3 ms (0.96, 1x rescore)
    300k     31.5 ms      0.6 ms (1.000)         659 s        314 s, 0.3 ms (1.000)
    1M       78.1 ms      0.9 ms (1.000)        3752 s        (not measured)

(300k ran at a load of 5-7 on the 2 cores, 1M at 3-4.5: their build and upsert times are
inflated up to ~2x.)
Exact search costs ~0.08-0.1 ms per 1,000 units and grows linearly; the graph stays at
0.4-0.9 ms. A build costs ~1.5 ms per unit at 100k, ~2 at 300k, ~3.7 at 1M (n log n, and
load; int8 about half: its graph is built on the int8 copies), small against ingest itself
(~40 ms per unit: ~24 images/s). Below 50,000 units an exact search
takes under ~5 ms, less than embedding the query, and is exact; there the index would only
add build time, reopen time and approximation (filtered searches lose most: see
FILTERED_HNSW_EF). Above it, exact search grows past what an interactive query should cost
(30 ms at 300k, 80-120 ms at 1M) while the graph stays under 1 ms. Hence INDEX_THRESHOLD = 50,000.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from jointspace.errors import JointspaceError

# The unit count from which ingest should build the index (see the module docstring).
INDEX_THRESHOLD = 50_000

# HNSW graph parameters for every named vector (Qdrant's defaults, kept: at 300k units they
# give recall@10 1.000 with HNSW_EF, 0.9995 already with ef 32).
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
# Candidates a search keeps (Qdrant's hnsw_ef; raised to k when k is larger). 128 leaves a
# margin for larger k and harder data: at 300k units, ef 32: 0.40 ms, recall@10 0.9995;
# 128: 0.63 ms, 1.000.
HNSW_EF = 128
# ... and a filtered one. A filter that keeps a large part of the collection but excludes the
# query's neighbourhood (labels=symbols, 25 % of the units, for a query near an animal) leaves
# the graph walk among far, nearly tied candidates: recall@10 against exact was 0.79 with
# ef 128 and 0.88 with 512 at 60k units, 0.71 with 512 at 300k (2.7 ms; exact: 19 ms).
FILTERED_HNSW_EF = 512
# Hence a filter that matches at most this many units (as the payload index estimates them)
# is searched exactly, through the payload index, even on an indexed collection: at most
# ~25 ms (75k matches: 19 ms at 300k units), and exact. Broader filters walk the graph.
FILTER_EXACT_UNITS = 100_000
# Qdrant scans (instead of walking the graph) any segment, and any filter's matches within a
# segment, of fewer vectors than its full_scan_threshold (KB of vectors: see
# full_scan_threshold_kb), unfiltered searches included (checked: a 20k-vector segment with
# the threshold at 100k vectors answered in 1.3 ms with or without exact; at 500 vectors,
# 0.2 ms through the graph). So it must stay below INDEX_THRESHOLD, or an index built at the
# threshold would not be used; under 20k units a scan costs under ~2 ms.
FULL_SCAN_UNITS = 20_000
# int8: the best limit * OVERSAMPLING candidates by int8 score are rescored with the original
# vectors (at 100k units recall@10 was 0.96 with 1x, whatever hnsw_ef; 1.00 with 2x at 60k).
QUANTIZATION_OVERSAMPLING = 2.0

QUANTIZE_KINDS = ("int8",)


def should_build_index(count: int) -> bool:
    """Whether a collection of `count` units should have an HNSW index (ingest builds it
    when this turns true)."""
    return count >= INDEX_THRESHOLD


def full_scan_threshold_kb(dims: Mapping[str, int]) -> int:
    """Qdrant's full_scan_threshold (KB of one named vector's storage) for FULL_SCAN_UNITS
    units of the smallest of `dims` (float32): no vector is scanned beyond that many units."""
    return max(1, math.ceil(FULL_SCAN_UNITS * 4 * min(dims.values(), default=1) / 1024))


def search_ef(hnsw_ef: int | None, filtered: bool) -> int:
    """The hnsw_ef of an indexed search: `hnsw_ef` as given (checked), else HNSW_EF, or
    FILTERED_HNSW_EF with a filter."""
    if hnsw_ef is None:
        return FILTERED_HNSW_EF if filtered else HNSW_EF
    if isinstance(hnsw_ef, bool) or int(hnsw_ef) < 1:
        raise JointspaceError(f"hnsw_ef must be a positive number, not {hnsw_ef!r}.")
    return int(hnsw_ef)


def check_quantize(quantize: str | None) -> str | None:
    """`quantize` as stored (None or one of QUANTIZE_KINDS, lower case); raises
    JointspaceError for any other value."""
    if quantize is None:
        return None
    value = str(quantize).strip().lower()
    if value not in QUANTIZE_KINDS:
        kinds = ", ".join(QUANTIZE_KINDS)
        raise JointspaceError(
            f"Unknown quantization {quantize!r}: use {kinds} (or none for full-precision "
            "vectors only)."
        )
    return value

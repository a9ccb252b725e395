"""Retrieval metrics over a query x gallery score matrix (numpy only).

Conventions, shared by training (validation) and evaluation:

* ``scores[i, j]`` is the similarity of query ``i`` to gallery entry ``j``; higher ranks first.
* **Ties are broken by gallery index**: among equal scores the lower index ranks first. The
  ranking is therefore fully deterministic and does not depend on the sort algorithm.
* ``exclude[i, j]`` removes gallery entry ``j`` from query ``i``'s gallery altogether (e.g. the
  query's own item): it is neither ranked nor counted as relevant, and the entries below it move
  up one rank.
* Queries without any (non-excluded) relevant entry are left out of every average; the number of
  queries that were counted is returned as ``"queries"``.

Metrics (binary relevance; ranks are 1-based):

* ``R@k`` -- 1 if any relevant entry is in the top ``k``, else 0 (the usual cross-modal
  retrieval "recall@k", i.e. hit rate; *not* the fraction of relevant entries retrieved).
* ``MRR`` -- 1 / rank of the first relevant entry.
* ``nDCG@10`` -- sum of ``1 / log2(rank + 1)`` over relevant entries in the top 10, divided by
  the same sum for an ideal ranking (``min(n_relevant, 10)`` relevant entries at the top).
* ``MAP`` -- mean over queries of average precision over the full ranking: the mean, over all
  relevant entries, of precision at that entry's rank.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np

NDCG_CUTOFF = 10
"""The cut-off of the reported nDCG (``"nDCG@10"``)."""

_CHUNK_ELEMENTS = 1 << 22
"""How many query x gallery cells one chunk of queries may span (bounds temporary memory)."""


def _check_matrix(name: str, array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    return array


def retrieval_metrics(
    scores: np.ndarray,
    relevant: np.ndarray,
    exclude: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Compute R@k, MRR, nDCG@10 and MAP for a score matrix.

    Args:
        scores: ``(n_queries, n_gallery)`` similarities, higher is better. NaN is refused.
        relevant: ``(n_queries, n_gallery)`` boolean relevance matrix.
        exclude: optional ``(n_queries, n_gallery)`` boolean matrix of gallery entries removed
            from each query's gallery (neither ranked nor relevant).
        ks: the cut-offs reported as ``"R@k"``.

    Returns:
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "MRR": ..., "nDCG@10": ..., "MAP": ...,
        "queries": n}``, each metric averaged over the ``n`` queries that have at least one
        relevant entry (ties broken by lower gallery index first; see the module docstring).
        With no such query every metric is NaN and ``"queries"`` is 0.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {scores.shape}")
    shape = scores.shape
    relevant = _check_matrix("relevant", relevant, shape).astype(bool, copy=False)
    if exclude is not None:
        exclude = _check_matrix("exclude", exclude, shape).astype(bool, copy=False)
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"cut-offs must be >= 1, got {ks}")

    n_queries, n_gallery = shape
    # discount[r] = 1 / log2(r + 1) for 1-based rank r (index 0 unused).
    discount = np.zeros(NDCG_CUTOFF + 1)
    discount[1:] = 1.0 / np.log2(np.arange(2, NDCG_CUTOFF + 2))
    ideal_dcg = np.cumsum(discount)  # ideal_dcg[m] = DCG of m relevant entries at the top

    first_rank_parts: list[np.ndarray] = []
    ndcg_parts: list[np.ndarray] = []
    ap_parts: list[np.ndarray] = []
    chunk = max(1, _CHUNK_ELEMENTS // max(n_gallery, 1))
    for start in range(0, n_queries, chunk):
        stop = min(start + chunk, n_queries)
        first_rank, ndcg, ap = _chunk_metrics(
            scores[start:stop],
            relevant[start:stop],
            None if exclude is None else exclude[start:stop],
            discount,
            ideal_dcg,
        )
        first_rank_parts.append(first_rank)
        ndcg_parts.append(ndcg)
        ap_parts.append(ap)

    first_rank = np.concatenate(first_rank_parts) if first_rank_parts else np.zeros(0)
    ndcg = np.concatenate(ndcg_parts) if ndcg_parts else np.zeros(0)
    ap = np.concatenate(ap_parts) if ap_parts else np.zeros(0)
    n_counted = int(first_rank.size)

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if n_counted else float("nan")

    result: dict[str, float] = {f"R@{k}": mean(first_rank <= k) for k in ks}
    result["MRR"] = mean(1.0 / first_rank)
    result[f"nDCG@{NDCG_CUTOFF}"] = mean(ndcg)
    result["MAP"] = mean(ap)
    result["queries"] = n_counted
    return result


def _chunk_metrics(
    scores: np.ndarray,
    relevant: np.ndarray,
    exclude: np.ndarray | None,
    discount: np.ndarray,
    ideal_dcg: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query first-relevant rank, nDCG@10 and AP for the queries of one chunk.

    Only queries with at least one relevant, non-excluded entry are returned.
    """
    keys = -scores.astype(np.float64)
    if np.isnan(keys).any():
        raise ValueError("scores contain NaN")
    # A stable sort of the negated scores keeps equal scores in gallery-index order.
    order = np.argsort(keys, axis=1, kind="stable")
    del keys

    if exclude is None:
        rel_sorted = np.take_along_axis(relevant, order, axis=1)
        rank = np.broadcast_to(np.arange(1, order.shape[1] + 1), order.shape)
    else:
        keep_sorted = ~np.take_along_axis(exclude, order, axis=1)
        rel_sorted = np.take_along_axis(relevant, order, axis=1) & keep_sorted
        # The rank of a kept entry counts only the kept entries up to and including it.
        rank = np.cumsum(keep_sorted, axis=1)
        del keep_sorted
    del order

    n_relevant = rel_sorted.sum(axis=1)
    counted = n_relevant > 0
    rel_sorted = rel_sorted[counted]
    rank = rank[counted]
    n_relevant = n_relevant[counted]
    if not rel_sorted.shape[0]:
        empty = np.zeros(0)
        return empty, empty, empty
    rows = np.arange(rel_sorted.shape[0])

    first_rank = rank[rows, rel_sorted.argmax(axis=1)].astype(np.float64)

    # Use ranks, not sorted positions: excluded entries occupy positions but not ranks.
    in_top = rel_sorted & (rank <= len(discount) - 1)
    dcg = np.where(in_top, discount[np.minimum(rank, len(discount) - 1)], 0.0).sum(axis=1)
    ndcg = dcg / ideal_dcg[np.minimum(n_relevant, len(discount) - 1)]

    hits = np.cumsum(rel_sorted, axis=1)
    precision_sum = np.divide(hits, rank, out=np.zeros(hits.shape), where=rel_sorted).sum(axis=1)
    ap = precision_sum / n_relevant
    return first_rank, ndcg, ap


def _label_sets(labels: Sequence[str | Iterable[str] | None]) -> list[frozenset[str]]:
    sets = []
    for label in labels:
        if label is None:
            sets.append(frozenset())
        elif isinstance(label, str):
            sets.append(frozenset((label,)))
        else:
            sets.append(frozenset(label))
    return sets


def label_relevance(
    query_labels: Sequence[str | Iterable[str] | None],
    gallery_labels: Sequence[str | Iterable[str] | None],
) -> np.ndarray:
    """Boolean ``(n_queries, n_gallery)`` matrix: query and gallery entry share a label.

    Each entry is a label, a collection of labels (an item's ``labels`` tuple; relevant when the
    two share at least one label), or None. None (or an empty collection) is never relevant.
    """
    query_sets = _label_sets(query_labels)
    gallery_sets = _label_sets(gallery_labels)
    query_index: dict[str, list[int]] = {}
    gallery_index: dict[str, list[int]] = {}
    for i, labels in enumerate(query_sets):
        for label in labels:
            query_index.setdefault(label, []).append(i)
    for j, labels in enumerate(gallery_sets):
        for label in labels:
            gallery_index.setdefault(label, []).append(j)
    out = np.zeros((len(query_sets), len(gallery_sets)), dtype=bool)
    for label, rows in query_index.items():
        cols = gallery_index.get(label)
        if cols:
            out[np.ix_(np.asarray(rows), np.asarray(cols))] = True
    return out


def identity_relevance(
    query_keys: Sequence[Hashable | None], gallery_keys: Sequence[Hashable | None]
) -> np.ndarray:
    """Boolean ``(n_queries, n_gallery)`` matrix: the gallery entry has the query's key.

    Used where a query's relevant entries are its own item (e.g. a caption retrieving its image);
    a gallery may hold a key several times. None is never relevant.
    """
    codes: dict[Hashable, int] = {}
    gallery_codes = np.array(
        [-1 if key is None else codes.setdefault(key, len(codes)) for key in gallery_keys],
        dtype=np.int64,
    )
    query_codes = np.array(
        [-2 if key is None else codes.get(key, -2) for key in query_keys], dtype=np.int64
    )
    return query_codes[:, None] == gallery_codes[None, :]

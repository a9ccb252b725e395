"""Tests for jointspace.metrics: hand-computed cases and a comparison against ranx."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jointspace import metrics
from jointspace.metrics import identity_relevance, label_relevance, retrieval_metrics

TOL = 1e-6
# ranx's numba kernels warn about an internal uint64 -> int64 cast; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:unsafe cast from uint64 to int64")
METRIC_NAMES = ("R@1", "R@5", "R@10", "MRR", "nDCG@10", "MAP")


def _disc(rank: int) -> float:
    return 1.0 / math.log2(rank + 1)


def _one_query(scores: list[float], relevant: list[int], exclude: list[int] | None = None):
    n = len(scores)
    rel = np.zeros((1, n), dtype=bool)
    rel[0, relevant] = True
    exc = None
    if exclude is not None:
        exc = np.zeros((1, n), dtype=bool)
        exc[0, exclude] = True
    return retrieval_metrics(np.array([scores]), rel, exc)


# --- hand-computed cases ------------------------------------------------------------------------


def test_hand_computed_two_relevant_at_ranks_2_and_4() -> None:
    m = _one_query([0.9, 0.8, 0.7, 0.6, 0.5], relevant=[1, 3])
    assert m["queries"] == 1
    assert m["R@1"] == 0.0
    assert m["R@5"] == 1.0
    assert m["R@10"] == 1.0
    assert m["MRR"] == pytest.approx(0.5, abs=TOL)
    ndcg = (_disc(2) + _disc(4)) / (_disc(1) + _disc(2))
    assert m["nDCG@10"] == pytest.approx(ndcg, abs=TOL)
    assert m["MAP"] == pytest.approx((1 / 2 + 2 / 4) / 2, abs=TOL)
    # The test can fail: an off-by-one rank (0-based) would give other values.
    assert abs(m["MRR"] - 1 / 1) > 0.1 and abs(m["MRR"] - 1 / 3) > 0.1
    assert abs(m["nDCG@10"] - (_disc(1) + _disc(3)) / (_disc(1) + _disc(2))) > 0.01


def test_hand_computed_averages_and_skips_queries_without_relevant() -> None:
    scores = np.array(
        [
            [0.1, 0.9, 0.5, 0.3],  # ranking 1, 2, 3, 0
            [0.4, 0.3, 0.2, 0.1],  # ranking 0, 1, 2, 3
            [0.0, 0.1, 0.2, 0.3],  # no relevant: not counted
        ]
    )
    relevant = np.array(
        [
            [True, False, False, False],  # rank 4
            [True, False, True, False],  # ranks 1 and 3
            [False, False, False, False],
        ]
    )
    m = retrieval_metrics(scores, relevant)
    assert m["queries"] == 2
    assert m["R@1"] == pytest.approx(0.5)
    assert m["R@5"] == pytest.approx(1.0)
    assert m["MRR"] == pytest.approx((1 / 4 + 1) / 2, abs=TOL)
    ndcg0 = _disc(4) / _disc(1)
    ndcg1 = (_disc(1) + _disc(3)) / (_disc(1) + _disc(2))
    assert m["nDCG@10"] == pytest.approx((ndcg0 + ndcg1) / 2, abs=TOL)
    ap0 = 1 / 4
    ap1 = (1 / 1 + 2 / 3) / 2
    assert m["MAP"] == pytest.approx((ap0 + ap1) / 2, abs=TOL)


def test_ties_are_broken_by_lower_gallery_index_first() -> None:
    # All scores equal: the ranking is the gallery order, so index 2 has rank 3.
    m = _one_query([0.5, 0.5, 0.5, 0.5], relevant=[2])
    assert m["MRR"] == pytest.approx(1 / 3, abs=TOL)
    assert m["R@1"] == 0.0
    assert m["MAP"] == pytest.approx(1 / 3, abs=TOL)
    # A tie with a higher score above: index 3 ties with index 1, both below index 2.
    m = _one_query([0.1, 0.5, 0.9, 0.5], relevant=[3])
    assert m["MRR"] == pytest.approx(1 / 3, abs=TOL)
    m = _one_query([0.1, 0.5, 0.9, 0.5], relevant=[1])
    assert m["MRR"] == pytest.approx(1 / 2, abs=TOL)


def test_exclusion_removes_entries_from_ranking_and_relevance() -> None:
    # Index 0 (the query's own item, say) is excluded: index 2 moves from rank 3 to rank 2.
    m = _one_query([0.9, 0.8, 0.7], relevant=[2], exclude=[0])
    assert m["MRR"] == pytest.approx(1 / 2, abs=TOL)
    assert m["nDCG@10"] == pytest.approx(_disc(2), abs=TOL)
    # An excluded relevant entry is not relevant any more: AP counts only index 2.
    m = _one_query([0.9, 0.8, 0.7], relevant=[0, 2], exclude=[0])
    assert m["MAP"] == pytest.approx(1 / 2, abs=TOL)
    assert m["R@1"] == 0.0
    # A query whose only relevant entry is excluded is not counted.
    m = _one_query([0.9, 0.8, 0.7], relevant=[0], exclude=[0])
    assert m["queries"] == 0
    assert all(math.isnan(m[name]) for name in METRIC_NAMES)


def test_cutoffs_beyond_rank_10() -> None:
    scores = [1.0 - i / 100 for i in range(12)]
    # Relevant only at ranks 11 and 12: nothing in the top 10.
    m = _one_query(scores, relevant=[10, 11])
    assert m["R@10"] == 0.0
    assert m["nDCG@10"] == 0.0
    assert m["MRR"] == pytest.approx(1 / 11, abs=TOL)
    assert m["MAP"] == pytest.approx((1 / 11 + 2 / 12) / 2, abs=TOL)
    # Everything relevant: the ideal DCG is capped at 10 entries, so nDCG@10 is exactly 1.
    m = _one_query(scores, relevant=list(range(12)))
    assert m["nDCG@10"] == pytest.approx(1.0, abs=TOL)
    assert m["MAP"] == pytest.approx(1.0, abs=TOL)
    # 12 relevant, the top one missing: DCG of ranks 2..10 over the ideal of ranks 1..10.
    m = _one_query(scores, relevant=list(range(1, 12)))
    ideal = sum(_disc(r) for r in range(1, 11))
    assert m["nDCG@10"] == pytest.approx(sum(_disc(r) for r in range(2, 11)) / ideal, abs=TOL)
    assert m["MAP"] == pytest.approx(sum(i / (i + 1) for i in range(1, 12)) / 11, abs=TOL)


def test_custom_ks_and_integer_scores() -> None:
    m = retrieval_metrics(np.array([[3, 2, 1]]), np.array([[False, False, True]]), ks=(2, 3))
    assert m["R@2"] == 0.0
    assert m["R@3"] == 1.0
    assert "R@1" not in m


def test_invalid_input_is_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[0.1, np.nan]]), np.array([[True, False]]))
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(np.zeros((2, 3)), np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(np.zeros((2, 3)), np.zeros((2, 3), dtype=bool), np.zeros((3, 2), bool))
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((1, 3)), np.ones((1, 3), dtype=bool), ks=(0,))


def test_empty_inputs() -> None:
    m = retrieval_metrics(np.zeros((0, 5)), np.zeros((0, 5), dtype=bool))
    assert m["queries"] == 0 and math.isnan(m["MAP"])
    m = retrieval_metrics(np.zeros((3, 0)), np.zeros((3, 0), dtype=bool))
    assert m["queries"] == 0


def test_chunking_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    scores = np.round(rng.random((53, 37)), 1)
    relevant = rng.random((53, 37)) < 0.1
    exclude = rng.random((53, 37)) < 0.1
    whole = retrieval_metrics(scores, relevant, exclude)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 37 * 4)  # chunks of 4 queries
    chunked = retrieval_metrics(scores, relevant, exclude)
    assert chunked == pytest.approx(whole, abs=1e-12)


# --- comparison against ranx --------------------------------------------------------------------


def _ranx_metrics(
    ranx_scores: np.ndarray, relevant: np.ndarray, exclude: np.ndarray | None
) -> dict[str, float]:
    """ranx's values for our metrics; `ranx_scores` must have no ties within a query.

    Excluded entries are left out of both the run and the qrels; queries without relevant
    entries are left out of both (ranx would score them 0 and count them).
    """
    ranx = pytest.importorskip("ranx")
    keep = np.ones_like(relevant) if exclude is None else ~exclude
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for i in range(relevant.shape[0]):
        rel_docs = np.flatnonzero(relevant[i] & keep[i])
        if rel_docs.size == 0:
            continue
        qrels[f"q{i}"] = {f"d{j}": 1 for j in rel_docs}
        run[f"q{i}"] = {f"d{j}": float(ranx_scores[i, j]) for j in np.flatnonzero(keep[i])}
    # ranx's recall@k is the fraction of relevant entries retrieved; our R@k is its hit_rate@k.
    names = {
        "R@1": "hit_rate@1",
        "R@5": "hit_rate@5",
        "R@10": "hit_rate@10",
        "MRR": "mrr",
        "nDCG@10": "ndcg@10",
        "MAP": "map",
    }
    values = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), list(names.values()))
    out = {ours: float(values[theirs]) for ours, theirs in names.items()}
    out["queries"] = len(qrels)
    return out


def _tied_case(seed: int, with_exclusion: bool):
    """Scores rounded to one decimal (many ties), and strictly ordered scores for ranx.

    The ranx scores are built without sorting: decile minus a fraction of the gallery index,
    so higher scores come first and, within a tie, the lower index comes first.
    """
    rng = np.random.default_rng(seed)
    n_q, n_g = 25, 40
    deciles = rng.integers(0, 11, size=(n_q, n_g))
    scores = deciles / 10.0
    ranx_scores = deciles - np.arange(n_g)[None, :] / (n_g + 1)
    n_rel = rng.integers(0, 6, size=n_q)  # some queries have no relevant entry
    relevant = rng.random((n_q, n_g)).argsort(axis=1) < n_rel[:, None]
    exclude = rng.random((n_q, n_g)) < 0.15 if with_exclusion else None
    return scores, ranx_scores, relevant, exclude


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_exclusion", [False, True])
def test_matches_ranx_on_continuous_scores(seed: int, with_exclusion: bool) -> None:
    rng = np.random.default_rng(100 + seed)
    n_q, n_g = 30, 50
    scores = rng.standard_normal((n_q, n_g))
    relevant = rng.random((n_q, n_g)) < rng.uniform(0.0, 0.2, size=(n_q, 1))
    relevant[:3] = False  # queries without relevant entries
    exclude = rng.random((n_q, n_g)) < 0.2 if with_exclusion else None
    ours = retrieval_metrics(scores, relevant, exclude)
    theirs = _ranx_metrics(scores, relevant, exclude)
    assert ours["queries"] == theirs["queries"] < n_q
    for name in METRIC_NAMES:
        assert ours[name] == pytest.approx(theirs[name], abs=TOL), name


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_exclusion", [False, True])
def test_matches_ranx_with_ties(seed: int, with_exclusion: bool) -> None:
    scores, ranx_scores, relevant, exclude = _tied_case(seed, with_exclusion)
    ours = retrieval_metrics(scores, relevant, exclude)
    theirs = _ranx_metrics(ranx_scores, relevant, exclude)
    assert ours["queries"] == theirs["queries"] < scores.shape[0]
    for name in METRIC_NAMES:
        assert ours[name] == pytest.approx(theirs[name], abs=TOL), name


def test_ranx_comparison_detects_a_different_tie_break() -> None:
    """The comparison can fail: the opposite tie-break (higher index first) gives other values."""
    scores, _, relevant, exclude = _tied_case(0, with_exclusion=True)
    deciles = np.rint(scores * 10)
    reversed_ties = deciles + np.arange(scores.shape[1])[None, :] / (scores.shape[1] + 1)
    ours = retrieval_metrics(scores, relevant, exclude)
    theirs = _ranx_metrics(reversed_ties, relevant, exclude)
    assert any(abs(ours[name] - theirs[name]) > 1e-3 for name in METRIC_NAMES)


def test_r_at_k_is_hit_rate_not_ranx_recall() -> None:
    """Our R@k is 1 when any relevant entry is in the top k; ranx's recall@k is a fraction."""
    ranx = pytest.importorskip("ranx")
    m = _one_query([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], relevant=[0, 5])
    qrels = ranx.Qrels({"q": {"d0": 1, "d5": 1}})
    run = ranx.Run({"q": {f"d{j}": 0.9 - j / 10 for j in range(6)}})
    assert m["R@5"] == 1.0
    assert float(ranx.evaluate(qrels, run, "recall@5")) == pytest.approx(0.5)
    assert float(ranx.evaluate(qrels, run, "hit_rate@5")) == pytest.approx(m["R@5"])


# --- relevance matrices -------------------------------------------------------------------------


def test_label_relevance() -> None:
    rel = label_relevance(["cat", None, "dog"], ["dog", "cat", None, "cat"])
    expected = np.array(
        [
            [False, True, False, True],
            [False, False, False, False],  # None is never relevant, not even to None
            [True, False, False, False],
        ]
    )
    assert rel.dtype == bool
    np.testing.assert_array_equal(rel, expected)


def test_label_relevance_with_label_tuples() -> None:
    rel = label_relevance([("cat", "pet"), (), "bird"], [("pet",), ("bird", "cat"), None])
    expected = np.array([[True, True, False], [False, False, False], [False, True, False]])
    np.testing.assert_array_equal(rel, expected)


def test_identity_relevance() -> None:
    # A gallery may hold a key several times (e.g. several captions of one image).
    rel = identity_relevance(["a", "b", "z", None], ["b", "a", "b", None])
    expected = np.array(
        [
            [False, True, False, False],
            [True, False, True, False],
            [False, False, False, False],  # key not in the gallery
            [False, False, False, False],  # None is never relevant
        ]
    )
    assert rel.dtype == bool
    np.testing.assert_array_equal(rel, expected)
    assert identity_relevance([], ["a"]).shape == (0, 1)

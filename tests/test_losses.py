"""The structured hinge loss and InfoNCE, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from jointspace.pipeline.losses import InfoNCELoss, StructuredHingeLoss, make_loss

# Scores S[q][t] between query q and target t; positives on the diagonal.
S = [
    [0.9, 0.5, 0.2],
    [0.3, 0.6, 0.55],
    [0.1, 0.8, 0.7],
]


def _pair_for_scores(scores: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and targets whose product Q Tᵀ is exactly `scores` (Q = I, T = Sᵀ)."""
    s = torch.tensor(scores, dtype=torch.float64)
    return torch.eye(len(s), dtype=torch.float64), s.T.clone()


def _hinge(x: float) -> float:
    return max(0.0, x)


def test_scores_helper_builds_the_intended_matrix() -> None:
    queries, targets = _pair_for_scores(S)
    assert torch.equal(queries @ targets.T, torch.tensor(S, dtype=torch.float64))


def test_sum_of_hinges_by_hand() -> None:
    m = 0.2
    # query direction: query q against every other target n, [m - S[q][q] + S[q][n]]_+
    query_terms = [
        _hinge(m - S[0][0] + S[0][1]),  # 0.2 - 0.9 + 0.5  = -0.2  -> 0
        _hinge(m - S[0][0] + S[0][2]),  # 0.2 - 0.9 + 0.2  = -0.5  -> 0
        _hinge(m - S[1][1] + S[1][0]),  # 0.2 - 0.6 + 0.3  = -0.1  -> 0
        _hinge(m - S[1][1] + S[1][2]),  # 0.2 - 0.6 + 0.55 =  0.15
        _hinge(m - S[2][2] + S[2][0]),  # 0.2 - 0.7 + 0.1  = -0.4  -> 0
        _hinge(m - S[2][2] + S[2][1]),  # 0.2 - 0.7 + 0.8  =  0.3
    ]
    # target direction: target t against every other query n, [m - S[t][t] + S[n][t]]_+
    target_terms = [
        _hinge(m - S[0][0] + S[1][0]),  # 0.2 - 0.9 + 0.3  = -0.4  -> 0
        _hinge(m - S[0][0] + S[2][0]),  # 0.2 - 0.9 + 0.1  = -0.6  -> 0
        _hinge(m - S[1][1] + S[0][1]),  # 0.2 - 0.6 + 0.5  =  0.1
        _hinge(m - S[1][1] + S[2][1]),  # 0.2 - 0.6 + 0.8  =  0.4
        _hinge(m - S[2][2] + S[0][2]),  # 0.2 - 0.7 + 0.2  = -0.3  -> 0
        _hinge(m - S[2][2] + S[1][2]),  # 0.2 - 0.7 + 0.55 =  0.05
    ]
    expected = (sum(query_terms) + sum(target_terms)) / 3  # divided by the batch size
    assert expected == pytest.approx((0.15 + 0.3 + 0.1 + 0.4 + 0.05) / 3)
    loss = StructuredHingeLoss(margin=m, mode="sum")(*_pair_for_scores(S))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_max_violation_by_hand() -> None:
    m = 0.2
    # only the hardest negative per query (row) and per target (column)
    query_terms = [
        max(_hinge(m - S[0][0] + S[0][1]), _hinge(m - S[0][0] + S[0][2])),  # 0
        max(_hinge(m - S[1][1] + S[1][0]), _hinge(m - S[1][1] + S[1][2])),  # 0.15
        max(_hinge(m - S[2][2] + S[2][0]), _hinge(m - S[2][2] + S[2][1])),  # 0.3
    ]
    target_terms = [
        max(_hinge(m - S[0][0] + S[1][0]), _hinge(m - S[0][0] + S[2][0])),  # 0
        max(_hinge(m - S[1][1] + S[0][1]), _hinge(m - S[1][1] + S[2][1])),  # 0.4 (not 0.1 + 0.4)
        max(_hinge(m - S[2][2] + S[0][2]), _hinge(m - S[2][2] + S[1][2])),  # 0.05
    ]
    expected = (sum(query_terms) + sum(target_terms)) / 3
    assert expected == pytest.approx((0.15 + 0.3 + 0.4 + 0.05) / 3)
    loss = StructuredHingeLoss(margin=m, mode="max")(*_pair_for_scores(S))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_margin_zero_by_hand() -> None:
    # with no margin only negatives that outscore the positive cost anything:
    # S[2][1] = 0.8 > S[2][2] = 0.7 (query 2) and S[2][1] = 0.8 > S[1][1] = 0.6 (target 1)
    expected_sum = ((S[2][1] - S[2][2]) + (S[2][1] - S[1][1])) / 3
    loss = StructuredHingeLoss(margin=0.0, mode="sum")(*_pair_for_scores(S))
    assert loss.item() == pytest.approx(expected_sum, abs=1e-12)
    assert expected_sum == pytest.approx(0.1)


@pytest.mark.parametrize("mode", ["sum", "max"])
def test_larger_margin_costs_more(mode: str) -> None:
    pair = _pair_for_scores(S)
    losses = [StructuredHingeLoss(margin=m, mode=mode)(*pair).item() for m in (0.0, 0.2, 0.5, 1.0)]
    assert losses == sorted(losses)
    assert len(set(losses)) == len(losses)
    # a margin so large that every negative violates it: every term is m - S_pos + S_neg
    m = 2.0
    if mode == "sum":
        # each positive appears in 2 query terms and 2 target terms; each negative in 2 terms
        negatives = sum(S[q][n] for q in range(3) for n in range(3) if q != n)
        positives = S[0][0] + S[1][1] + S[2][2]
        expected = (12 * m - 4 * positives + 2 * negatives) / 3
    else:
        hardest_rows = [max(S[0][1], S[0][2]), max(S[1][0], S[1][2]), max(S[2][0], S[2][1])]
        hardest_cols = [max(S[1][0], S[2][0]), max(S[0][1], S[2][1]), max(S[0][2], S[1][2])]
        positives = S[0][0] + S[1][1] + S[2][2]
        expected = (6 * m - 2 * positives + sum(hardest_rows) + sum(hardest_cols)) / 3
    loss = StructuredHingeLoss(margin=m, mode=mode)(*pair)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("mode", ["sum", "max"])
def test_zero_loss_when_positives_win_by_more_than_the_margin(mode: str) -> None:
    scores = [
        [0.9, 0.5, 0.1],
        [0.2, 0.8, 0.55],
        [-0.3, 0.4, 0.76],
    ]  # every positive beats every negative in its row and column by > 0.2
    queries, targets = _pair_for_scores(scores)
    targets.requires_grad_(True)
    loss = StructuredHingeLoss(margin=0.2, mode=mode)(queries, targets)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(targets.grad) == 0


def test_zero_loss_for_matching_unit_vectors() -> None:
    vectors = torch.nn.functional.normalize(torch.eye(5) + 0.01, dim=-1)
    for mode in ("sum", "max"):
        assert StructuredHingeLoss(0.2, mode)(vectors, vectors).item() == 0.0


def test_loss_is_positive_and_has_gradients_for_random_vectors() -> None:
    generator = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(8, 4, generator=generator), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(8, 4, generator=generator), dim=-1)
    q.requires_grad_(True)
    loss = StructuredHingeLoss(0.2, "max")(q, t)
    assert loss.item() > 0
    loss.backward()
    assert torch.count_nonzero(q.grad) > 0


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        StructuredHingeLoss(mode="mean")


def test_infonce_equals_cross_entropy_by_hand() -> None:
    scores = [[0.8, 0.1], [0.3, 0.5]]
    tau = 0.5
    l00, l01 = scores[0][0] / tau, scores[0][1] / tau
    l10, l11 = scores[1][0] / tau, scores[1][1] / tau
    # query direction (rows): softmax over targets; target direction (columns): over queries
    ce_rows = (
        -math.log(math.exp(l00) / (math.exp(l00) + math.exp(l01)))
        - math.log(math.exp(l11) / (math.exp(l10) + math.exp(l11)))
    ) / 2
    ce_cols = (
        -math.log(math.exp(l00) / (math.exp(l00) + math.exp(l10)))
        - math.log(math.exp(l11) / (math.exp(l01) + math.exp(l11)))
    ) / 2
    expected = (ce_rows + ce_cols) / 2
    loss = InfoNCELoss(temperature=tau)(*_pair_for_scores(scores))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_infonce_default_temperature() -> None:
    scores = [[0.8, 0.1], [0.3, 0.5]]
    tau = 0.05
    # -log softmax = log(1 + exp(l_neg - l_pos)) for two entries
    terms = [
        math.log1p(math.exp((scores[0][1] - scores[0][0]) / tau)),  # row 0
        math.log1p(math.exp((scores[1][0] - scores[1][1]) / tau)),  # row 1
        math.log1p(math.exp((scores[1][0] - scores[0][0]) / tau)),  # column 0
        math.log1p(math.exp((scores[0][1] - scores[1][1]) / tau)),  # column 1
    ]
    loss = InfoNCELoss()(*_pair_for_scores(scores))
    assert loss.item() == pytest.approx(sum(terms) / 4, abs=1e-9)


def test_make_loss_names() -> None:
    total = make_loss("sum", margin=0.3)
    assert isinstance(total, StructuredHingeLoss)
    assert (total.mode, total.margin) == ("sum", 0.3)
    hardest = make_loss("max")
    assert isinstance(hardest, StructuredHingeLoss)
    assert (hardest.mode, hardest.margin) == ("max", 0.2)
    assert isinstance(make_loss("infonce"), InfoNCELoss)
    with pytest.raises(ValueError):
        make_loss("hinge")

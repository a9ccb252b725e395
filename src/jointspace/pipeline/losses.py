"""Structured hinge loss (Kiros et al. 2014; VSE++, Faghri et al. 2018); InfoNCE as a reference."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class StructuredHingeLoss(nn.Module):
    """Bidirectional max-margin ranking loss over in-batch negatives.

    For L2-normalised `queries` and `targets` (row q of each is a positive pair) and S = Q Tᵀ:
    ``sum``:  L = Σ_q Σ_{n≠q} [m − S_qq + S_qn]_+  +  Σ_t Σ_{n≠t} [m − S_tt + S_nt]_+
    ``max``:  only the hardest negative per query and per target (VSE++).
    Divided by the batch size so the learning rate does not depend on it.
    """

    def __init__(self, margin: float = 0.2, mode: str = "sum") -> None:
        super().__init__()
        if mode not in ("sum", "max"):
            raise ValueError(f"mode must be 'sum' or 'max', not {mode!r}")
        self.margin = margin
        self.mode = mode

    def forward(self, queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        scores = queries @ targets.T
        positive = scores.diag()
        off_diagonal = ~torch.eye(len(scores), dtype=torch.bool, device=scores.device)
        # cost of each negative target for a query (rows) and of each negative query for a target
        cost_q = (self.margin + scores - positive[:, None]).clamp(min=0) * off_diagonal
        cost_t = (self.margin + scores - positive[None, :]).clamp(min=0) * off_diagonal
        if self.mode == "max":
            return (cost_q.max(dim=1).values.sum() + cost_t.max(dim=0).values.sum()) / len(scores)
        return (cost_q.sum() + cost_t.sum()) / len(scores)


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE (CLIP's loss) with a fixed temperature: a reference, not the paper's."""

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = queries @ targets.T / self.temperature
        labels = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def make_loss(name: str, margin: float = 0.2) -> nn.Module:
    """`sum` | `max` structured hinge, or `infonce`."""
    if name == "infonce":
        return InfoNCELoss()
    return StructuredHingeLoss(margin=margin, mode=name)

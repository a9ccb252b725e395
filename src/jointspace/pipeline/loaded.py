"""A loaded model with its backbone: turns a text and/or an image into a query vector."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..corpus.images import decode_image, read_image_bytes
from ..corpus.item import Item
from ..errors import BadItem, JointspaceError
from ..pipeline.backbone import Backbone
from ..pipeline.checkpoint import ModelCard, load_model
from ..pipeline.model import GatedEncoder


@dataclass
class QueryEncoder:
    """A checkpoint's gated encoder and, loaded on first use, the backbone it was trained on."""

    model: GatedEncoder
    card: ModelCard

    @classmethod
    def load(cls, model_dir: Path) -> QueryEncoder:
        model, card = load_model(model_dir)
        return cls(model, card)

    @cached_property
    def backbone(self) -> Backbone:
        backbone = Backbone(self.card.backbone["spec"])
        if backbone.fingerprint != self.card.backbone["fingerprint"]:
            raise JointspaceError(
                f"The backbone {self.card.backbone['spec']!r} installed here (fingerprint "
                f"{backbone.fingerprint}) differs from the one model {self.card.model_id} was "
                f"trained on ({self.card.backbone['fingerprint']}); install the same versions or "
                "retrain."
            )
        return backbone

    def image_features(self, path: Path) -> np.ndarray:
        """Backbone features of one image file; a clear error if it cannot be read."""
        try:
            data = read_image_bytes(Item(source="query", key=str(path), image=str(path)))
            image = decode_image(data, str(path))
        except BadItem as bad:
            raise JointspaceError(f"Cannot use {path} as a query image: {bad.reason}.") from bad
        return self.backbone.encode_images(self.backbone.preprocess(image)[None])

    def embed(self, text: str | None = None, image: Path | None = None) -> np.ndarray:
        """The query vector: the text tower for a text, the image tower for an image, the gated
        unit fusion for both."""
        if text is None and image is None:
            raise JointspaceError("Give a query: --text, --image, or both.")
        text_features = self.backbone.encode_texts([text]) if text is not None else None
        image_features = self.image_features(image) if image is not None else None
        with torch.inference_mode():
            if image_features is None:
                vector = self.model.encode_text(torch.from_numpy(text_features))
            elif text_features is None:
                vector = self.model.encode_image(torch.from_numpy(image_features))
            else:
                vector = self.model(
                    torch.from_numpy(image_features), torch.from_numpy(text_features)
                ).unit
        return vector[0].numpy()

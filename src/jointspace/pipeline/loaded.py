"""A loaded model: a checkpoint's gated encoder and, on first use, the backbone it was trained on.

Ingest embeds units with it and search embeds queries with it; both check it against the
collection's card first (`check_collection`), so the identity check lives here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import JointspaceError
from .backbone import Backbone
from .checkpoint import ModelCard, load_model
from .collection_card import check_same_model
from .model import GatedEncoder


@dataclass
class LoadedModel:
    """A checkpoint's gated encoder, its card, and its backbone (built on first use)."""

    model: GatedEncoder
    card: ModelCard

    @classmethod
    def load(cls, model_dir: str | Path) -> LoadedModel:
        model, card = load_model(Path(model_dir))
        return cls(model, card)

    @property
    def model_id(self) -> str:
        return self.card.model_id

    @property
    def backbone_fingerprint(self) -> str:
        return self.card.backbone["fingerprint"]

    def check_collection(self, collection: str, metadata: Mapping[str, Any]) -> None:
        """Refuse to serve a collection that another model embedded."""
        check_same_model(collection, metadata, self.card)

    @cached_property
    def backbone(self) -> Backbone:
        backbone = Backbone(self.card.backbone["spec"])
        if backbone.fingerprint != self.backbone_fingerprint:
            raise JointspaceError(
                f"The backbone {self.card.backbone['spec']!r} installed here (fingerprint "
                f"{backbone.fingerprint}) differs from the one model {self.card.model_id} was "
                f"trained on ({self.backbone_fingerprint}); install the same versions or "
                "retrain."
            )
        return backbone

    def embed(self, text: str | None = None, image: Image.Image | None = None) -> np.ndarray:
        """The query vector: the text tower for a text, the image tower for an image, the gated
        unit fusion for both."""
        if text is None and image is None:
            raise JointspaceError("Give a query: a text, an image, or both.")
        backbone = self.backbone
        text_features = backbone.encode_texts([text]) if text is not None else None
        image_features = (
            backbone.encode_images(backbone.preprocess(image)[None]) if image is not None else None
        )
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

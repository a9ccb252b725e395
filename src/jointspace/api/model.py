"""`Model`: a trained checkpoint, for embedding queries without a collection."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pipeline.loaded import LoadedModel
    from ..query.inputs import QueryImage


class Model:
    """A trained gated encoder (loaded on first use, with its backbone) and its card."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r})"

    @cached_property
    def loaded(self) -> LoadedModel:
        from ..pipeline.loaded import LoadedModel

        return LoadedModel.load(self.path)

    @property
    def model_id(self) -> str:
        """The model's id: a hash of its weights."""
        return self.loaded.model_id

    @property
    def card(self) -> dict[str, Any]:
        """The backbone it needs, its encoder's shape and how it was trained."""
        card = self.loaded.card
        return {
            "model_id": card.model_id,
            "path": card.path,
            "backbone": card.backbone,
            "encoder": card.encoder.to_dict(),
            # the digest of the training items is for the overlap check, not for reading
            "training": {k: v for k, v in card.training.items() if k != "seen"},
        }

    def embed(
        self, text: str | None = None, image: QueryImage | None = None, target: str = "unit"
    ) -> list[float]:
        """The query vector of a text, an image (path, bytes, PIL image or http(s) URL), or
        both (a unit, fused through the gate), to search the `target` named vector with."""
        from ..query.embedding import embed_query
        from ..query.search import check_target

        check_target(target)
        return embed_query(self.loaded, text, image)


def load_model(path: str | Path) -> Model:
    """The trained model in folder `path` (loaded on first use)."""
    return Model(path)

"""`Model`: a trained checkpoint, for embedding queries without a collection."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pipeline.compute import Compute
    from ..pipeline.loaded import LoadedModel
    from ..query.inputs import QueryImage


class Model:
    """A trained gated encoder (loaded on first use, with its backbone) and its card.

    `home`: the jointspace home whose `towers/` folder keeps the backbone's towers exported for
    fast cold queries (default: $JOINTSPACE_HOME when it is set; else none, and every new
    process builds the backbone through open_clip). `compute`: the device and precision the
    backbone runs at (default: resolved for this machine, see `jointspace.connect`)."""

    def __init__(
        self, path: str | Path, home: str | Path | None = None, compute: Compute | None = None
    ) -> None:
        self.path = Path(path)
        self.compute = compute
        if home is None and os.environ.get("JOINTSPACE_HOME"):
            home = os.environ["JOINTSPACE_HOME"]
        self.home = Path(home) if home is not None else None

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r})"

    @cached_property
    def loaded(self) -> LoadedModel:
        from ..pipeline.loaded import LoadedModel

        return LoadedModel.load(self.path, self.home, self.compute)

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


def load_model(
    path: str | Path,
    home: str | Path | None = None,
    *,
    device: str | None = None,
    precision: str | None = None,
    engine: str | None = None,
) -> Model:
    """The trained model in folder `path` (loaded on first use); `home` keeps its backbone's
    exported towers (see Model); `device`/`precision`/`engine` as `jointspace.connect` takes
    them."""
    from ..pipeline.compute import Compute

    return Model(path, home, Compute.resolve(device, precision, engine))

"""A loaded model: a checkpoint's gated encoder and, on first use, the backbone it was trained on.

Ingest embeds units with it and search embeds queries with it; both check it against the
collection's card first (`check_collection`), so the identity check lives here, once.

Queries take the short way when they can: with a home, the backbone's towers exported there
(pipeline/towers.py) serve a query without open_clip, and a text query loads only the text
tower. The first query builds the backbone through open_clip (the reference path, which
ingest, training and evaluation always take) and exports its towers for the next ones.
"""

from __future__ import annotations

import logging
import os
import shutil
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
from .compute import Compute
from .model import GatedEncoder
from .towers import DamagedExport, ExportedTowers, export_towers, towers_dir

# "0" makes every query take the open_clip path and export nothing (e.g. to measure it).
EXPORTED_TOWERS_ENV = "JOINTSPACE_EXPORTED_TOWERS"

log = logging.getLogger("jointspace")


def exported_towers_enabled() -> bool:
    return os.environ.get(EXPORTED_TOWERS_ENV, "1").strip().lower() not in ("0", "false", "no")


@dataclass
class LoadedModel:
    """A checkpoint's gated encoder, its card, and its backbone (built on first use). `home`:
    where exported towers are kept (None: queries always build the backbone). `compute`: the
    device and precision the backbone runs at (default: resolved for this machine)."""

    model: GatedEncoder
    card: ModelCard
    home: Path | None = None
    compute: Compute | None = None

    def __post_init__(self) -> None:
        self.compute = self.compute or Compute.resolve()

    @classmethod
    def load(
        cls, model_dir: str | Path, home: str | Path | None = None, compute: Compute | None = None
    ) -> LoadedModel:
        model, card = load_model(Path(model_dir))
        return cls(model, card, Path(home) if home is not None else None, compute)

    @property
    def model_id(self) -> str:
        return self.card.model_id

    @property
    def backbone_fingerprint(self) -> str:
        return self.card.backbone["fingerprint"]

    @property
    def features_key(self) -> str:
        """What this model's backbone features are cached and exported under, at its precision
        and engine."""
        assert self.compute is not None
        return self.compute.features_key(self.backbone_fingerprint)

    def check_collection(self, collection: str, metadata: Mapping[str, Any]) -> None:
        """Refuse to serve a collection that another model embedded."""
        check_same_model(collection, metadata, self.card)

    @cached_property
    def backbone(self) -> Backbone:
        """The backbone through open_clip, checked to be the one the model was trained on; with
        a home and no export of it there yet, its towers are exported for later queries."""
        backbone = Backbone(self.card.backbone["spec"], self.compute)
        if backbone.fingerprint != self.backbone_fingerprint:
            raise JointspaceError(
                f"The backbone {self.card.backbone['spec']!r} installed here (fingerprint "
                f"{backbone.fingerprint}) differs from the one model {self.card.model_id} was "
                f"trained on ({self.backbone_fingerprint}); install the same versions or "
                "retrain."
            )
        if self._towers_folder is not None and self.__dict__.get("towers") is None:
            self.__dict__["towers"] = self._export(backbone, self._towers_folder)
        return backbone

    @property
    def _towers_folder(self) -> Path | None:
        """Where the towers are exported; None without a home, or on a GPU (where the
        open_clip backbone runs: the exported towers are CPU programs)."""
        assert self.compute is not None
        if self.home is None or not exported_towers_enabled() or self.compute.on_gpu:
            return None
        return towers_dir(self.home, self.features_key)

    @cached_property
    def towers(self) -> ExportedTowers | None:
        """The backbone's exported towers in the home, if there are (None otherwise). A damaged
        export is removed with a warning; the next query that builds the backbone makes it
        again."""
        folder = self._towers_folder
        if folder is None:
            return None
        try:
            return ExportedTowers.open(folder, self.features_key)
        except DamagedExport as damage:
            self._discard(folder, damage)
            return None

    def _export(self, backbone: Backbone, folder: Path) -> ExportedTowers | None:
        """Export the towers, or say why not: a query never fails for want of an export."""
        try:
            existing = ExportedTowers.open(folder, backbone.features_key)
        except DamagedExport:
            existing = None
        if existing is not None:
            return existing
        try:
            return export_towers(backbone, folder)
        except Exception as error:  # noqa: BLE001 - the open_clip path still answers the query
            log.warning(
                "Could not save the backbone's towers to %s (%s); queries keep loading open_clip.",
                folder,
                getattr(error, "strerror", None) or error,
            )
            return None

    def _discard(self, folder: Path, damage: DamagedExport) -> None:
        log.warning(
            "The exported towers in %s are damaged (%s); they are removed and exported again "
            "from the open_clip backbone.",
            folder,
            damage,
        )
        shutil.rmtree(folder, ignore_errors=True)

    def _encoder(self, text: bool, image: bool) -> Backbone | ExportedTowers:
        """What embeds a query: the exported towers when they hold every side it needs, else
        the open_clip backbone."""
        towers = self.towers
        if towers is not None and (towers.has_text or not text) and (towers.has_image or not image):
            return towers
        return self.backbone

    def bulk_encoder(self) -> Backbone | ExportedTowers:
        """What embeds a corpus (ingest): the exported towers when both are there (they load in
        a fraction of a second; open_clip takes seconds), else the backbone, which exports
        them for the next run."""
        return self._encoder(text=True, image=True)

    def embed(self, text: str | None = None, image: Image.Image | None = None) -> np.ndarray:
        """The query vector: the text tower for a text, the image tower for an image, the gated
        unit fusion for both. Only the towers the query needs are loaded."""
        if text is None and image is None:
            raise JointspaceError("Give a query: a text, an image, or both.")
        encoder = self._encoder(text is not None, image is not None)
        try:
            text_features, image_features = _features(encoder, text, image)
        except DamagedExport as damage:
            assert self._towers_folder is not None
            self._discard(self._towers_folder, damage)
            self.__dict__["towers"] = None
            text_features, image_features = _features(self.backbone, text, image)
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


def _features(
    encoder: Backbone | ExportedTowers, text: str | None, image: Image.Image | None
) -> tuple[Any, Any]:
    text_features = encoder.encode_texts([text]) if text is not None else None
    image_features = (
        encoder.encode_images(encoder.preprocess(image)[None]) if image is not None else None
    )
    return text_features, image_features

"""The contract between a model and a collection, in one place.

A collection records, at creation, which model embedded it (id = hash of the weights, path),
the backbone it needs (spec and fingerprint), its named vectors and their dims, and the payload
fields it can be filtered on. Ingest writes this card; every later ingest or search checks the
model it is given against it, so two models never mix in one collection.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import JointspaceError
from .checkpoint import ModelCard

VECTOR_NAMES = ("unit", "image", "text")


def collection_card(card: ModelCard) -> dict[str, Any]:
    """The metadata a new collection records about the model that fills it (the store adds
    the filterable payload fields it indexes)."""
    return {
        "model_id": card.model_id,
        "model_path": card.path,
        "backbone": card.backbone["spec"],
        "backbone_fingerprint": card.backbone["fingerprint"],
        "dim": card.encoder.dim,
    }


def vector_dims(card: ModelCard) -> dict[str, int]:
    """The named vectors of a collection this model fills, and their dims."""
    return {name: card.encoder.dim for name in VECTOR_NAMES}


def model_dir_for(
    collection: str, metadata: Mapping[str, Any], model: str | Path | None = None
) -> Path:
    """The model to use with a collection: `model` when given, else the folder the collection
    records (which must still be there)."""
    if model is not None:
        return Path(model)
    path = metadata.get("model_path")
    if not path:
        raise JointspaceError(
            f"Collection '{collection}' does not record its model; pass --model MODEL_DIR."
        )
    if not Path(path).is_dir():
        raise JointspaceError(
            f"Collection '{collection}' records its model at {path}, which is missing (moved or "
            "deleted?); pass --model MODEL_DIR with that model."
        )
    return Path(path)


def check_same_model(collection: str, metadata: Mapping[str, Any], card: ModelCard) -> None:
    """Refuse a model other than the one that embedded the collection, naming both."""
    recorded = metadata.get("model_id")
    if recorded != card.model_id:
        raise JointspaceError(
            f"Collection '{collection}' was embedded with model {recorded} "
            f"({metadata.get('model_path')}), not {card.model_id} ({card.path}); use that "
            "model, or ingest into a new collection."
        )

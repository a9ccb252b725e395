"""Search a collection with a text, an image, or both."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import JointspaceError
from ..store.base import VECTOR_NAMES, Hit, Store
from .encoder import QueryEncoder


def model_dir_of(store: Store, collection: str) -> Path:
    """The checkpoint a collection records as the model that embedded it."""
    path = store.info(collection).metadata.get("model_path")
    if not path:
        raise JointspaceError(
            f"Collection '{collection}' does not record its model; pass --model MODEL_DIR."
        )
    return Path(path)


def open_query_encoder(store: Store, collection: str, model_dir: Path | None) -> QueryEncoder:
    """The collection's own model, or `model_dir` after checking it is that same model."""
    encoder = QueryEncoder.load(model_dir or model_dir_of(store, collection))
    recorded = store.info(collection).metadata.get("model_id")
    if recorded != encoder.card.model_id:
        raise JointspaceError(
            f"Collection '{collection}' was embedded with model {recorded}, not "
            f"{encoder.card.model_id} ({encoder.card.path}); query it with its own model."
        )
    return encoder


def search(
    store: Store,
    collection: str,
    encoder: QueryEncoder,
    text: str | None = None,
    image: Path | None = None,
    target: str = "unit",
    k: int = 10,
    where: Mapping[str, str] | None = None,
) -> list[Hit]:
    """The k best points of `target` (unit, image or text vectors) for the query."""
    if target not in VECTOR_NAMES:
        raise JointspaceError(f"Unknown target {target!r}; use one of {', '.join(VECTOR_NAMES)}.")
    if k < 1:
        raise JointspaceError("-k must be at least 1.")
    vector = encoder.embed(text=text, image=image)
    return store.search(collection, target, vector.tolist(), k, where)

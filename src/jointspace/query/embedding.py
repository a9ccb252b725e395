"""A query's vector: its text, its image, or both (a unit, through the gate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InvalidQuery

if TYPE_CHECKING:
    from ..pipeline.loaded import LoadedModel
    from .inputs import QueryImage


def embed_query(
    model: LoadedModel, text: str | None = None, image: QueryImage | None = None
) -> list[float]:
    """The query vector of a text, an image (path, bytes, PIL image or http(s) URL), or both."""
    if text is None and image is None:
        raise InvalidQuery("Give a query: a text, an image, or both.")
    if text is not None and not text.strip():
        raise InvalidQuery("The text query is empty; give some words.")
    picture = None
    if image is not None:
        from .inputs import load_query_image

        picture = load_query_image(image)
    return model.embed(text=text, image=picture).tolist()

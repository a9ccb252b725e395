"""`Collection`: search, embed and describe one collection with the model that embedded it."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidQuery
from ..query.hits import Hit
from ..query.search import search_by_id, search_by_vector
from .model import Model
from .reports import CollectionSummary

if TYPE_CHECKING:
    from ..query.inputs import QueryImage
    from ..query.items import ItemImage
    from .space import Space


class Collection:
    """One collection of a Space. Its model (and backbone) is loaded on the first search or
    embed and kept: later calls reuse it."""

    def __init__(self, space: Space, name: str, model: str | Path | None = None) -> None:
        self.space, self.name = space, name
        self._model_dir = model

    def __repr__(self) -> str:
        return f"Collection({self.name!r}, {self.space!r})"

    def info(self) -> CollectionSummary:
        """Points, vectors, the card the collection records (model, backbone, filterable
        fields) and its aliases."""
        store = self.space.store
        info = store.info(store.resolve(self.name))
        return CollectionSummary.from_info(info, store.list_aliases())

    def labels(self, top: int = 50, scan: int = 10_000) -> list[tuple[str, int]]:
        """The `top` most common label values and their counts, most common first, among the
        first `scan` points (a sample of a larger collection)."""
        from ..query.items import label_counts

        return label_counts(self.space.store, self.name, top, scan)

    def image(self, id: str, size: str = "thumb") -> ItemImage:
        """The stored point `id`'s own image (never another path): "thumb", a JPEG whose
        longest side is 256 px, or "full", the original bytes with their media type (an SVG
        rendered to PNG). An image stored inline (Parquet bytes, WebDataset) is shown by the
        thumbnail ingest kept in the home. Raises NotFound for no such point or no image."""
        from ..query.items import point_image

        return point_image(self.space.store, self.name, id, size, self.space.home / "thumbnails")

    @cached_property
    def model(self) -> Model:
        """The model that embedded the collection (or the one given, checked to be it)."""
        from ..pipeline.collection_card import model_dir_for

        metadata = self.space.store.info(self.name).metadata
        model_dir = model_dir_for(self.name, metadata, self._model_dir)
        model = Model(model_dir, self.space.home, self.space.compute)
        model.loaded.check_collection(self.name, metadata)
        return model

    def embed(
        self, text: str | None = None, image: QueryImage | None = None, target: str = "unit"
    ) -> list[float]:
        """The query vector for a text, an image (path, bytes, PIL image or http(s) URL) or
        both (a unit, fused through the gate), to search the `target` named vector with."""
        return self.model.embed(text, image, target)

    def search(
        self,
        text: str | None = None,
        image: QueryImage | None = None,
        id: str | None = None,
        target: str = "unit",
        k: int = 10,
        where: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The k best `target` points (unit, image or text) for a text, an image, both, or a
        stored point's id ("more like this", no re-embedding). `where` filters on payload:
        `{"labels": "animals"}`, `{"labels": ["birds", "fish"]}` (any of),
        `{"width": {"gte": 200}}`; several keys must all hold."""
        if id is not None:
            if text is not None or image is not None:
                raise InvalidQuery("Search by id, or by text and/or image, not both.")
            return self.similar(id, k=k, target=target, where=where)
        vector = self.embed(text=text, image=image, target=target)
        return search_by_vector(self.space.store, self.name, vector, target, k, where)

    def similar(
        self, id: str, k: int = 10, target: str = "unit", where: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """The k points nearest to the stored point `id` by its own `target` vector."""
        return search_by_id(self.space.store, self.name, id, target, k, where)

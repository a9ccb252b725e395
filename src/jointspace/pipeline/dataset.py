"""A corpus's backbone features as arrays: what training and evaluation work on."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..corpus.item import Item, Skipped
from ..corpus.keywords import keyword_query
from .backbone import Backbone
from .features import EncodedItem, FeatureCache, encode_items, encode_texts, stack_features


@dataclass
class FeatureSet:
    """Aligned rows, one per item. A missing modality has a zero row and a False mask; `query`
    holds the features of a keyword query derived from the item's caption. Items of one group
    (renderings of one picture) count as the same item when relevance is "the same item"."""

    keys: list[str]
    groups: list[str]
    labels: list[str | None]
    image: np.ndarray
    image_mask: np.ndarray
    text: np.ndarray
    text_mask: np.ndarray
    query: np.ndarray
    items: list[Item] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, rows: Sequence[int] | np.ndarray) -> FeatureSet:
        """The rows given, in that order."""
        rows = np.asarray(rows, dtype=int)
        return FeatureSet(
            keys=[self.keys[i] for i in rows],
            groups=[self.groups[i] for i in rows],
            labels=[self.labels[i] for i in rows],
            image=self.image[rows],
            image_mask=self.image_mask[rows],
            text=self.text[rows],
            text_mask=self.text_mask[rows],
            query=self.query[rows],
            items=[self.items[i] for i in rows] if self.items else [],
        )


def build_feature_set(
    records: Iterable[Item | Skipped],
    backbone: Backbone,
    cache: FeatureCache,
    workers: int = 1,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[FeatureSet, list[Skipped]]:
    """Encode (or fetch from the cache) every item; returns the features and the skipped items.
    `on_batch(n)` is called after each batch of n records (for progress bars)."""
    encoded: list[EncodedItem] = []
    skipped: list[Skipped] = []
    for batch in encode_items(records, backbone, cache, workers=workers):
        for record in batch:
            (skipped if isinstance(record, Skipped) else encoded).append(record)
        if on_batch:
            on_batch(len(batch))
    image, text, image_mask, text_mask = stack_features(
        encoded, backbone.image_dim, backbone.text_dim
    )
    query = np.zeros_like(text)
    captioned = [row for row, e in enumerate(encoded) if e.item.text]
    if captioned:
        queries = [keyword_query(encoded[row].item.text) for row in captioned]
        query[captioned] = encode_texts(queries, backbone, cache)
    features = FeatureSet(
        keys=[e.item.key for e in encoded],
        groups=[e.item.group or e.item.key for e in encoded],
        labels=[e.item.labels[0] if e.item.labels else None for e in encoded],
        image=image,
        image_mask=image_mask,
        text=text,
        text_mask=text_mask,
        query=query,
        items=[e.item for e in encoded],
    )
    return features, skipped

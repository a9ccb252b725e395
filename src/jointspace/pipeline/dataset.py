"""A corpus's backbone features as arrays: what training and evaluation work on."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
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
    (renderings of one picture) count as the same item when relevance is "the same item".
    `sources` names the source each row was read from (one given path, see `SourceNames`);
    empty for features made without sources (one source)."""

    keys: list[str]
    groups: list[str]
    labels: list[str | None]
    image: np.ndarray
    image_mask: np.ndarray
    text: np.ndarray
    text_mask: np.ndarray
    query: np.ndarray
    items: list[Item] = field(default_factory=list, repr=False)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def source_rows(self) -> dict[str, np.ndarray]:
        """Each source's rows, in row order, sources in order of first appearance; features
        without sources are one source named ""."""
        if not self.sources:
            return {"": np.arange(len(self))}
        names = np.array(self.sources, dtype=object)
        return {name: np.flatnonzero(names == name) for name in dict.fromkeys(self.sources)}

    def by_source(self) -> dict[str, FeatureSet]:
        """Each source's rows as a feature set (the whole set when there is one source)."""
        rows = self.source_rows()
        if len(rows) == 1:
            return {next(iter(rows)): self}
        return {name: self.subset(r) for name, r in rows.items()}

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
            sources=[self.sources[i] for i in rows] if self.sources else [],
        )


class SourceNames:
    """The records of several sources, one after the other, remembering which source each
    came from: a source is one path given to a run, named as given, and every record it
    yields (whatever its reader put in `record.source`: the resolved folder, each shard of a
    WebDataset, ...) is named after it. Iterate it once; then `name_of(record)`."""

    def __init__(self, streams: Sequence[tuple[str, Iterable[Item | Skipped]]]) -> None:
        self.streams = list(streams)
        self.names = [name for name, _ in self.streams]
        self._by_reader_source: dict[str, str] = {}

    def __iter__(self) -> Iterator[Item | Skipped]:
        for name, stream in self.streams:
            for record in stream:
                self._by_reader_source.setdefault(record.source, name)
                yield record

    def name_of(self, record: Item | Skipped) -> str:
        """The name of the source `record` was read from (its reader's source when unknown)."""
        return self._by_reader_source.get(record.source, record.source)


def build_feature_set(
    records: Iterable[Item | Skipped],
    backbone: Backbone,
    cache: FeatureCache,
    workers: int = 1,
    on_batch: Callable[[int], None] | None = None,
    source_of: Callable[[Item | Skipped], str] | None = None,
) -> tuple[FeatureSet, list[Skipped]]:
    """Encode (or fetch from the cache) every item; returns the features and the skipped items.
    `on_batch(n)` is called after each batch of n records (for progress bars). `source_of`
    names each record's source; without it (and unless `records` is a `SourceNames`) every
    record is of one source, named after its reader's `record.source` when they all share one."""
    if source_of is None and isinstance(records, SourceNames):
        source_of = records.name_of
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
        sources=_source_names(encoded, source_of),
    )
    return features, skipped


def _source_names(
    encoded: list[EncodedItem], source_of: Callable[[Item | Skipped], str] | None
) -> list[str]:
    if source_of is not None:
        return [source_of(e.item) for e in encoded]
    readers = {e.item.source for e in encoded}
    return [readers.pop() if len(readers) == 1 else "corpus"] * len(encoded)

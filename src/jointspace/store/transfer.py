"""Copying a collection between stores (embedded ↔ server) without re-embedding."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from ..errors import JointspaceError
from .base import Store


def copy_collection(
    source: Store,
    name: str,
    target: Store,
    target_name: str | None = None,
    batch_size: int = 256,
    keyword_fields: tuple[str, ...] = (),
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Copy every point (vectors and payload) of `name` in `source` into `target`, creating the
    target collection with the same vectors and metadata if needed. Resumable: points already
    in the target are skipped. Verified by count at the end; returns the number copied.
    `on_batch(copied, seen)` reports progress. A new target collection is quantized as the
    source is; its index is not built here (call target.build_index where wanted)."""
    target_name = target_name or name
    info = source.info(name)
    if target.has_collection(target_name):
        existing = target.info(target_name)
        if existing.metadata.get("model_id") != info.metadata.get("model_id"):
            raise JointspaceError(
                f"'{target_name}' already exists at the target with model "
                f"{existing.metadata.get('model_id')}, not {info.metadata.get('model_id')}; "
                "drop it there or copy under another name."
            )
    else:
        target.create_collection(
            target_name, info.vectors, info.metadata, keyword_fields, quantize=info.quantize
        )
    copied = seen = 0
    points = source.scroll(name, batch_size)
    with target.bulk(target_name):
        while batch := list(itertools.islice(points, batch_size)):
            present = target.existing_ids(target_name, [p.id for p in batch])
            missing = [p for p in batch if p.id not in present]
            if missing:
                target.upsert(target_name, missing)
            copied, seen = copied + len(missing), seen + len(batch)
            if on_batch:
                on_batch(copied, seen)
    expected, actual = source.count(name), target.count(target_name)
    if actual != expected:
        raise JointspaceError(
            f"After copying, '{target_name}' holds {actual} points but '{name}' holds "
            f"{expected}; re-run the same command to finish (it resumes)."
        )
    return copied

"""Search one collection: by a query vector, or by a stored point's own vector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidQuery, NotFound
from ..store.base import VECTOR_NAMES, Store
from .hits import Hit

Where = Mapping[str, Any]
TARGETS = VECTOR_NAMES


def check_target(target: str) -> None:
    """InvalidQuery for a target that is not one of the named vectors."""
    if target not in VECTOR_NAMES:
        raise InvalidQuery(f"Unknown target {target!r}; use one of {', '.join(VECTOR_NAMES)}.")


def check_k(k: int) -> None:
    """InvalidQuery for a k below 1."""
    if k < 1:
        raise InvalidQuery(f"k must be at least 1 (got {k}).")


def search_by_vector(
    store: Store,
    collection: str,
    vector: Sequence[float],
    target: str = "unit",
    k: int = 10,
    where: Where | None = None,
) -> list[Hit]:
    """The k best points of `target` (unit, image or text vectors) for a query vector."""
    check_target(target)
    check_k(k)
    return [Hit.from_stored(h) for h in store.search(collection, target, list(vector), k, where)]


def search_by_id(
    store: Store,
    collection: str,
    point_id: str,
    target: str = "unit",
    k: int = 10,
    where: Where | None = None,
) -> list[Hit]:
    """ "More like this": the k points nearest to a stored point's own `target` vector (no
    re-embedding), the point itself left out."""
    check_target(target)
    check_k(k)
    points = store.retrieve(collection, [point_id])
    if not points:
        raise NotFound(f"Collection '{collection}' has no point with id {point_id}.")
    vector = points[0].vectors.get(target)
    if vector is None:
        raise InvalidQuery(
            f"Point {point_id} has no {target} vector (its item has no "
            f"{'image' if target == 'image' else 'text'}); search another target."
        )
    hits = search_by_vector(store, collection, vector, target, k + 1, where)
    return [hit for hit in hits if hit.id != points[0].id][:k]


def parse_where(conditions: Sequence[str]) -> dict[str, Any]:
    """A `where` dict from command-line conditions: KEY=VALUE, KEY=A,B (any of), KEY>=N,
    KEY<N ...; repeated keys must all hold."""
    from ..store.filters import parse_conditions

    return parse_conditions(conditions)

"""Helpers shared by the store backends: name checks, id normalisation, vector conversion."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jointspace.errors import JointspaceError

# A collection name becomes a directory name for Edge and a URL path segment for a server, so
# it is limited to characters that are safe in both.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_name(name: str) -> None:
    """Raise JointspaceError unless `name` is a usable collection name."""
    if not _NAME.fullmatch(name):
        raise JointspaceError(
            f"Invalid collection name {name!r}: use up to 128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit."
        )


def canonical_ids(ids: Iterable[str]) -> dict[str, str]:
    """Map each id's canonical UUID form (what Qdrant returns) to the id as given."""
    out: dict[str, str] = {}
    for given in ids:
        try:
            out[str(uuid.UUID(str(given)))] = given
        except ValueError:
            raise JointspaceError(
                f"Point id {given!r} is not a UUID; point ids must be UUID strings."
            ) from None
    return out


def uuid_ids(ids: Iterable[str]) -> dict[str, str]:
    """Like canonical_ids, leaving out the ids that are not UUIDs (no point can have them)."""
    out: dict[str, str] = {}
    for given in ids:
        with contextlib.suppress(ValueError):
            out[str(uuid.UUID(str(given)))] = given
    return out


def as_floats(vector: Sequence[float] | Any) -> list[float]:
    """A plain list of floats from a list, tuple or numpy array (the Qdrant bindings want lists)."""
    tolist = getattr(vector, "tolist", None)
    values = tolist() if callable(tolist) else vector
    return [float(x) for x in values]


def clean_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as stored: Qdrant's metadata update treats a None value as "delete this key", so
    top-level None values are dropped by both backends alike."""
    return {key: value for key, value in metadata.items() if value is not None}


def check_dims(name: str, vector_name: str, dims: Mapping[str, int], vector: Sequence) -> None:
    """Raise JointspaceError if the collection lacks `vector_name` or its size differs."""
    if vector_name not in dims:
        have = ", ".join(sorted(dims))
        raise JointspaceError(
            f"Collection '{name}' has no '{vector_name}' vector (it has {have}); "
            "search one of those."
        )
    if len(vector) != dims[vector_name]:
        raise JointspaceError(
            f"The query vector has {len(vector)} dimensions but collection '{name}' stores "
            f"{dims[vector_name]}-dimensional '{vector_name}' vectors; query it with the model "
            "that embedded it."
        )

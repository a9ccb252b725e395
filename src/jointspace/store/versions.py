"""Versioned collections behind an alias: `stamps` → `stamps_v2`, for zero-downtime re-ingests.

A re-ingest with `--swap` fills `NAME_v(N+1)` while queries keep using the alias `NAME`, then
points the alias at the new version in one atomic switch. Old versions stay until pruned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import JointspaceError
from .base import Store


@dataclass(frozen=True)
class Version:
    """One version of an aliased collection."""

    name: str
    number: int
    points: int
    current: bool


def _pattern(alias: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(alias)}_v(\d+)")


def versions(store: Store, alias: str) -> list[Version]:
    """The versions of `alias` (collections named ALIAS_vN), oldest first."""
    current = store.list_aliases().get(alias)
    found = []
    for name in store.list_collections():
        match = _pattern(alias).fullmatch(name)
        if match:
            found.append(Version(name, int(match.group(1)), store.count(name), name == current))
    return sorted(found, key=lambda v: v.number)


def next_version(store: Store, alias: str) -> str:
    """The name of the version a swap ingest fills next. A plain collection already named
    `alias` cannot become an alias: say so before any work starts."""
    if alias not in store.list_aliases() and store.has_collection(alias):
        raise JointspaceError(
            f"'{alias}' is a plain collection, so --swap cannot put an alias in its place; "
            f"ingest into a new name with --swap, or drop '{alias}' first."
        )
    existing = versions(store, alias)
    return f"{alias}_v{existing[-1].number + 1 if existing else 1}"


def prune(store: Store, alias: str, keep: int = 0) -> list[str]:
    """Drop old versions of `alias`, keeping the current one and the `keep` newest others;
    returns the dropped names."""
    old = [v for v in versions(store, alias) if not v.current]
    doomed = old[: max(0, len(old) - keep)]
    for version in doomed:
        store.drop_collection(version.name)
    return [v.name for v in doomed]

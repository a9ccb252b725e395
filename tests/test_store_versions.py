"""Versioned collections behind aliases, copying collections between stores, and snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Backend, create, point

from jointspace.errors import JointspaceError
from jointspace.store import open_store
from jointspace.store.base import Snapshot, Store
from jointspace.store.edge import EdgeStore
from jointspace.store.server import ServerStore
from jointspace.store.transfer import copy_collection
from jointspace.store.versions import next_version, prune, versions


def _fill(store: Store, name: str, n: int, model: str = "m1") -> None:
    create(store, name, model_id=model)
    store.upsert(name, [point(i, degrees=i) for i in range(n)])


def test_swap_versions_and_prune(store: Store, backend: Backend) -> None:
    alias = backend.name
    assert next_version(store, alias) == f"{alias}_v1"
    _fill(store, f"{alias}_v1", 3)
    store.set_alias(alias, f"{alias}_v1")
    assert next_version(store, alias) == f"{alias}_v2"
    _fill(store, f"{alias}_v2", 5)
    store.set_alias(alias, f"{alias}_v2")
    _fill(store, f"{alias}_v3", 7)  # a swap that was never switched to
    listed = versions(store, alias)
    assert [(v.number, v.points, v.current) for v in listed] == [
        (1, 3, False),
        (2, 5, True),
        (3, 7, False),
    ]
    assert store.count(alias) == 5  # queries through the alias see the current version
    assert prune(store, alias, keep=1) == [f"{alias}_v1"]
    assert prune(store, alias) == [f"{alias}_v3"]
    assert [v.name for v in versions(store, alias)] == [f"{alias}_v2"]
    assert store.count(alias) == 5


def test_swap_refuses_to_shadow_a_plain_collection(store: Store, backend: Backend) -> None:
    _fill(store, backend.name, 2)
    with pytest.raises(JointspaceError, match="plain collection"):
        next_version(store, backend.name)


@pytest.mark.parametrize("direction", ["publish", "pull"])
def test_copy_between_embedded_and_server_is_complete_and_resumable(
    tmp_path: Path, direction: str
) -> None:
    edge, server = EdgeStore(tmp_path / "home"), ServerStore.local(tmp_path / "qdrant")
    source, target = (edge, server) if direction == "publish" else (server, edge)
    try:
        _fill(source, "stamps", 600)
        # a previous, interrupted copy got part of the way
        target.create_collection(
            "stamps", source.info("stamps").vectors, source.info("stamps").metadata
        )
        target.upsert("stamps", [point(i, degrees=i) for i in range(0, 600, 3)])
        progress: list[tuple[int, int]] = []
        copied = copy_collection(
            source, "stamps", target, batch_size=100, on_batch=lambda c, s: progress.append((c, s))
        )
        assert copied == 400 and progress[-1] == (400, 600)
        assert target.count("stamps") == 600
        assert target.info("stamps").metadata == source.info("stamps").metadata
        original = {p.id: p for p in source.scroll("stamps")}
        for p in target.scroll("stamps"):
            assert p.payload == original[p.id].payload
            assert p.vectors["unit"] == pytest.approx(original[p.id].vectors["unit"], abs=1e-6)
        assert copy_collection(source, "stamps", target) == 0  # nothing left to do
    finally:
        edge.close()
        server.close()


def test_copy_refuses_a_target_embedded_by_another_model(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "a") as source, EdgeStore(tmp_path / "b") as target:
        _fill(source, "stamps", 3, model="m1")
        _fill(target, "stamps", 3, model="m2")
        with pytest.raises(JointspaceError, match="m2"):
            copy_collection(source, "stamps", target)


def test_snapshots_need_a_server(tmp_path: Path) -> None:
    with ServerStore.local(tmp_path / "qdrant") as local:
        assert local.supports_snapshots is False
        _fill(local, "stamps", 2)
        with pytest.raises(JointspaceError, match="need a Qdrant server"):
            local.create_snapshot("stamps")


def test_snapshots_are_a_capability_of_the_store(tmp_path: Path) -> None:
    """The embedded store says in one sentence what to do instead; a server store says it can."""
    assert ServerStore.supports_snapshots is True
    with open_store(home=tmp_path) as embedded:
        assert isinstance(embedded, EdgeStore) and embedded.supports_snapshots is False
        _fill(embedded, "stamps", 2)
        calls = [
            lambda: embedded.create_snapshot("stamps"),
            lambda: embedded.list_snapshots("stamps"),
            lambda: embedded.restore_snapshot("stamps", "stamps-1.snapshot"),
        ]
        for call in calls:
            with pytest.raises(JointspaceError) as err:
                call()
            assert str(err.value) == (
                "Snapshots are for server collections: set --qdrant-url or QDRANT_URL (the "
                "embedded store is a folder; back up --home instead)."
            )
    assert Snapshot("s", 3, "2025-01-01") == Snapshot(name="s", size=3, created="2025-01-01")

"""Versioned collections behind aliases, copying collections between stores, and snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_store import Backend, backend, create, point, store  # noqa: F401 - shared fixtures

from jointspace.errors import JointspaceError
from jointspace.store.base import Store
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
    edge, server = EdgeStore(tmp_path / "home"), ServerStore.connect(path=tmp_path / "qdrant")
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
    with ServerStore.connect(path=tmp_path / "qdrant") as local:
        _fill(local, "stamps", 2)
        with pytest.raises(JointspaceError, match="need a Qdrant server"):
            local.create_snapshot("stamps")

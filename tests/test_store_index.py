"""The HNSW index and int8 quantization of the store: build_index, indexed searches (with and
without filters, with the exact override), points added after a build, reopening, and
quantization recorded in info. Real Qdrant Edge on small collections (2,000 32-d points: a
build takes well under a second), plus the server backend where it applies (qdrant-client's
local mode accepts the settings and searches exactly). No timing thresholds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import Backend

from jointspace.errors import JointspaceError
from jointspace.store import edge as edge_module
from jointspace.store.base import Point, Store
from jointspace.store.edge import EdgeStore
from jointspace.store.indexing import (
    FILTERED_HNSW_EF,
    FULL_SCAN_UNITS,
    HNSW_EF,
    INDEX_THRESHOLD,
    QUANTIZE_KINDS,
    check_quantize,
    full_scan_threshold_kb,
    search_ef,
    should_build_index,
)
from jointspace.store.transfer import copy_collection

N = 2000
DIM = 32
VECTORS = {"unit": DIM, "image": DIM, "text": DIM}
FIELDS = {"labels": "keyword", "split": "keyword", "width": "integer"}
LABELS = ("animals", "food", "plants", "people", "symbols")


def pid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"index-point-{n}"))


def data(count: int = N, seed: int = 0, start: int = 0) -> np.ndarray:
    """`count` unit vectors around 40 random centres (easy data: every point's nearest
    neighbours are clear), the same for the same seed."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM))
    vectors = centres[rng.integers(0, 40, count)] + 0.35 * rng.standard_normal((count, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def points(vectors: np.ndarray, start: int = 0) -> list[Point]:
    out = []
    for offset, vec in enumerate(vectors):
        n = start + offset
        payload = {
            "n": n,
            "labels": [LABELS[n % 5], "all"],
            "split": "test" if n % 4 == 0 else "train",
            "width": 10 * (n % 50),
        }
        out.append(Point(pid(n), {"unit": vec, "image": vec, "text": vec[::-1]}, payload))
    return out


def fill(store: Store, name: str, vectors: np.ndarray, quantize: str | None = None) -> None:
    store.create_collection(name, VECTORS, {"model": "m1"}, fields=FIELDS, quantize=quantize)
    for start in range(0, len(vectors), 500):
        store.upsert(name, points(vectors[start : start + 500], start))


def top_ids(store: Store, name: str, query: np.ndarray, k: int = 10, **kwargs) -> list[str]:
    return [h.id for h in store.search(name, "unit", query, k, **kwargs)]


def indexed_vectors(store: EdgeStore, name: str) -> int:
    """How many vectors Edge holds in HNSW-indexed segments (its own count)."""
    return store._shard(name).info().indexed_vectors_count


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeStore]:
    store = EdgeStore(tmp_path / "home")
    yield store
    store.close()


@pytest.fixture(scope="module")
def indexed_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded store with collection "idx" (N points, indexed) and "q8" (the same points,
    int8, indexed); the tests reopen it (each test its own store, closed afterwards). Their
    full-scan threshold is lowered to 64 points, so that the graph is walked, as at scale (by
    default a segment of fewer than FULL_SCAN_UNITS is scanned)."""
    home = tmp_path_factory.mktemp("indexed") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(edge_module, "full_scan_threshold_kb", lambda dims: 64 * DIM * 4 // 1024)
        with EdgeStore(home) as store:
            for name, quantize in (("idx", None), ("q8", "int8")):
                fill(store, name, data(), quantize)
                store.build_index(name)
    return home


@pytest.fixture
def indexed(indexed_home: Path) -> Iterator[EdgeStore]:
    store = EdgeStore(indexed_home)
    yield store
    store.close()


# -- the policy ------------------------------------------------------------------------------


def test_filtered_searches_get_more_candidates() -> None:
    assert search_ef(None, filtered=False) == HNSW_EF
    assert search_ef(None, filtered=True) == FILTERED_HNSW_EF > HNSW_EF
    assert search_ef(40, filtered=True) == 40
    # FULL_SCAN_UNITS units of the smaller vector (384-d float32), in KB
    assert full_scan_threshold_kb({"unit": 512, "text": 384}) == FULL_SCAN_UNITS * 384 * 4 // 1024
    assert FULL_SCAN_UNITS < INDEX_THRESHOLD  # or a collection indexed at the threshold is scanned


def test_should_build_index_from_the_threshold() -> None:
    assert not should_build_index(0)
    assert not should_build_index(INDEX_THRESHOLD - 1)
    assert should_build_index(INDEX_THRESHOLD)
    assert should_build_index(10 * INDEX_THRESHOLD)


def test_check_quantize() -> None:
    assert check_quantize(None) is None
    assert check_quantize("INT8") == "int8"
    assert QUANTIZE_KINDS == ("int8",)
    with pytest.raises(JointspaceError, match="Unknown quantization 'int4'"):
        check_quantize("int4")


# -- quantization recorded -------------------------------------------------------------------


def test_quantized_collection_recorded_in_info(edge: EdgeStore, tmp_path: Path) -> None:
    fill(edge, "q", data(100), quantize="int8")
    fill(edge, "plain", data(100))
    info = edge.info("q")
    assert (info.quantize, info.indexed, info.points) == ("int8", False, 100)
    assert info.metadata == {"model": "m1", "filterable": FIELDS}  # not mixed into metadata
    assert edge.info("plain").quantize is None
    meta = json.loads((tmp_path / "home/collections/q/collection.json").read_text())
    assert meta["quantize"] == "int8"
    edge.close()
    with EdgeStore(tmp_path / "home") as again:
        assert {i.name: (i.quantize, i.indexed) for i in again.list_infos()} == {
            "plain": (None, False),
            "q": ("int8", False),
        }
        # set_metadata keeps it (it is not metadata)
        again.set_metadata("q", {"model": "m2"})
        assert again.info("q").quantize == "int8"


def test_unknown_quantization_is_refused(store: Store, backend: Backend) -> None:
    with pytest.raises(JointspaceError, match="Unknown quantization"):
        store.create_collection(backend.name, VECTORS, {"model": "m1"}, quantize="pq")
    assert not store.has_collection(backend.name)


def test_every_backend_takes_quantize_build_index_and_exact(store: Store, backend: Backend) -> None:
    """The same calls on every backend (local mode ignores the settings and stays exact)."""
    vectors = data(300)
    fill(store, backend.name, vectors, quantize="int8")
    store.build_index(backend.name)
    for row in (0, 7, 123):
        expected = top_ids(store, backend.name, vectors[row], exact=True)
        assert expected[0] == pid(row)
        assert top_ids(store, backend.name, vectors[row]) == expected
    hits = store.search(backend.name, "unit", vectors[5], 5, where={"labels": "food"})
    assert hits and all("food" in h.payload["labels"] for h in hits)
    info = store.info(backend.name)
    if backend.kind == "edge":
        assert (info.indexed, info.quantize) == (True, "int8")
    elif backend.kind == "local":
        assert (info.indexed, info.quantize) == (False, None)  # local mode has neither


# -- build_index and indexed searches --------------------------------------------------------


def test_build_index_answers_like_exact(indexed: EdgeStore) -> None:
    assert indexed.info("idx").indexed
    assert indexed_vectors(indexed, "idx") == 3 * N  # a graph per named vector
    vectors = data()
    overlap = []
    for row in range(0, N, 40):
        approx = top_ids(indexed, "idx", vectors[row])
        exact = top_ids(indexed, "idx", vectors[row], exact=True)
        assert approx[0] == exact[0] == pid(row)
        overlap.append(len(set(approx) & set(exact)) / 10)
    assert np.mean(overlap) >= 0.95


def test_exact_override_is_brute_force(indexed: EdgeStore) -> None:
    vectors = data()
    query = data(1, seed=7)[0]
    cosines = vectors @ query
    best = np.argsort(-cosines)[:10]
    hits = indexed.search("idx", "unit", query, 10, exact=True)
    assert [h.id for h in hits] == [pid(int(i)) for i in best]
    assert [h.score for h in hits] == pytest.approx(cosines[best].tolist(), abs=1e-5)
    # exact=False on an unindexed collection is exact all the same
    fill(indexed, "fresh", vectors[:200])
    assert top_ids(indexed, "fresh", query, exact=False) == top_ids(
        indexed, "fresh", query, exact=True
    )


def test_hnsw_ef_is_checked(indexed: EdgeStore) -> None:
    query = data(1, seed=7)[0]
    assert len(top_ids(indexed, "idx", query, hnsw_ef=16)) == 10
    with pytest.raises(JointspaceError, match="hnsw_ef must be a positive number"):
        indexed.search("idx", "unit", query, 10, hnsw_ef=0)


def test_quantized_search_rescores_with_the_original_vectors(indexed: EdgeStore) -> None:
    assert indexed.info("q8").quantize == "int8"
    assert indexed_vectors(indexed, "q8") == 3 * N
    vectors = data()
    for row in range(0, N, 100):
        hits = indexed.search("q8", "unit", vectors[row], 10)
        assert hits[0].id == pid(row)
        # scores are true cosines (rescored), not int8 approximations
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        exact = indexed.search("q8", "unit", vectors[row], 10, exact=True)
        assert len({h.id for h in hits} & {h.id for h in exact}) >= 8


@pytest.mark.parametrize("exact_below", [0, 10**9], ids=["graph", "payload-index"])
def test_filters_work_on_an_indexed_collection(
    indexed: EdgeStore, monkeypatch: pytest.MonkeyPatch, exact_below: int
) -> None:
    """Through the graph (FILTER_EXACT_UNITS 0) and exactly (a filter matching fewer units
    than FILTER_EXACT_UNITS, as the payload index estimates them)."""
    monkeypatch.setattr(edge_module, "FILTER_EXACT_UNITS", exact_below)
    vectors = data()
    wheres = [
        {"labels": "food"},
        {"labels": ["food", "plants"], "split": "train"},
        {"width": {"gte": 100, "lt": 250}},
        {"labels": {"all": ["all", "people"]}},
        {"split": "test", "labels": "all"},
    ]
    for name in ("idx", "q8"):
        for where in wheres:
            for row in (3, 501, 1502):
                hits = indexed.search(name, "unit", vectors[row], 10, where=where)
                exact = indexed.search(name, "unit", vectors[row], 10, where=where, exact=True)
                assert len(hits) == 10
                for h in hits:
                    p = h.payload
                    assert all(_holds(p, key, cond) for key, cond in where.items()), (where, p)
                if exact_below:
                    assert [h.id for h in hits] == [h.id for h in exact]
                else:
                    assert len({h.id for h in hits} & {h.id for h in exact}) >= 9


def _holds(payload: dict, key: str, cond: object) -> bool:
    value = payload[key]
    values = value if isinstance(value, list) else [value]
    if isinstance(cond, dict) and "all" in cond:
        return all(_holds(payload, key, c) for c in cond["all"])
    if isinstance(cond, dict):
        return cond.get("gte", -1e9) <= value < cond.get("lt", 1e9)
    if isinstance(cond, list):
        return any(v in cond for v in values)
    return cond in values


def test_points_added_after_build_index_are_found(edge: EdgeStore) -> None:
    vectors = data()
    fill(edge, "c", vectors[:1500])
    edge.build_index("c")
    assert indexed_vectors(edge, "c") == 3 * 1500
    late = points(vectors[1500:], 1500)
    edge.upsert("c", late)
    assert edge.count("c") == N
    assert indexed_vectors(edge, "c") == 3 * 1500  # the new ones wait in an unindexed segment
    for row in range(1500, N, 25):
        assert top_ids(edge, "c", vectors[row], 3)[0] == pid(row)
        where = {"labels": LABELS[row % 5]}
        assert top_ids(edge, "c", vectors[row], 3, where=where)[0] == pid(row)
    # a later build indexes them too, and they stay found
    edge.build_index("c")
    assert indexed_vectors(edge, "c") == 3 * N
    assert top_ids(edge, "c", vectors[1777], 3)[0] == pid(1777)


def test_reopening_keeps_the_index(indexed_home: Path) -> None:
    vectors = data()
    with EdgeStore(indexed_home) as store:
        assert store.info("idx").indexed
        before = top_ids(store, "idx", vectors[9])
    with EdgeStore(indexed_home) as store:
        infos = {i.name: (i.indexed, i.quantize) for i in store.list_infos()}
        assert infos["idx"] == (True, None)
        assert infos["q8"] == (True, "int8")
        assert indexed_vectors(store, "idx") == 3 * N
        assert top_ids(store, "idx", vectors[9]) == before


def test_build_index_on_a_collection_made_before_the_hnsw_settings(
    edge: EdgeStore, tmp_path: Path
) -> None:
    """A collection from an older jointspace (a plain shard, no "hnsw" in collection.json)
    gets the settings applied (the shard reloaded with them) and is indexed."""
    import qdrant_edge as qe

    vectors = data(600)
    fill(edge, "old", vectors)
    edge.close()
    folder = tmp_path / "home/collections/old"
    meta = json.loads((folder / "collection.json").read_text())
    del meta["hnsw"], meta["quantize"]
    (folder / "collection.json").write_text(json.dumps(meta))
    # make the shard plain again, as older versions created it
    shard = qe.EdgeShard.load(
        str(folder / "shard"),
        qe.EdgeConfig(
            vectors={
                n: qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine) for n in VECTORS
            },
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=20_000),
        ),
    )
    shard.close()
    with EdgeStore(tmp_path / "home") as store:
        assert not store.info("old").indexed
        store.build_index("old")
        assert store.info("old").indexed
        assert indexed_vectors(store, "old") == 3 * 600
        assert top_ids(store, "old", vectors[42], 1) == [pid(42)]
    meta = json.loads((folder / "collection.json").read_text())
    assert meta["index"]["points"] == 600 and meta["hnsw"]["m"] == 16


def test_copy_carries_quantization(indexed: EdgeStore, tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "other") as target:
        assert copy_collection(indexed, "q8", target, "copy") == N
        info = target.info("copy")
        assert (info.quantize, info.indexed, info.points) == ("int8", False, N)

"""The search index after an ingest: when `--index auto` builds it, `--index build|skip`,
`--quantize int8`, `collections index`, and what `collections info` says. Real Edge stores, the
session's small stamps model (tests/conftest.py)."""

from __future__ import annotations

import pytest
from conftest import assert_bad_run, json_stdout, run_cli

from jointspace.ingest import indexing
from jointspace.ingest.indexing import IndexOutcome, index_after_ingest, needs_index
from jointspace.store import indexing as store_indexing
from jointspace.store.indexing import INDEX_THRESHOLD


def test_auto_builds_past_the_threshold_and_again_after_as_many_more() -> None:
    assert not needs_index(INDEX_THRESHOLD - 1, indexed=False, indexed_points=0)
    assert needs_index(INDEX_THRESHOLD, indexed=False, indexed_points=0)
    assert not needs_index(INDEX_THRESHOLD + 10, indexed=True, indexed_points=INDEX_THRESHOLD)
    grown = 2 * INDEX_THRESHOLD
    assert needs_index(grown, indexed=True, indexed_points=INDEX_THRESHOLD)


def test_an_unknown_index_mode_is_one_sentence(session, tmp_path) -> None:
    args = ["ingest", session.corpus, "--collection", "c", "--model", session.model]
    assert_bad_run(run_cli([*args, "--index", "sometimes"], tmp_path), "Unknown --index")
    assert_bad_run(run_cli([*args, "--quantize", "int4"], tmp_path), "Unknown quantization")


def test_ingest_builds_the_index_and_records_what_it_indexed(
    session, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jointspace as js

    monkeypatch.setattr(store_indexing, "INDEX_THRESHOLD", 20)
    monkeypatch.setattr(indexing, "INDEX_THRESHOLD", 20)
    steps: list[str] = []
    with js.connect(tmp_path / "home") as space:
        report = space.ingest(session.corpus, "auto", session.model, limit=10)
        assert not report.index_built  # 10 units: below the (patched) threshold
        report = space.ingest(
            session.corpus, "auto", session.model, lambda p: steps.append(p.stage)
        )
        assert report.index_built and report.ingested == session.items - 10
        assert "index" in steps
        info = space.collection("auto").info()
        assert info.indexed and info.metadata["indexed_points"] == session.items
        # nothing new since: no rebuild
        again = index_after_ingest(space.store, "auto", "auto")
        assert again == IndexOutcome(False, session.items)
        hits = space.collection("auto").search(text="penguin", k=3)
        assert len(hits) == 3


def test_cli_quantized_indexed_collection(session, tmp_path) -> None:
    home = tmp_path / "home"
    base = ["ingest", session.corpus, "--collection", "q", "--model", session.model, "--json"]
    proc = run_cli([*base, "--quantize", "int8", "--index", "build"], home)
    assert proc.returncode == 0, proc.stderr
    assert json_stdout(proc)["index_built"] is True
    info = json_stdout(run_cli(["collections", "info", "q", "--json"], home))
    assert info["indexed"] is True and info["quantize"] == "int8"
    query = ["query", "--collection", "q", "--text", "a penguin", "--json"]
    results = json_stdout(run_cli(query, home))["results"]
    assert results and "penguin" in results[0]["text"].lower()
    proc = run_cli(["collections", "index", "q", "--json"], home)
    assert proc.returncode == 0 and json_stdout(proc)["built"] is True
    # an existing collection cannot change its quantization
    plain = ["ingest", session.corpus, "--collection", "p", "--model", session.model]
    assert run_cli([*plain, "--index", "skip"], home).returncode == 0
    assert_bad_run(run_cli([*plain, "--quantize", "int8"], home), "without quantization")
    info = json_stdout(run_cli(["collections", "info", "p", "--json"], home))
    assert info["indexed"] is False and info["quantize"] is None

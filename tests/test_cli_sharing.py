"""Swap re-ingests behind an alias, sharded ingest, query vectors for other teams, and the
server-only commands' errors on a machine without a server."""

from __future__ import annotations

import uuid
from pathlib import Path

from conftest import Session, assert_bad_run, invoke, json_stdout, run_cli


def _ingest(session: Session, home: Path, *args: str) -> dict:
    result = invoke(
        ["ingest", session.corpus, "--model", session.model, "--json", "-q", *args], home
    )
    assert result.exit_code == 0, result.stderr
    return json_stdout(result)


def test_swap_builds_a_new_version_and_switches_the_alias(session: Session, tmp_path) -> None:
    home = tmp_path / "home"
    first = _ingest(session, home, "--collection", "shared", "--swap", "--limit", "20")
    assert first["collection"] == "shared_v1" and first["ingested"] == 20
    second = _ingest(session, home, "--collection", "shared", "--swap")
    assert second["collection"] == "shared_v2" and second["ingested"] == session.items
    listed = json_stdout(invoke(["collections", "list", "--json"], home))
    assert listed["aliases"] == {"shared": "shared_v2"}
    points = {c["name"]: c["points"] for c in listed["collections"]}
    assert points == {"shared_v1": 20, "shared_v2": session.items}
    # queries through the alias use the new version
    hits = json_stdout(
        invoke(["query", "--collection", "shared", "--text", "banana", "--json"], home)
    )["results"]
    assert len(hits) == 10
    assert invoke(["collections", "prune", "shared", "--yes"], home).exit_code == 0
    listed = json_stdout(invoke(["collections", "list", "--json"], home))
    assert [c["name"] for c in listed["collections"]] == ["shared_v2"]


def test_swap_refuses_to_replace_a_plain_collection(session: Session, tmp_path) -> None:
    home = tmp_path / "home"
    _ingest(session, home, "--collection", "plain", "--limit", "3")
    proc = run_cli(
        ["ingest", session.corpus, "--model", session.model, "--collection", "plain", "--swap"],
        home,
    )
    assert_bad_run(proc, "plain collection")


def test_shards_partition_the_corpus(session: Session, tmp_path) -> None:
    home = tmp_path / "home"
    counts = [
        _ingest(session, home, "--collection", "sharded", "--shard", f"{i}/3")["ingested"]
        for i in range(3)
    ]
    assert sum(counts) == session.items and all(counts)
    info = json_stdout(invoke(["collections", "info", "sharded", "--json"], home))
    assert info["points"] == session.items  # disjoint: nothing upserted twice


def test_bad_shard(session: Session, tmp_path) -> None:
    proc = run_cli(
        ["ingest", session.corpus, "--model", session.model, "--collection", "x", "--shard", "3/3"],
        tmp_path,
    )
    assert_bad_run(proc, "--shard")


def test_embed_prints_the_query_vector(session: Session, collection: str) -> None:
    document = json_stdout(
        invoke(
            ["embed", "--collection", collection, "--text", "banana", "--target", "text", "--json"],
            session.home,
        )
    )
    assert document["using"] == "text" and document["dim"] == len(document["vector"])
    norm = sum(v * v for v in document["vector"]) ** 0.5
    assert abs(norm - 1) < 1e-4
    # the same vector a query uses: searching with it gives the query's ranking
    hits = json_stdout(
        invoke(
            ["query", "--collection", collection, "--text", "banana", "--target", "text", "--json"],
            session.home,
        )
    )["results"]
    assert hits[0]["score"] > 0


def test_publish_to_an_unreachable_server(session: Session, collection: str) -> None:
    proc = run_cli(
        [
            "publish",
            "--collection",
            collection,
            "--to",
            "http://127.0.0.1:9",
            "--remote-api-key",
            f"secret-{uuid.uuid4().hex}",
        ],
        session.home,
    )
    line = assert_bad_run(proc, "Cannot reach the Qdrant server")
    assert "secret-" not in line


def test_snapshots_need_a_server(session: Session) -> None:
    assert_bad_run(
        run_cli(["snapshot", "list", "--collection", "x"], session.home), "server collections"
    )

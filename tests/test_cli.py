"""The command line as users and scripts see it: help, JSON shapes, exit codes, stdout/stderr
separation, bad runs (one line, exit 1, no traceback) and an ingest killed halfway."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import (
    COLLECTION,
    JOINTSPACE,
    Session,
    assert_bad_run,
    cli_env,
    copy_small_corpus,
    invoke,
    json_stdout,
    requires_stamps,
    run_cli,
)

RESULT_KEYS = {"id", "score", "text", "image", "labels", "source", "payload", "ref"}
TASKS = {"text->image", "text->text", "text->unit", "image->image", "image->text", "image->unit"}


def query_json(session: Session, *args: str | Path) -> list[dict]:
    result = invoke(["query", "--collection", COLLECTION, *args, "--json"], session.home)
    assert result.exit_code == 0, result.stderr
    document = json_stdout(result)
    assert set(document) == {"query", "target", "collection", "model_id", "k", "results"}
    results = document["results"]
    for r in results:
        assert set(r) == RESULT_KEYS
        assert r["text"] == r["payload"]["text"] and r["image"] == r["payload"]["image"]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True), "results are not best first"
    return results


# -- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "phrase"),
    [
        ([], "Search image-text collections"),
        (["train"], "Train a gated encoder"),
        (["ingest"], "upsert them into a collection"),
        (["query"], "Search a collection"),
        (["eval"], "held-out split"),
        (["collections"], "List, inspect and drop collections"),
        (["collections", "list"], "point counts"),
        (["collections", "info"], "the model that embedded it"),
        (["collections", "drop"], "Delete a collection"),
    ],
)
def test_help_explains_every_command(tmp_path: Path, command: list[str], phrase: str) -> None:
    result = invoke([*command, "--help"], tmp_path)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # help is wrapped to the terminal width
    assert "Usage: jointspace" in text
    assert phrase in text


def test_usage_error_exits_2(tmp_path: Path) -> None:
    proc = run_cli(["query", "--text", "a penguin"], tmp_path)
    assert proc.returncode == 2
    assert "--collection" in proc.stderr and proc.stdout == ""
    assert "Traceback" not in proc.stderr


# -- ingest -------------------------------------------------------------------------------------


def test_ingest_json_is_one_document_on_stdout(session: Session, first_ingest) -> None:
    assert first_ingest.returncode == 0, first_ingest.stderr
    assert "Traceback" not in first_ingest.stderr
    report = json_stdout(first_ingest)
    assert first_ingest.stdout.lstrip().startswith("{")
    assert first_ingest.stdout.rstrip().endswith("}")
    assert {"collection", "ingested", "skipped", "errors_file", "seconds"} <= set(report)
    assert report["collection"] == COLLECTION
    assert report["ingested"] == session.items
    assert report["skipped"] == 0 and report["errors_file"] is None
    assert isinstance(report["seconds"], (int, float)) and report["seconds"] >= 0


def test_reingest_stores_no_duplicates(session: Session, collection: str) -> None:
    proc = run_cli(["ingest", session.corpus, "--collection", collection, "--json"], session.home)
    assert proc.returncode == 0, proc.stderr
    report = json_stdout(proc)
    assert report["ingested"] == 0
    assert report["already_stored"] == session.items
    assert report["skipped"] == 0
    info = json_stdout(invoke(["collections", "info", collection, "--json"], session.home))
    assert info["points"] == session.items


def test_ingest_without_json_prints_a_summary_table(session: Session, collection: str) -> None:
    result = invoke(["ingest", session.corpus, "--collection", collection], session.home)
    assert result.exit_code == 0, result.stderr
    assert "already stored" in result.stdout and str(session.items) in result.stdout


# -- query --------------------------------------------------------------------------------------


def test_text_query_finds_the_captioned_stamp_best_first(session: Session, collection) -> None:
    results = query_json(session, "--text", "A penguin.", "-k", "5")
    assert len(results) == 5
    assert "penguin" in results[0]["text"].lower()
    top = results[0]["payload"]
    assert top["key"].startswith("animals/birds/") and "animals" in top["labels"]
    assert len({r["id"] for r in results}) == 5


@pytest.mark.parametrize("target", ["image", "text", "unit"])
def test_query_targets(session: Session, collection: str, target: str) -> None:
    results = query_json(session, "--text", "A penguin.", "--target", target, "-k", "10")
    assert len(results) == 10
    assert any("penguin" in r["payload"]["key"] for r in results), [r["text"] for r in results]


def test_image_query_finds_the_same_image(session: Session, collection: str) -> None:
    image = session.corpus / "food/fruit/banana.png"
    results = query_json(session, "--image", image, "--target", "image", "-k", "3")
    assert results[0]["payload"]["key"] == "food/fruit/banana.png"
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_text_and_image_query_together(session: Session, collection: str) -> None:
    image = session.corpus / "food/fruit/banana.png"
    results = query_json(session, "--text", "A banana.", "--image", image, "-k", "3")
    assert results[0]["payload"]["key"] == "food/fruit/banana.png"


@pytest.mark.parametrize("label", ["food", "town/roadsigns"])
def test_where_restricts_results(session: Session, collection: str, label: str) -> None:
    results = query_json(session, "--text", "A penguin.", "--where", f"labels={label}", "-k", "5")
    assert len(results) == 5
    for r in results:
        assert label in r["payload"]["labels"], r["payload"]
        assert "penguin" not in r["payload"]["key"]


def test_query_table_for_people(session: Session, collection: str) -> None:
    result = invoke(
        ["query", "--collection", collection, "--text", "A penguin.", "-k", "3"], session.home
    )
    assert result.exit_code == 0, result.stderr
    assert "penguin" in result.stdout.lower() and "animals/birds" in result.stdout


# -- collections --------------------------------------------------------------------------------


def test_collections_list_info_drop(session: Session, collection: str) -> None:
    home = session.home
    proc = run_cli(
        ["ingest", session.corpus, "--collection", "scratch", "--model", session.model]
        + ["--limit", "5", "--json"],
        home,
    )
    assert proc.returncode == 0, proc.stderr
    assert json_stdout(proc)["ingested"] == 5

    listing = json_stdout(invoke(["collections", "list", "--json"], home))
    by_name = {c["name"]: c for c in listing["collections"]}
    assert {collection, "scratch"} <= set(by_name)
    assert by_name["scratch"]["points"] == 5
    assert by_name[collection]["points"] == session.items
    assert by_name["scratch"]["metadata"]["model_id"] == session.model_summary["model_id"]

    info = json_stdout(invoke(["collections", "info", "scratch", "--json"], home))
    assert info["name"] == "scratch" and info["points"] == 5
    assert set(info["vectors"]) == {"unit", "image", "text"}
    table = invoke(["collections", "list"], home)
    assert table.exit_code == 0 and "scratch" in table.stdout

    refused = invoke(["collections", "drop", "scratch"], home, input="n\n")
    assert refused.exit_code == 1
    assert invoke(["collections", "info", "scratch", "--json"], home).exit_code == 0

    dropped = run_cli(["collections", "drop", "scratch", "--yes"], home)
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout == "" and "Dropped collection 'scratch'" in dropped.stderr
    listing = json_stdout(invoke(["collections", "list", "--json"], home))
    assert "scratch" not in {c["name"] for c in listing["collections"]}
    assert_bad_run(run_cli(["collections", "info", "scratch"], home), "scratch")


# -- eval ---------------------------------------------------------------------------------------


def test_eval_json_has_the_six_tasks(session: Session) -> None:
    proc = run_cli(["eval", session.corpus, "--model", session.model, "--json"], session.home)
    assert proc.returncode == 0, proc.stderr
    report = json_stdout(proc)
    assert set(report["tasks"]) == TASKS
    assert report["queries"] == session.model_summary["data"]["test"]
    for task, metrics in report["tasks"].items():
        assert {"R@1", "R@5", "R@10", "MRR", "nDCG@10"} <= set(metrics), task
        assert all(0.0 <= value <= 1.0 for value in metrics.values()), (task, metrics)
        assert metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"]


# -- bad runs: exit 1, one line, no traceback ---------------------------------------------------


def test_missing_source(session: Session, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-corpus"
    proc = run_cli(["ingest", missing, "--collection", "x", "--model", session.model], tmp_path)
    assert_bad_run(proc, "No such file or folder", str(missing))


def test_missing_source_whose_name_looks_like_markup(session: Session, tmp_path: Path) -> None:
    missing = tmp_path / "corpus[v2]" / "[/b]"
    proc = run_cli(["ingest", missing, "--collection", "x", "--model", session.model], tmp_path)
    assert_bad_run(proc, str(missing))


def test_unknown_format(session: Session, tmp_path: Path) -> None:
    proc = run_cli(
        ["ingest", session.corpus, "--collection", "x", "--model", session.model]
        + ["--format", "xml"],
        tmp_path,
    )
    assert_bad_run(proc, "Unknown format 'xml'")


def test_manifest_without_its_columns(session: Session, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,caption\nfood/fruit/banana.png,A banana.\n", encoding="utf-8")
    proc = run_cli(["ingest", manifest, "--collection", "x", "--model", session.model], tmp_path)
    assert_bad_run(proc, "neither an 'image' nor a 'text' column", "--image-column")
    proc = run_cli(
        ["ingest", manifest, "--collection", "x", "--model", session.model]
        + ["--image-column", "picture"],
        tmp_path,
    )
    assert_bad_run(proc, "no column 'picture'")


def test_query_on_a_missing_collection(session: Session) -> None:
    proc = run_cli(["query", "--collection", "nope", "--text", "a penguin"], session.home)
    assert_bad_run(proc, "No collection 'nope'")


def test_eval_of_a_missing_model(session: Session, tmp_path: Path) -> None:
    proc = run_cli(["eval", session.corpus, "--model", tmp_path / "nothing"], session.home)
    assert_bad_run(proc, "is not a jointspace model")


def test_model_that_does_not_match_the_collection(
    session: Session, collection: str, other_model: Path
) -> None:
    proc = run_cli(
        ["query", "--collection", collection, "--text", "a penguin", "--model", other_model],
        session.home,
    )
    assert_bad_run(proc, "was embedded with model", session.model_summary["model_id"])
    proc = run_cli(
        ["ingest", session.corpus, "--collection", collection, "--model", other_model],
        session.home,
    )
    assert_bad_run(proc, "was embedded with model", session.model_summary["model_id"])
    info = json_stdout(invoke(["collections", "info", collection, "--json"], session.home))
    assert info["points"] == session.items


@pytest.mark.parametrize(
    ("where", "message"),
    [("labels", "is not KEY=VALUE"), ("=animals", "is not KEY=VALUE")],
)
def test_bad_where(session: Session, collection: str, where: str, message: str) -> None:
    proc = run_cli(
        ["query", "--collection", collection, "--text", "a penguin", "--where", where],
        session.home,
    )
    assert_bad_run(proc, message)


def test_bad_target_and_no_query(session: Session, collection: str) -> None:
    proc = run_cli(
        ["query", "--collection", collection, "--text", "x", "--target", "audio"], session.home
    )
    assert_bad_run(proc, "Unknown target 'audio'")
    proc = run_cli(["query", "--collection", collection], session.home)
    assert_bad_run(proc, "Give a query")
    proc = run_cli(
        ["query", "--collection", collection, "--image", session.corpus / "nope.png"],
        session.home,
    )
    assert_bad_run(proc, "Cannot use", "image file not found")


def test_store_locked_by_another_process(session: Session, collection: str) -> None:
    holder_code = textwrap.dedent(
        """
        import sys, time
        from jointspace.store.edge import EdgeStore
        store = EdgeStore(sys.argv[1])
        print(store.count(sys.argv[2]), flush=True)  # opens and locks the collection
        time.sleep(120)
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(session.home / "qdrant"), collection],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = holder.stdout.readline()
        assert ready.strip() == str(session.items), holder.stderr.read()
        proc = run_cli(["query", "--collection", collection, "--text", "a penguin"], session.home)
        assert_bad_run(proc, f"collection '{collection}'", "in use by another process")
        proc = run_cli(["ingest", session.corpus, "--collection", collection], session.home)
        assert_bad_run(proc, "in use by another process")
    finally:
        holder.kill()
        holder.wait()
    # released with the process: the collection works again
    assert invoke(["collections", "info", collection, "--json"], session.home).exit_code == 0


# -- an ingest killed halfway ---------------------------------------------------------------------


def _cached_images(home: Path) -> int:
    """Images the running ingest has encoded so far (its feature cache is SQLite in WAL mode,
    readable while it writes); each batch is upserted right after it is cached."""
    total = 0
    for db_path in (home / "features").glob("*.sqlite"):
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)
            try:
                total += db.execute("SELECT count(*) FROM features WHERE kind='image'").fetchone()[
                    0
                ]
            finally:
                db.close()
        except sqlite3.Error:
            pass  # not created yet
    return total


def _children(pid: int) -> list[int]:
    """Direct child processes (Linux /proc), e.g. the ingest's image-decoding worker."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += [int(c) for c in task.read_text().split()]
    return children


def _kill_halfway(command: list[str], home: Path, whole_group: bool) -> list[int]:
    """Start `command`, SIGKILL it once a few batches are written; returns the pids of its
    child processes at that moment."""
    run = subprocess.Popen(
        command,
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while _cached_images(home) < 12 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if run.poll() is not None:
        pytest.fail(f"ingest ended (exit {run.returncode}) before it could be killed")
    children = _children(run.pid)
    if whole_group:
        os.killpg(run.pid, signal.SIGKILL)  # the command and every process it started
    else:
        run.send_signal(signal.SIGKILL)  # `kill -9 PID`: the main process only
    run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL
    return children


def _count(home: Path, collection: str) -> int:
    from jointspace.store.edge import EdgeStore

    store = EdgeStore(home / "qdrant")
    try:
        return store.count(collection)
    finally:
        store.close()


def _interrupted_ingest(session: Session, tmp_path: Path) -> tuple[list[str], Path, Path, int]:
    """A fresh home (empty feature cache), so that the run is slow enough to interrupt."""
    requires_stamps()
    home, corpus = tmp_path / "home", tmp_path / "corpus"
    items = copy_small_corpus(corpus, ["animals/birds"])  # ~35 stamps, batches of 4
    command = [str(JOINTSPACE), "ingest", str(corpus), "--collection", "killed"]
    command += ["--model", str(session.model), "--batch-size", "4", "--json"]
    return command, home, corpus, items


def test_ingest_killed_halfway_completes_when_rerun(session: Session, tmp_path: Path) -> None:
    """SIGKILL to the whole command mid-run loses nothing written; the same command finishes
    the job, without duplicates."""
    from jointspace.store.edge import EdgeStore

    command, home, corpus, items = _interrupted_ingest(session, tmp_path)
    _kill_halfway(command, home, whole_group=True)
    written = _count(home, "killed")
    assert 0 < written < items, f"{written} of {items} points written before the kill"

    proc = subprocess.run(command, env=cli_env(home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json_stdout(proc)
    assert report["already_stored"] == written
    assert report["ingested"] == items - written
    assert report["skipped"] == 0

    store = EdgeStore(home / "qdrant")
    try:
        count = store.count("killed")
        points = list(store.scroll("killed"))
    finally:
        store.close()
    assert count == items
    assert len({p.id for p in points}) == count == len(points)
    expected = {p.relative_to(corpus).as_posix() for p in corpus.rglob("*.png")}
    assert {p.payload["key"] for p in points} == expected


def test_ingest_killed_by_pid_leaves_nothing_locked(session: Session, tmp_path: Path) -> None:
    """`kill -9 PID` on the ingest alone: its worker process must not keep the collection."""
    command, home, _, items = _interrupted_ingest(session, tmp_path)
    children = _kill_halfway(command, home, whole_group=False)
    try:
        time.sleep(6)  # torch's worker watchdog polls its parent every 5 s
        proc = subprocess.run(
            command, env=cli_env(home), capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr
        assert _count(home, "killed") == items
    finally:
        for pid in children:  # the orphans this test made, if any are left
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

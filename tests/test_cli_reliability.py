"""The first hour and the mistakes users make: options where users put them, numbers checked at
parse time, typed and repeated filters, unusable homes, moved models, hostile captions in tables,
busy and broken collections in the list. Each case fails on the code before the reliability
work (see the closing note's table)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import (
    COLLECTION,
    Session,
    assert_bad_run,
    copy_small_corpus,
    invoke,
    json_stdout,
    run_cli,
)


def _usage_error(result, option: str) -> None:
    assert result.exit_code == 2, result.stderr
    assert option in result.stderr and "Traceback" not in result.stderr


# -- options: where users put them, checked when parsed ------------------------------------------


def test_global_options_work_after_the_command(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    result = invoke(["collections", "list", "--home", str(home), "--json"], tmp_path / "unused")
    assert result.exit_code == 0, result.stderr
    assert json_stdout(result) == {"collections": [], "aliases": {}}
    assert (home / "qdrant").is_dir() or home.is_dir()


def test_version(tmp_path: Path) -> None:
    result = invoke(["--version"], tmp_path)
    assert result.exit_code == 0 and result.stdout.startswith("jointspace ")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "-5"], "--batch-size"),
        (["--limit", "-1"], "--limit"),
        (["--download-workers", "0"], "--download-workers"),
        (["--download-timeout", "0"], "--download-timeout"),
        (["--workers", "-1"], "--workers"),
    ],
)
def test_numeric_options_are_checked_when_parsed(tmp_path: Path, args, option: str) -> None:
    result = invoke(["ingest", str(tmp_path), "--collection", "x", *args], tmp_path)
    _usage_error(result, option)


@pytest.mark.parametrize(
    ("args", "option"), [(["--loss", "hinge"], "--loss"), (["--fusion", "gate"], "--fusion")]
)
def test_typos_in_choices_are_caught_before_any_work(tmp_path: Path, args, option: str) -> None:
    result = invoke(["train", str(tmp_path), "--out", str(tmp_path / "m"), *args], tmp_path)
    _usage_error(result, option)


@pytest.mark.parametrize("kind", ["a file", "under a file", "/proc"])
def test_an_unusable_home_is_one_sentence(tmp_path: Path, kind: str) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    home = {"a file": file, "under a file": file / "below", "/proc": Path("/proc/jointspace")}[kind]
    proc = run_cli(["collections", "list"], home)
    assert_bad_run(proc, str(home))


# -- search: empty queries, typed and repeated filters -----------------------------------------


def test_an_empty_text_query_is_refused(session: Session, collection: str) -> None:
    proc = run_cli(["query", "--collection", collection, "--text", ""], session.home)
    assert_bad_run(proc, "empty")


def _labels(session: Session, *where: str) -> list[list[str]]:
    args = ["query", "--collection", COLLECTION, "--text", "bird", "-k", "50", "--json"]
    for condition in where:
        args += ["--where", condition]
    result = invoke(args, session.home)
    assert result.exit_code == 0, result.stderr
    return [hit["labels"] for hit in json_stdout(result)["results"]]


def test_where_conditions_all_hold(session: Session, collection: str) -> None:
    # before: the last condition replaced the first, and birds came back
    assert _labels(session, "labels=zzz", "labels=animals/birds") == []
    birds = _labels(session, "labels=animals/birds")
    assert birds and all("animals/birds" in labels for labels in birds)
    assert _labels(session, "labels=animals", "labels=animals/birds") == birds
    either = _labels(session, "labels=animals/birds,food/fruit")
    assert {"animals/birds", "food/fruit"} <= {label for labels in either for label in labels}


def test_where_compares_numbers_as_numbers(session: Session, collection: str) -> None:
    result = invoke(
        [
            "query",
            "--collection",
            collection,
            "--text",
            "x",
            "-k",
            "50",
            "--where",
            "width>=200",
            "--json",
        ],
        session.home,
    )
    assert result.exit_code == 0, result.stderr
    widths = [hit["payload"]["width"] for hit in json_stdout(result)["results"]]
    assert widths and min(widths) >= 200


def test_an_unknown_where_key_lists_the_filterable_ones(session: Session, collection: str) -> None:
    proc = run_cli(
        ["query", "--collection", collection, "--text", "x", "--where", "colour=red"], session.home
    )
    line = assert_bad_run(proc, "colour")
    assert "labels" in line and "width" in line
    info = json_stdout(run_cli(["collections", "info", collection, "--json"], session.home))
    assert {"labels", "width", "height"} <= set(info["filterable"])


# -- models and collections that moved or broke -----------------------------------------------


def test_a_moved_model_folder_is_named(session: Session, tmp_path: Path) -> None:
    home, corpus, model = tmp_path / "home", tmp_path / "corpus", tmp_path / "model"
    copy_small_corpus(corpus, ["town/roadsigns"])
    shutil.copytree(session.model, model)
    shutil.copytree(session.home / "features", home / "features")  # no recomputing
    ok = run_cli(["ingest", corpus, "--collection", "c", "--model", model, "-q"], home)
    assert ok.returncode == 0, ok.stderr
    shutil.move(model, tmp_path / "moved")
    line = assert_bad_run(run_cli(["query", "--collection", "c", "--text", "sign"], home))
    assert str(model.resolve()) in line and "--model" in line
    again = run_cli(
        ["query", "--collection", "c", "--text", "sign", "--model", tmp_path / "moved"], home
    )
    assert again.returncode == 0, again.stderr


def test_the_list_marks_a_broken_collection_and_shows_the_rest(session, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(session.home / "qdrant", home / "qdrant")
    broken = home / "qdrant" / "collections" / COLLECTION / "collection.json"
    healthy = home / "qdrant" / "collections" / "healthy"
    shutil.copytree(broken.parent, healthy)
    broken.write_text('{"vectors": ')
    document = json_stdout(run_cli(["collections", "list", "--json"], home))
    states = {c["name"]: c["state"] for c in document["collections"]}
    assert (states[COLLECTION], states["healthy"]) == ("broken", "ready")
    assert all(state == "ready" for name, state in states.items() if name != COLLECTION)
    line = assert_bad_run(run_cli(["collections", "info", COLLECTION], home))
    assert "collection.json" in line


def test_tables_escape_control_characters_and_cut_long_captions(session, tmp_path: Path) -> None:
    home, corpus = tmp_path / "home", tmp_path / "corpus"
    copy_small_corpus(corpus, ["town/roadsigns"])
    first = sorted(corpus.rglob("*.txt"))[0]
    first.write_text("evil\u202ename\x07 " + "long " * 100 + "\n")
    shutil.copytree(session.home / "features", home / "features")
    ok = run_cli(["ingest", corpus, "--collection", "c", "--model", session.model, "-q"], home)
    assert ok.returncode == 0, ok.stderr
    proc = run_cli(["query", "--collection", "c", "--text", "evil name", "-k", "50"], home)
    assert proc.returncode == 0, proc.stderr
    assert "\u202e" not in proc.stdout and "\x07" not in proc.stdout
    assert "\\u202e" in proc.stdout
    assert "long " * 100 not in proc.stdout
    stored = json.loads(
        run_cli(
            ["query", "--collection", "c", "--text", "evil name", "-k", "50", "--json"], home
        ).stdout
    )
    assert any("\u202e" in (hit["text"] or "") for hit in stored["results"])  # data kept as is

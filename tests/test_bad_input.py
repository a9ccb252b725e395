"""Bad items never stop a bulk run: each is skipped, counted and written with its reason to the
errors file, and the good items around them are ingested."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Session, invoke, json_stdout, run_cli
from PIL import Image

GOOD = ("animals/birds/penguin", "animals/birds/crow", "food/fruit/banana")


def _bad_corpus(session: Session, root: Path) -> tuple[Path, Path]:
    """A folder of three good stamps and five bad items, plus a manifest with a good row, a row
    whose image is missing and a row with neither image nor text."""
    folder = root / "corpus"
    for stem in GOOD:
        target = folder / stem
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".png", ".txt"):
            shutil.copy2((session.corpus / stem).with_suffix(suffix), target.with_suffix(suffix))
    # a good item whose caption looks like rich markup: shown as it is, never parsed
    (folder / "animals/birds/crow.txt").write_text("A crow [photo] [/b].\n", encoding="utf-8")

    bad = folder / "animals/bad"
    bad.mkdir(parents=True)
    penguin = (session.corpus / "animals/birds/penguin.png").read_bytes()
    (bad / "truncated.png").write_bytes(penguin[: len(penguin) // 2])
    (bad / "truncated.txt").write_text("Half a penguin.\n", encoding="utf-8")
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.png").write_text("These are notes, not a picture.\n", encoding="utf-8")
    # 20000 x 20000 = 400 M pixels declared (limit 64 M); 1-bit, so the file is ~50 KB
    Image.new("1", (20_000, 20_000)).save(bad / "bomb.png")
    shutil.copy2(session.corpus / "food/fruit/banana.png", bad / "latin1.png")
    (bad / "latin1.txt").write_bytes("Une banane épluchée.\n".encode("latin-1"))

    manifest = root / "manifest.csv"
    manifest.write_text(
        "id,image,text,label\n"
        f"good-row,{folder / 'food/fruit/banana.png'},A banana from the manifest.,fruit\n"
        "missing-row,images/missing.png,A picture that is not there.,fruit\n"
        "empty-row,,,fruit\n",
        encoding="utf-8",
    )
    return folder, manifest


EXPECTED_REASONS = {
    "animals/bad/truncated.png": "truncated image",
    "animals/bad/empty.png": "image file is empty",
    "animals/bad/notes.png": "not an image",
    "animals/bad/bomb.png": "decompression bomb",
    "animals/bad/latin1.png": "caption is not valid utf-8",
    "missing-row": "image file not found",
    "empty-row": "row has neither image nor text",
}


@pytest.fixture(scope="module")
def bad_run(session: Session, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bad-input")
    folder, manifest = _bad_corpus(session, root)
    errors = root / "errors.jsonl"
    proc = run_cli(
        ["ingest", folder, manifest, "--collection", "bad_items", "--model", session.model]
        + ["--errors", errors, "--json"],
        session.home,
    )
    return proc, folder, manifest, errors


def test_bad_items_are_skipped_and_the_run_succeeds(session: Session, bad_run) -> None:
    proc, *_ = bad_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json_stdout(proc)
    assert report["skipped"] == len(EXPECTED_REASONS)
    assert report["ingested"] == len(GOOD) + 1  # the folder's good stamps and the manifest's
    assert sum(report["skipped_by_reason"].values()) == len(EXPECTED_REASONS)
    info = json_stdout(invoke(["collections", "info", "bad_items", "--json"], session.home))
    assert info["points"] == len(GOOD) + 1


def test_errors_file_has_one_line_per_bad_item(bad_run) -> None:
    proc, folder, manifest, errors = bad_run
    assert json_stdout(proc)["errors_file"] == str(errors)
    lines = errors.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len(EXPECTED_REASONS)
    by_key = {r["key"]: r for r in records}
    assert set(by_key) == set(EXPECTED_REASONS)
    for key, reason in EXPECTED_REASONS.items():
        record = by_key[key]
        assert reason in record["reason"], record
        expected_source = manifest if key.endswith("-row") else folder
        assert record["source"] == str(expected_source.resolve()), record


def test_good_items_are_searchable(session: Session, bad_run) -> None:
    proc, *_ = bad_run
    assert proc.returncode == 0, proc.stderr
    result = invoke(
        ["query", "--collection", "bad_items", "--text", "A crow.", "-k", "10", "--json"],
        session.home,
    )
    assert result.exit_code == 0, result.stderr
    keys = {r["payload"]["key"] for r in json_stdout(result)["results"]}
    assert keys == {"animals/birds/penguin.png", "animals/birds/crow.png"} | {
        "food/fruit/banana.png",
        "good-row",
    }


def test_caption_with_brackets_prints_as_is(session: Session, bad_run) -> None:
    proc, *_ = bad_run
    assert proc.returncode == 0, proc.stderr
    result = invoke(
        ["query", "--collection", "bad_items", "--text", "A crow.", "-k", "4"], session.home
    )
    assert result.exit_code == 0, result.stderr
    assert "A crow [photo] [/b]." in result.stdout

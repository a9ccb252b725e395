"""End to end on the full Tux Paint stamps corpus with the real offline backbone: train on the
training split, ingest the held-out split only, evaluate, and search for a held-out penguin."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import STAMPS, Session, json_stdout, requires_stamps, run_cli

from jointspace.corpus.item import Item
from jointspace.corpus.readers import read_corpus
from jointspace.corpus.split import split_of

pytestmark = pytest.mark.slow


def _held_out_items() -> list[Item]:
    return [
        r for r in read_corpus(STAMPS) if isinstance(r, Item) and split_of(r.split_key) == "test"
    ]


def test_full_stamps_corpus_end_to_end(session: Session, tmp_path: Path) -> None:
    requires_stamps()
    home = session.home  # shares the feature cache with the CLI tests
    held_out = _held_out_items()
    penguins = [i for i in held_out if "penguin" in i.key.lower()]
    if not penguins:
        pytest.fail(
            "no penguin stamp falls in the test split of the stamps corpus; the split "
            "(corpus/split.py) or the corpus changed: pick another held-out query"
        )
    penguin = penguins[0]
    assert penguin.text, f"{penguin.key} has no caption"

    model = tmp_path / "model"
    # a dozen epochs: the early-stopped best epoch usually comes later, but minutes matter here
    proc = run_cli(["train", STAMPS, "--out", model, "--epochs", "12", "--json"], home, 1800)
    assert proc.returncode == 0, proc.stderr
    trained = json_stdout(proc)
    assert trained["data"]["test"] > 0
    assert trained["data"]["train"] > trained["data"]["test"]

    proc = run_cli(
        ["ingest", STAMPS, "--split", "test", "--collection", "stamps_test"]
        + ["--model", model, "--json"],
        home,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    ingested = json_stdout(proc)
    assert ingested["ingested"] + ingested["skipped"] == len(held_out)
    assert ingested["ingested"] >= 0.9 * len(held_out)

    proc = run_cli(["eval", STAMPS, "--model", model, "--json"], home, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    report = json_stdout(proc)
    recall = report["tasks"]["text->image"]["R@10"]
    chance = 10 / report["queries"]
    print(
        f"\nstamps: {trained['data']} items; held out {report['queries']}; "
        f"text->image R@10 {recall:.3f} (chance {chance:.3f}, {recall / chance:.1f}x)"
    )
    assert recall >= 3 * chance, f"text->image R@10 {recall:.3f} < 3 x chance {chance:.3f}"

    proc = run_cli(
        ["query", "--collection", "stamps_test", "--text", penguin.text]
        + ["--target", "unit", "-k", "10", "--json"],
        home,
    )
    assert proc.returncode == 0, proc.stderr
    results = json_stdout(proc)["results"]
    assert len(results) == 10
    assert all(r["payload"]["split"] == "test" for r in results)
    found = [
        r["payload"]["key"]
        for r in results
        if "penguin" in r["payload"]["key"].lower() or "penguin" in (r["text"] or "").lower()
    ]
    print(f"query {penguin.text!r} -> {[r['payload']['key'] for r in results]}")
    assert found, f"no penguin in the top 10 for {penguin.text!r}: {results}"

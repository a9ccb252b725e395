"""End to end on the full Tux Paint stamps corpus with the real offline backbone: train on the
training split, ingest the held-out split only, evaluate, and search for a held-out animal stamp
by its caption."""

from __future__ import annotations

from collections import Counter
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


def _held_out_query(held_out: list[Item]) -> Item:
    """The first held-out animal stamp (by key) whose caption no other stamp has: its caption
    is a real held-out query with one right answer. The split is by content (corpus/split.py),
    so which stamps are held out is fixed by their captions."""
    captions = Counter(i.split_key for i in read_corpus(STAMPS) if isinstance(i, Item))
    candidates = sorted(
        (i for i in held_out if i.text and captions[i.split_key] == 1),
        key=lambda i: i.key,
    )
    animals = [i for i in candidates if i.key.startswith("animals/")]
    if not animals:
        pytest.fail(
            "no animal stamp with a caption of its own falls in the test split of the stamps "
            "corpus; the split (corpus/split.py) or the corpus changed: pick another query"
        )
    return animals[0]


def test_full_stamps_corpus_end_to_end(session: Session, tmp_path: Path) -> None:
    requires_stamps()
    home = session.home  # shares the feature cache with the CLI tests
    held_out = _held_out_items()
    stamp = _held_out_query(held_out)

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
    assert report["overlap"] == 0  # the model's card knows it was not trained on these

    proc = run_cli(
        ["query", "--collection", "stamps_test", "--text", stamp.text]
        + ["--target", "unit", "-k", "10", "--json"],
        home,
    )
    assert proc.returncode == 0, proc.stderr
    results = json_stdout(proc)["results"]
    assert len(results) == 10
    assert all(r["payload"]["split"] == "test" for r in results)
    keys = [r["payload"]["key"] for r in results]
    print(f"query {stamp.text!r} ({stamp.key}) -> {keys}")
    assert stamp.key in keys, f"{stamp.key} not in the top 10 for {stamp.text!r}: {results}"

"""Several sources at once (issue 12): each source keeps its own held-out split, batches draw
across sources, validation is averaged per source, and evaluation and the comparison report
each source on its own (its queries against its own gallery only) and overall."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, invoke, json_stdout
from PIL import Image

from jointspace.corpus.item import Item, Skipped
from jointspace.corpus.readers import read_corpus
from jointspace.corpus.split import split_of
from jointspace.evaluation.compare import VARIANTS, run_comparison
from jointspace.evaluation.report import write_report
from jointspace.evaluation.tasks import (
    TASKS,
    Embedded,
    EvalSet,
    counted_task_metrics,
    pooled_metrics,
    source_task_metrics,
    task_metrics,
)
from jointspace.pipeline.corruption import Junk
from jointspace.pipeline.dataset import FeatureSet, SourceNames
from jointspace.pipeline.model import EncoderConfig
from jointspace.pipeline.train import (
    TrainConfig,
    _Batches,
    mean_over_sources,
    rsum,
    train_encoder,
    validation_by_source,
    validation_metrics,
    validation_score,
)

SPLIT_KEYS = ("train", "val", "test", "skipped")

# -- two small folder corpora, written by the test -----------------------------------------------

FRUITS = ("apple", "pear", "plum", "cherry", "lemon", "melon", "grape", "peach")
TOOLS = ("hammer", "saw", "drill", "wrench", "chisel", "spade", "rake", "file")


def _folder(root: Path, words: tuple[str, ...], count: int, seed: int) -> Path:
    """`count` captioned random PNGs in two label folders, and one broken image."""
    rng = np.random.default_rng(seed)
    for n in range(count):
        folder = root / ("a" if n % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{words[n % len(words)]}_{n}"
        pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"A {words[n % len(words)]} number {n}.\n")
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "a" / "broken.txt").write_text("A broken picture.\n")
    return root


def _own_split_counts(corpus: Path) -> dict[str, int]:
    """A corpus's train/val/test/skipped counts when read alone (the broken image is skipped
    when decoded)."""
    counts = dict.fromkeys(SPLIT_KEYS, 0)
    for record in read_corpus(corpus):
        if isinstance(record, Skipped) or "broken" in record.key:
            counts["skipped"] += 1
        else:
            counts[split_of(record.split_key)] += 1
    return counts


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sources")
    return _folder(root / "fruit", FRUITS, 70, 0), _folder(root / "tools", TOOLS, 40, 1)


@pytest.fixture(scope="module")
def two_source_run(tiny, corpora, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`jointspace train FRUIT TOOLS --json` and `eval FRUIT TOOLS --json` on the tiny backbone
    (in process), sharing one home."""
    root = tmp_path_factory.mktemp("two-sources")
    home, model = root / "home", root / "model"
    fruit, tools = corpora
    backbone = ["--backbone", f"{TINY}:random"]
    trained = invoke(
        ["train", fruit, tools, "--out", model, "--epochs", "2", "--dim", "16", *backbone]
        + ["--sampling", "balanced", "--json"],
        home,
    )
    assert trained.exit_code == 0, trained.stderr
    evaluated = invoke(["eval", fruit, tools, "--model", model, "--json"], home)
    assert evaluated.exit_code == 0, evaluated.stderr
    return {
        "home": home,
        "model": model,
        "train": json_stdout(trained),
        "eval": json_stdout(evaluated),
    }


def test_each_source_keeps_its_own_split(corpora, two_source_run) -> None:
    """Counted per source, and each source's counts are those of the source read alone: its
    held-out split does not depend on what it is trained with."""
    fruit, tools = corpora
    data = two_source_run["train"]["data"]
    assert list(data["per_source"]) == [str(fruit), str(tools)]
    for corpus in corpora:
        assert data["per_source"][str(corpus)] == _own_split_counts(corpus)
    for key in SPLIT_KEYS:
        assert data[key] == sum(counts[key] for counts in data["per_source"].values())
    # validation is reported per source, and the headline is their mean
    summary = two_source_run["train"]
    assert set(summary["val_per_source"]) == {str(fruit), str(tools)}
    mean = np.mean([m["text->image"]["R@10"] for m in summary["val_per_source"].values()])
    assert summary["val_metrics"]["text->image"]["R@10"] == pytest.approx(mean)


def test_eval_reports_each_source_and_the_pooled_overall(corpora, two_source_run) -> None:
    report = two_source_run["eval"]
    fruit, tools = map(str, corpora)
    assert list(report["per_source"]) == [fruit, tools]
    trained = two_source_run["train"]["data"]["per_source"]
    for name in (fruit, tools):
        assert report["per_source"][name]["queries"] == trained[name]["test"]
        assert set(report["per_source"][name]["tasks"]) == set(TASKS)
    assert report["queries"] == sum(r["queries"] for r in report["per_source"].values())
    assert set(report["tasks"]) == set(TASKS)
    assert report["overlap"] == 0
    assert "sources" in report["protocol"]
    # the overall is the queries' mean: between the sources' values
    for task in TASKS:
        values = [r["tasks"][task]["R@10"] for r in report["per_source"].values()]
        assert min(values) - 1e-9 <= report["tasks"][task]["R@10"] <= max(values) + 1e-9


def test_eval_of_one_source_with_a_two_source_model(corpora, two_source_run) -> None:
    """The same model evaluated on one source alone: that source's numbers, and the overall is
    exactly that source's (no pooling with one source)."""
    fruit, _ = corpora
    result = invoke(
        ["eval", fruit, "--model", two_source_run["model"], "--json"], two_source_run["home"]
    )
    assert result.exit_code == 0, result.stderr
    alone = json_stdout(result)
    assert list(alone["per_source"]) == [str(fruit)]
    assert alone["tasks"] == alone["per_source"][str(fruit)]["tasks"]
    both = two_source_run["eval"]["per_source"][str(fruit)]
    for task in TASKS:
        for metric, value in both["tasks"][task].items():
            assert alone["tasks"][task][metric] == pytest.approx(value, abs=1e-6), (task, metric)
    assert "sources" not in alone["protocol"]


def test_single_source_output_keeps_its_shape(tiny, corpora, tmp_path: Path) -> None:
    """One source: the fields scripts read are all there, unchanged; per-source fields are
    added, with one entry."""
    fruit, _ = corpora
    model = tmp_path / "model"
    result = invoke(
        ["train", fruit, "--out", model, "--epochs", "1", "--dim", "16"]
        + ["--backbone", f"{TINY}:random", "--json"],
        tmp_path / "home",
    )
    assert result.exit_code == 0, result.stderr
    summary = json_stdout(result)
    assert {"model_id", "path", "data", "best_epoch", "epochs_run", "val_metrics"} <= set(summary)
    assert {"train", "val", "test", "skipped", "sources"} <= set(summary["data"])
    assert summary["data"]["per_source"] == {str(fruit): _own_split_counts(fruit)}
    assert set(summary["val_metrics"]) == {"text->image", "image->text", "query->unit"}
    assert summary["val_per_source"] == {str(fruit): summary["val_metrics"]}
    result = invoke(["eval", fruit, "--model", model, "--json"], tmp_path / "home")
    report = json_stdout(result)
    assert {"model_id", "split", "queries", "tasks", "protocol", "overlap"} <= set(report)
    assert report["per_source"] == {
        str(fruit): {"queries": report["queries"], "tasks": report["tasks"]}
    }
    # and the table for people has no per-source parts
    table = invoke(["eval", fruit, "--model", model], tmp_path / "home").stdout
    assert "six tasks" in table and "all sources" not in table


def test_tables_for_people_show_each_source(corpora, two_source_run, tmp_path: Path) -> None:
    fruit, tools = corpora
    home, model = two_source_run["home"], two_source_run["model"]
    table = invoke(["eval", fruit, tools, "--model", model], home).stdout
    assert f"six tasks: {fruit}" in table and f"six tasks: {tools}" in table
    assert "six tasks, all sources" in table
    result = invoke(
        ["train", fruit, tools, "--out", tmp_path / "m", "--epochs", "1", "--dim", "16"]
        + ["--backbone", f"{TINY}:random"],
        home,
    )
    assert result.exit_code == 0, result.stderr
    counts = two_source_run["train"]["data"]["per_source"][str(tools)]
    line = f"  {tools}: {counts['train']} train, {counts['val']} val, {counts['test']} test"
    assert line in result.stdout
    assert "validation (paired), mean over sources" in result.stdout


# -- the source of a record ------------------------------------------------------------------------


def test_source_names_name_records_after_the_given_source() -> None:
    """A source is one given path: every reader source it yields (e.g. each shard of a
    WebDataset) is named after it."""
    shard = [Item("/data/shards/000.tar", "a"), Item("/data/shards/001.tar", "b")]
    folder = [Item("/data/folder", "c"), Skipped("/data/folder", "d", "broken")]
    names = SourceNames([("shards", iter(shard)), ("folder", iter(folder))])
    records = list(names)
    assert [names.name_of(r) for r in records] == ["shards", "shards", "folder", "folder"]
    assert names.names == ["shards", "folder"]


# -- evaluation ranks each source's queries against its own gallery ---------------------------


def _eval_set(n: int, source: str, labels: list[str], vectors: np.ndarray) -> EvalSet:
    keys = [f"{source}-{i}" for i in range(n)]
    ones = np.ones(n, dtype=bool)
    gallery = FeatureSet(
        keys=keys,
        groups=keys,
        labels=labels,
        image=vectors,
        image_mask=ones,
        text=vectors,
        text_mask=ones,
        query=vectors,
        sources=[source] * n,
    )
    return EvalSet(gallery, vectors, ones, vectors, ones, vectors, ones, np.zeros(n, dtype=int))


def _identity(data: EvalSet) -> Embedded:
    """The 'model' that uses the features as they are (already unit vectors)."""
    g = data.gallery
    return Embedded(g.image, g.text, g.image, data.keyword, data.view, data.own_image)


def _concat(a: EvalSet, b: EvalSet) -> EvalSet:
    rows_a, rows_b = len(a.gallery), len(b.gallery)
    fields = [
        "keys",
        "groups",
        "labels",
        "image",
        "image_mask",
        "text",
        "text_mask",
        "query",
        "sources",
    ]
    joined = {}
    for name in fields:
        x, y = getattr(a.gallery, name), getattr(b.gallery, name)
        joined[name] = np.concatenate([x, y]) if isinstance(x, np.ndarray) else x + y
    gallery = FeatureSet(**joined)
    parts = [
        np.concatenate([getattr(a, f), getattr(b, f)])
        for f in ("keyword", "keyword_mask", "view", "view_mask", "own_image", "own_image_mask")
    ]
    assert len(gallery) == rows_a + rows_b
    return EvalSet(gallery, *parts, np.zeros(rows_a + rows_b, dtype=int))


def test_a_query_is_only_ranked_against_its_own_source() -> None:
    """Source B's gallery holds, for every query of source A, a unit closer to it than A's own
    answer. Ranked against A's gallery alone, A's queries find their answer first; against
    everything, they would not."""
    rng = np.random.default_rng(0)
    n = 12
    own = rng.normal(size=(n, 8))
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    noisy = own + 0.05 * rng.normal(size=own.shape)
    noisy = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    labels = [f"l{i % 3}" for i in range(n)]
    a = _eval_set(n, "A", labels, own.astype(np.float32))
    a.keyword, a.view = noisy, noisy  # A's queries: near A's items
    b = _eval_set(n, "B", labels, noisy)  # B's items: exactly A's queries
    both = _concat(a, b)

    overall, per_source, _ = source_task_metrics(both.by_source(), _identity)
    assert per_source["A"]["queries"] == n
    for task in TASKS:
        assert per_source["A"]["tasks"][task]["R@1"] == pytest.approx(
            task_metrics(a, _identity(a))[task]["R@1"]
        )
    assert per_source["A"]["tasks"]["text->image"]["R@1"] == 1.0
    # ranked against the joint gallery instead, A's queries would find B's items first
    joint = task_metrics(both, _identity(both))
    assert joint["text->image"]["R@1"] < 1.0
    # the overall pools A's and B's queries
    expected = (n * per_source["A"]["tasks"]["text->image"]["R@1"] + n * 1.0) / (2 * n)
    assert overall["text->image"]["R@1"] == pytest.approx(expected)


def test_pooling_weights_sources_by_their_queries() -> None:
    a = ({"text->image": {"R@1": 1.0, "MAP": 0.5}}, {"text->image": {"paired": 30, "labelled": 10}})
    b = ({"text->image": {"R@1": 0.0}}, {"text->image": {"paired": 10, "labelled": 0}})
    pooled = pooled_metrics([a, b])
    assert pooled["text->image"]["R@1"] == pytest.approx(0.75)
    assert pooled["text->image"]["MAP"] == pytest.approx(0.5)  # only A has labels
    assert pooled_metrics([a]) is a[0]


def test_counted_task_metrics_counts_queries() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(10, 4)).astype(np.float32)
    data = _eval_set(10, "A", ["x", "y"] * 5, vectors)
    metrics, counts = counted_task_metrics(data, _identity(data))
    assert counts["text->image"] == {"paired": 10, "labelled": 10}
    assert "queries" not in metrics["text->image"]


# -- training draws across sources and validates per source -----------------------------------

IMAGE_DIM, TEXT_DIM = 24, 16


def _features(n: int, source: str, seed: int, duplicates: int = 0) -> FeatureSet:
    """Text = a fixed linear map of the image + noise; the first `duplicates` rows share one
    group (one content key)."""
    rng = np.random.default_rng(seed)
    mapping = np.random.default_rng(99).normal(size=(IMAGE_DIM, TEXT_DIM)) / 5
    image = rng.normal(size=(n, IMAGE_DIM)).astype(np.float32)
    text = (image @ mapping + 0.1 * rng.normal(size=(n, TEXT_DIM))).astype(np.float32)
    keys = [f"{source}{i}" for i in range(n)]
    groups = [f"{source}-dup" if i < duplicates else k for i, k in enumerate(keys)]
    return FeatureSet(
        keys=keys,
        groups=groups,
        labels=[f"c{i % 4}" for i in range(n)],
        image=image,
        image_mask=np.ones(n, dtype=bool),
        text=text,
        text_mask=np.ones(n, dtype=bool),
        query=(text + 0.2 * rng.normal(size=text.shape)).astype(np.float32),
        sources=[source] * n,
    )


def _join(*sets: FeatureSet) -> FeatureSet:
    return FeatureSet(
        keys=sum((s.keys for s in sets), []),
        groups=sum((s.groups for s in sets), []),
        labels=sum((s.labels for s in sets), []),
        image=np.concatenate([s.image for s in sets]),
        image_mask=np.concatenate([s.image_mask for s in sets]),
        text=np.concatenate([s.text for s in sets]),
        text_mask=np.concatenate([s.text_mask for s in sets]),
        query=np.concatenate([s.query for s in sets]),
        sources=sum((s.sources for s in sets), []),
    )


@pytest.mark.parametrize(
    ("sampling", "share"), [("proportional", 0.1), ("sqrt", 0.25), ("balanced", 0.5)]
)
def test_batches_draw_across_sources(sampling: str, share: float) -> None:
    """A small source's share of the batches follows the sampling; an epoch is as many
    batches as one pass over all items."""
    data = _join(_features(900, "big", 0), _features(100, "small", 1))
    config = TrainConfig(batch_size=50, sampling=sampling)
    batches = list(_Batches(data, config, torch.Generator().manual_seed(0)).epoch())
    assert len(batches) == 20
    rows = np.concatenate(batches)
    small = np.mean(rows >= 900)
    assert small == pytest.approx(share, abs=0.04)


def test_a_batch_holds_one_row_per_content_key() -> None:
    """Rows that share a content key (one caption, renderings of one picture) never meet in a
    batch: an item is not its own negative."""
    data = _features(200, "s", 0, duplicates=40)
    for sampling in ("proportional", "balanced"):
        batches = _Batches(data, TrainConfig(batch_size=64, sampling=sampling), torch.Generator())
        for rows in batches.epoch():
            groups = [data.groups[r] for r in rows]
            assert len(groups) == len(set(groups))


def test_validation_is_per_source_and_averaged() -> None:
    """The selection score is the mean of each source's rsum, each source's rows ranked among
    themselves; a big source does not outvote a small one."""
    train = _join(_features(300, "big", 0), _features(60, "small", 1))
    val = _join(_features(200, "big", 2), _features(40, "small", 3))
    config = TrainConfig(epochs=3, batch_size=64, lr=3e-3, sampling="sqrt")
    encoder = EncoderConfig(IMAGE_DIM, TEXT_DIM, dim=16, hidden=32)
    result = train_encoder(train, val, encoder, config)
    per_source = validation_by_source(result.model, val)
    assert set(per_source) == {"big", "small"}
    assert per_source == result.val_per_source
    small = val.subset(np.arange(200, 240))
    assert per_source["small"] == validation_metrics(result.model, small)
    score = (rsum(per_source["big"]) + rsum(per_source["small"])) / 2
    assert validation_score(per_source) == pytest.approx(score)
    assert result.history[result.best_epoch - 1].val_rsum == pytest.approx(score)
    assert result.val_metrics == mean_over_sources(per_source)


def test_unknown_sampling_is_refused() -> None:
    data = _features(20, "s", 0)
    with pytest.raises(ValueError, match="sampling"):
        train_encoder(data, data, EncoderConfig(IMAGE_DIM, TEXT_DIM), TrainConfig(sampling="x"))


# -- the comparison reports each source ----------------------------------------------------------


def test_comparison_reports_each_source(tmp_path: Path) -> None:
    parts = {
        "train": _join(_features(200, "big", 0), _features(80, "small", 1)),
        "val": _join(_features(60, "big", 2), _features(30, "small", 3)),
    }
    test = _join(_features(60, "big", 4), _features(30, "small", 5))
    ones = np.ones(len(test), dtype=bool)
    data = EvalSet(
        test, test.query, ones, test.image, ones, test.image, ones, np.zeros(len(test), dtype=int)
    )
    rng = np.random.default_rng(0)
    junk = Junk(np.full(IMAGE_DIM, 3.0, np.float32), rng.normal(size=(4, TEXT_DIM)).astype("f"))
    variants = tuple(v for v in VARIANTS if v.name in ("gated", "weighted"))
    runs = run_comparison(
        parts,
        data,
        junk,
        junk,
        seeds=2,
        corrupt_levels=(0.0, 0.3),
        train_config=TrainConfig(epochs=2, batch_size=64, sampling="balanced"),
        dim=16,
        variants=variants,
    )
    assert set(runs.source_metrics[0.3]) == {"big", "small"}
    assert all(len(runs.source_metrics[0.0]["small"]["gated"]) == 2 for _ in range(1))
    assert len(runs.gates[0.3]["gate"]) == 2 * len(test)
    context = {"split_sizes_per_source": {"big": {"test": 60}, "small": {"test": 30}}}
    document = write_report(runs, context, tmp_path)
    stored = json.loads((tmp_path / "report.json").read_text())
    assert set(stored["per_source"]) == {"big", "small"}
    small = stored["runs"][1]["per_source"]["small"]["variants"]["gated"]["tasks"]
    assert set(small) == set(TASKS) and set(small["text->image"]["R@10"]) == {"mean", "std"}
    assert stored["variants"] == document["variants"]
    markdown = (tmp_path / "report.md").read_text()
    assert "### Source big" in markdown and "### Source small" in markdown
    assert markdown.count("#### MAP") == 4  # two sources at two corruption levels


def test_compare_on_two_sources_through_the_cli(corpora, two_source_run, tmp_path: Path) -> None:
    """`eval A B --compare --json --out DIR`: the JSON and report.md carry each source."""
    fruit, tools = map(str, corpora)
    out = tmp_path / "report"
    result = invoke(
        ["eval", fruit, tools, "--compare", "--seeds", "1", "--epochs", "1", "--json"]
        + ["--backbone", f"{TINY}:random", "--out", out],
        two_source_run["home"],
    )
    assert result.exit_code == 0, result.stderr
    document = json_stdout(result)
    assert list(document["per_source"]) == [fruit, tools]
    assert (
        document["split_sizes_per_source"][tools]["test"]
        == (two_source_run["train"]["data"]["per_source"][tools]["test"])
    )
    gated = document["per_source"][fruit]["variants"]["gated"]["tasks"]
    assert set(gated) == set(TASKS)
    assert set(document["variants"]) >= {"gated", "nogate", "weighted", "concat"}
    markdown = (out / "report.md").read_text()
    assert f"### Source {fruit}" in markdown and f"### Source {tools}" in markdown

"""What the gate does with natural noise: the gated model's weight on the image, unit by unit,
grouped by the kind of caption the unit's own metadata gave it (corpus/caption_kinds.py:
English title, non-English title, a name or a file-like string as title, no title, empty
description, rich keywords), on a corpus's held-out test split with no synthetic corruption.

For each seed a gated model is trained on the corpus (`jointspace.train`, default recipe; the
features come from the home's cache, so only the first run pays for them); the test split's
units are embedded and their gate values (z, the weight on the image; 1 - z on the text)
grouped by caption kind (a unit may have several kinds; `shared-caption`: a caption that 20 or
more units of the corpus share word for word, e.g. Open Clip Art's "gramastar"). The table
gives, per kind, the units and the gate's mean over units (mean and std over seeds); the chart
(--chart, PNG) the same.

    .venv/bin/python benchmarks/gate_kinds.py /usr/share/openclipart/svg --seeds 3 \
        --home /tmp/js-oc-home --chart benchmarks/report-openclipart/gate-by-caption-kind.png

Human tables go to stdout; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from _common import emit_json, machine, machine_summary, print_machine, print_table, workdir

import jointspace as js
from jointspace.corpus.caption_kinds import CAPTION_KINDS
from jointspace.corpus.select import read_sources
from jointspace.pipeline.backbone import Backbone
from jointspace.pipeline.checkpoint import load_model
from jointspace.pipeline.training_run import load_features, split_feature_set

ALL = "all units"
SHARED = "shared-caption"  # a caption that 20 or more units of the corpus have, word for word
SHARED_AT = 20


def gates_by_kind(model_dir: Path, test, shared: set[str]) -> dict[str, list[float]]:
    """The gate of every test unit, under each of its caption kinds (and under ALL, and SHARED
    when its caption is one of `shared`)."""
    model, _ = load_model(model_dir)
    gates = model.embed(test.image, test.text, test.image_mask, test.text_mask)["gate"]
    grouped: dict[str, list[float]] = defaultdict(list)
    for item, gate in zip(test.items, gates.tolist(), strict=True):
        grouped[ALL].append(gate)
        for kind in item.extra.get("caption_kinds", ()):
            grouped[kind].append(gate)
        if item.text in shared:
            grouped[SHARED].append(gate)
    return grouped


def chart(rows: list[tuple[str, int, float, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.6))
    names = [f"{kind}\n(n={n})" for kind, n, _, _ in rows]
    means = [mean for _, _, mean, _ in rows]
    errors = [std for _, _, _, std in rows]
    axis.barh(names[::-1], means[::-1], xerr=errors[::-1], color="#4a7ebb", capsize=3)
    axis.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    axis.set_xlim(0, 1)
    axis.set_xlabel("gate: weight on the image (1 - weight on the text)")
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", help="a folder corpus whose SVGs carry metadata")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--home", help="jointspace home (its feature cache is reused)")
    parser.add_argument("--workdir", help="scratch folder (default: a new one under /tmp)")
    parser.add_argument("--chart", help="write the chart to this PNG")
    args = parser.parse_args()

    work = workdir("gate-kinds", args.workdir)
    home = Path(args.home) if args.home else work / "home"
    before = machine()
    print_machine("start", before)
    per_seed: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = {}
    models = []
    backbone = Backbone("offline")
    features, _ = load_features(read_sources([Path(args.corpus)]), home, backbone)
    test = split_feature_set(features)["test"]
    captions = Counter(item.text for item in features.items)
    shared = {text for text, n in captions.items() if n >= SHARED_AT}
    for seed in range(args.seeds):
        out = work / f"model-{seed}"
        report = js.train(args.corpus, out, home=home, seed=seed, epochs=args.epochs)
        models.append(report.model_id)
        for kind, gates in gates_by_kind(out, test, shared).items():
            per_seed[kind].append(float(np.mean(gates)))
            counts[kind] = len(gates)
    after = machine()

    order = [ALL, *(k for k in (*CAPTION_KINDS, SHARED) if k in per_seed)]
    rows = [
        (
            kind,
            counts[kind],
            statistics.mean(per_seed[kind]),
            statistics.stdev(per_seed[kind]) if len(per_seed[kind]) > 1 else 0.0,
        )
        for kind in order
    ]
    print_table(
        f"gate (weight on the image) of the gated model on {args.corpus}'s test split "
        f"({len(test)} units), by caption kind; mean over units, mean ± std over "
        f"{args.seeds} seeds",
        ["caption kind", "units", "gate mean", "std over seeds"],
        [list(row) for row in rows],
    )
    if args.chart:
        chart(rows, Path(args.chart), f"gated model, {args.corpus}: test split")
        print(f"chart: {args.chart}")
    print_machine("end", after)
    emit_json(
        {
            "corpus": args.corpus,
            "seeds": args.seeds,
            "models": models,
            "test_units": len(test),
            "gate_by_kind": {
                kind: {"units": n, "mean": round(mean, 4), "std": round(std, 4)}
                for kind, n, mean, std in rows
            },
            "machine": machine_summary(before, after),
        }
    )


if __name__ == "__main__":
    main()

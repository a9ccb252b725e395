"""Does a model care at which precision, and by which engine, its backbone features were made?
The six tasks of the same model with features from each setting, on the stamps' held-out test
split.

Settings: fp32 on torch (the reference), bf16 on torch, bf16 on OpenVINO (`--engine openvino`,
the default on a CPU with native bf16). One model is trained on the stamps per setting
(`jointspace --precision P --engine E train`, default recipe); each is evaluated (`jointspace
--precision Q --engine F eval --split test`) with every setting's features. For each model the
table gives R@10 and MAP per task with its own features and the others', and the differences;
`max_abs_diff` is the largest over every task, both metrics and every pair. The rule the
library follows (pipeline/compute.py): a model may run at another setting than it was trained
at if this difference stays within 0.01.

    .venv/bin/python benchmarks/precision.py

Human tables go to stdout; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import (
    STAMPS,
    emit_json,
    fresh_home,
    machine,
    machine_summary,
    print_machine,
    print_table,
    run_cli,
    workdir,
)

SETTINGS = {
    "fp32": ("fp32", "torch"),
    "bf16": ("bf16", "torch"),
    "bf16-openvino": ("bf16", "openvino"),
}
METRICS = ("R@10", "MAP")


def compute_args(setting: str) -> list[str]:
    precision, engine = SETTINGS[setting]
    return ["--precision", precision, "--engine", engine]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(STAMPS), help="corpus folder (default: stamps)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--workdir", help="scratch folder (default: a new one under /tmp)")
    args = parser.parse_args()

    work = workdir("precision", args.workdir)
    before = machine()
    print_machine("start", before)
    home = fresh_home(work, "home")  # one home: each setting has its own feature cache
    results: dict[str, dict[str, dict]] = {}
    trained: dict[str, dict] = {}
    for train_setting in SETTINGS:
        model = work / f"model-{train_setting}"
        train = ["train", args.corpus, "--out", str(model), "--epochs", str(args.epochs)]
        run = run_cli(
            [*compute_args(train_setting), *train, "--json", "-q"], home, sample_memory=False
        )
        trained[train_setting] = {"model_id": run.document["model_id"], "wall_s": run.wall_s}
        results[train_setting] = {}
        for eval_setting in SETTINGS:
            evaluate = ["eval", args.corpus, "--model", str(model), "--json", "-q"]
            evaluation = run_cli(
                [*compute_args(eval_setting), *evaluate], home, sample_memory=False
            )
            results[train_setting][eval_setting] = evaluation.document["tasks"]
    after = machine()

    summary: dict[str, dict] = {}
    for train_setting, by_eval in results.items():
        others = [s for s in SETTINGS if s != train_setting]
        own = by_eval[train_setting]
        rows, diffs = [], []
        for task in own:
            row: list = [task]
            for metric in METRICS:
                a = own[task].get(metric)
                row.append("-" if a is None else a)
                for other in others:
                    b = by_eval[other][task].get(metric)
                    if a is None or b is None:
                        row.append("-")
                        continue
                    diffs.append(abs(a - b))
                    row.append(b - a)
            rows.append(row)
        headers = ["task"]
        for metric in METRICS:
            headers += [f"{metric} own", *(f"{other} diff" for other in others)]
        print_table(
            f"model trained on {train_setting} features ({trained[train_setting]['model_id']}), "
            f"evaluated with its own and with {' and '.join(others)} features (stamps, test "
            "split)",
            headers,
            rows,
        )
        summary[train_setting] = {"max_abs_diff": round(max(diffs), 4), "tasks": by_eval}
    worst = max(s["max_abs_diff"] for s in summary.values())
    print(f"\nlargest |difference| over tasks, R@10 and MAP, every pair of settings: {worst:.4f}")
    print_machine("end", after)
    emit_json(
        {
            "corpus": str(Path(args.corpus)),
            "settings": {name: list(setting) for name, setting in SETTINGS.items()},
            "max_abs_diff": worst,
            "within_0_01": worst <= 0.01,
            "models": trained,
            "results": summary,
            "machine": machine_summary(before, after),
        }
    )


if __name__ == "__main__":
    main()

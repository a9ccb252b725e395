"""Does a model care at which precision its backbone features were made? The six tasks of the
same model with fp32 and bf16 features, on the stamps' held-out test split.

Two models are trained on the stamps (`jointspace --precision P train`, default recipe), one on
fp32 features and one on bf16 features; each is evaluated (`jointspace --precision Q eval
--split test`) with fp32 and with bf16 features. For each model the table gives R@10 and MAP per
task at both precisions and the difference; `max_abs_diff` is the largest over every task and
both metrics. The rule the library follows (pipeline/compute.py): a model may run at another
precision than it was trained at if this difference stays within 0.01.

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

PRECISIONS = ("fp32", "bf16")
METRICS = ("R@10", "MAP")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(STAMPS), help="corpus folder (default: stamps)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--workdir", help="scratch folder (default: a new one under /tmp)")
    args = parser.parse_args()

    work = workdir("precision", args.workdir)
    before = machine()
    print_machine("start", before)
    home = fresh_home(work, "home")  # one home: each precision has its own feature cache
    results: dict[str, dict[str, dict]] = {}
    trained: dict[str, dict] = {}
    for train_precision in PRECISIONS:
        model = work / f"model-{train_precision}"
        run = run_cli(
            [
                "--precision",
                train_precision,
                "train",
                args.corpus,
                "--out",
                str(model),
                "--epochs",
                str(args.epochs),
                "--json",
                "-q",
            ],
            home,
            sample_memory=False,
        )
        trained[train_precision] = {"model_id": run.document["model_id"], "wall_s": run.wall_s}
        results[train_precision] = {}
        for eval_precision in PRECISIONS:
            evaluation = run_cli(
                [
                    "--precision",
                    eval_precision,
                    "eval",
                    args.corpus,
                    "--model",
                    str(model),
                    "--json",
                    "-q",
                ],
                home,
                sample_memory=False,
            )
            results[train_precision][eval_precision] = evaluation.document["tasks"]
    after = machine()

    summary: dict[str, dict] = {}
    for train_precision, by_eval in results.items():
        own, other = by_eval[train_precision], by_eval[_other(train_precision)]
        rows, diffs = [], []
        for task in own:
            row: list = [task]
            for metric in METRICS:
                a, b = own[task].get(metric), other[task].get(metric)
                if a is None or b is None:
                    row += ["-", "-", "-"]
                    continue
                diffs.append(abs(a - b))
                row += [a, b, b - a]
            rows.append(row)
        headers = ["task"]
        for metric in METRICS:
            headers += [
                f"{metric} {train_precision}",
                f"{metric} {_other(train_precision)}",
                "diff",
            ]
        print_table(
            f"model trained on {train_precision} features ({trained[train_precision]['model_id']}"
            f"), evaluated with {train_precision} and {_other(train_precision)} features "
            "(stamps, test split)",
            headers,
            rows,
        )
        summary[train_precision] = {"max_abs_diff": round(max(diffs), 4), "tasks": by_eval}
    worst = max(s["max_abs_diff"] for s in summary.values())
    print(f"\nlargest |difference| over tasks, R@10 and MAP, both models: {worst:.4f}")
    print_machine("end", after)
    emit_json(
        {
            "corpus": str(Path(args.corpus)),
            "max_abs_diff": worst,
            "within_0_01": worst <= 0.01,
            "models": trained,
            "results": summary,
            "machine": machine_summary(before, after),
        }
    )


def _other(precision: str) -> str:
    return PRECISIONS[1 - PRECISIONS.index(precision)]


if __name__ == "__main__":
    main()

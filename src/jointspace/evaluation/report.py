"""The comparison report: report.json, report.md (tables, best in bold, ± std) and PNG charts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .compare import ComparisonRuns, gate_statistics, summarise
from .tasks import TASKS

TABLE_METRICS = ("R@1", "R@10", "MAP")
CURVE_TASKS = ("text->unit", "image->unit")


def comparison_document(runs: ComparisonRuns, context: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready results: `variants` (at the first corruption level) and `runs` (every level),
    each variant → tasks → task → metric → {"mean", "std"} over seeds, over all sources;
    `per_source` (first level; every level's in its run) the same per source: source →
    {"variants": ...}; gate statistics per level."""
    levels = [
        {
            "corrupt_units": p,
            "variants": _summaries(runs.metrics[p]),
            "per_source": {
                source: {"variants": _summaries(variants)}
                for source, variants in runs.source_metrics.get(p, {}).items()
            },
            "gate": gate_statistics(runs.gates[p]) if runs.gates[p]["gate"] else {},
        }
        for p in runs.corrupt_levels
    ]
    return {
        **context,
        "seeds": runs.seeds,
        "variants": levels[0]["variants"],
        "per_source": levels[0]["per_source"],
        "runs": levels,
        "notes": runs.notes,
        "histories": runs.histories,
    }


def _summaries(variants: dict[str, list[dict[str, dict[str, float]]]]) -> dict[str, Any]:
    return {name: {"tasks": summarise(per_seed)} for name, per_seed in variants.items()}


def _cell(stats: dict[str, float], bold: bool) -> str:
    text = f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return f"**{text}**" if bold else text


def _metric_table(variants: dict[str, Any], metric: str) -> list[str]:
    tasks = [t for t in TASKS if any(metric in v["tasks"][t] for v in variants.values())]
    if not tasks:
        return [f"(no {metric} for these items)"]
    best = {t: max(v["tasks"][t][metric]["mean"] for v in variants.values()) for t in tasks}
    lines = ["| variant | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, variant in variants.items():
        cells = [
            _cell(variant["tasks"][t][metric], variant["tasks"][t][metric]["mean"] == best[t])
            for t in tasks
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown_report(document: dict[str, Any]) -> str:
    """report.md: what was run, then per corruption level a table per metric."""
    lines = [
        "# jointspace comparison",
        "",
        f"Corpus: {document.get('sources')}; backbone `{document.get('backbone')}`; "
        f"{document.get('split_sizes')}; {document['seeds']} seeds (mean ± std); best per task "
        "in bold.",
        "",
        f"Command: `{document.get('command')}`",
        "",
        "Protocols:",
        *(f"- {note}" for note in document.get("protocol", {}).values()),
        "",
        "Charts: tasks.png (all variants per task), corruption.png (MAP vs corrupted fraction), "
        "gate.png (the gate per unit, clean vs corrupted), training.png (validation curves).",
    ]
    sizes = document.get("split_sizes_per_source") or {}
    for level in document["runs"]:
        lines += ["", f"## {level['corrupt_units']:.0%} of gallery units corrupted"]
        several = len(level.get("per_source") or {}) > 1
        if several:
            lines += ["", "All sources (each query against its own source's gallery):"]
        for metric in TABLE_METRICS:
            lines += ["", f"### {metric}", "", *_metric_table(level["variants"], metric)]
        for source, entry in (level.get("per_source") or {}).items() if several else ():
            size = sizes.get(source)
            lines += ["", f"### Source {source}" + (f" ({size})" if size else "")]
            for metric in TABLE_METRICS:
                lines += ["", f"#### {metric}", "", *_metric_table(entry["variants"], metric)]
        if level["gate"]:
            lines += [
                "",
                "Gate of `gated` per unit (weight on the image; 1 = image only):",
                "",
                "| units | count | mean | std |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {kind} | {s['units']} | {s['mean']:.3f} | {s['std']:.3f} |"
                for kind, s in level["gate"].items()
            ]
    if document["notes"]:
        lines += ["", "## Notes", "", *(f"- {k}: {v}" for k, v in document["notes"].items())]
    return "\n".join(lines) + "\n"


def write_report(runs: ComparisonRuns, context: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write report.json, report.md and the charts to `out`; returns the JSON document."""
    out.mkdir(parents=True, exist_ok=True)
    document = comparison_document(runs, context)
    (out / "report.json").write_text(json.dumps(document, indent=2))
    (out / "report.md").write_text(markdown_report(document))
    _charts(runs, document, out)
    return document


def _charts(runs: ComparisonRuns, document: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    _task_bars(plt, document, out / "tasks.png")
    if len(runs.corrupt_levels) > 1:
        _corruption_curves(plt, document, out / "corruption.png")
    last = runs.corrupt_levels[-1]
    if runs.gates[last]["gate"]:
        _gate_histogram(plt, runs.gates[last], last, out / "gate.png")
    if runs.histories:
        _training_curves(plt, runs.histories, out / "training.png")


def _task_bars(plt: Any, document: dict[str, Any], path: Path) -> None:
    levels = [document["runs"][0], document["runs"][-1]]
    if levels[0] is levels[1]:
        levels = levels[:1]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), sharey=True)
    for ax, task in zip(axes.flat, TASKS, strict=True):
        for offset, level in enumerate(levels):
            names = list(level["variants"])
            means = [level["variants"][n]["tasks"][task]["MAP"]["mean"] for n in names]
            stds = [level["variants"][n]["tasks"][task]["MAP"]["std"] for n in names]
            width = 0.8 / len(levels)
            x = np.arange(len(names)) + offset * width
            ax.bar(
                x,
                means,
                width,
                yerr=stds,
                capsize=3,
                label=f"{level['corrupt_units']:.0%} corrupted",
            )
        ax.set_xticks(
            np.arange(len(names)) + 0.4 - 0.4 / len(levels), names, rotation=45, ha="right"
        )
        ax.set_title(task)
        ax.set_ylabel("MAP (labelled)")
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _corruption_curves(plt: Any, document: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, len(CURVE_TASKS), figsize=(12, 4.5), sharey=True)
    levels = document["runs"]
    ps = [level["corrupt_units"] for level in levels]
    for ax, task in zip(axes, CURVE_TASKS, strict=True):
        for name in levels[0]["variants"]:
            stats = [level["variants"][name]["tasks"][task]["MAP"] for level in levels]
            ax.errorbar(
                ps,
                [s["mean"] for s in stats],
                yerr=[s["std"] for s in stats],
                marker="o",
                capsize=3,
                label=name,
            )
        ax.set_title(f"{task}: MAP vs corrupted units")
        ax.set_xlabel("fraction of gallery units with one modality corrupted")
        ax.set_ylabel("MAP (labelled)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _gate_histogram(plt: Any, gates: dict[str, list[float]], p: float, path: Path) -> None:
    values, kinds = np.array(gates["gate"]), np.array(gates["kind"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for kind in dict.fromkeys(kinds):
        ax.hist(values[kinds == kind], bins=np.linspace(0, 1, 41), alpha=0.6, label=kind)
    ax.set_xlabel("gate z (weight on the image; 1 = image only, 0 = text only)")
    ax.set_ylabel("units")
    ax.set_title(f"gated: per-unit gate, {p:.0%} of units corrupted")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _training_curves(plt: Any, histories: dict[str, list[dict[str, float]]], path: Path) -> None:
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        loss_ax.plot(epochs, [h["loss"] for h in history], label=name)
        val_ax.plot(epochs, [h["val_rsum"] for h in history], label=name)
    loss_ax.set(title="training loss (seed 0)", xlabel="epoch", ylabel="loss")
    val_ax.set(title="validation rsum (seed 0)", xlabel="epoch", ylabel="rsum of R@1,5,10")
    val_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

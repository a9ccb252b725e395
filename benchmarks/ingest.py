"""Ingest throughput at the default precision and engine against the fp32 torch reference path
and against its own engine's ceiling, on the same N real stamp PNGs, in one run.

Three paths, each the real console script (`jointspace --precision P --engine E ingest FOLDER
--json`) in a subprocess, into an empty JOINTSPACE_HOME (empty feature cache: every image is
decoded and encoded) holding only the backbone's towers, exported once beforehand as a user's
first run does (that first run, which loads open_clip and exports, is timed apart):

- default: `--precision auto --engine auto` (bf16 where the CPU has it natively, OpenVINO on a
  CPU; what a user gets);
- torch: `--precision auto --engine torch` (the default precision on torch: what the engine
  adds);
- fp32: `--precision fp32 --engine torch`, the reference path.

The ceiling of each path's engine (the exported towers ingest loads, at that precision, with the
allocator setting ingest makes: `keep_freed_memory`; without it the towers page-fault their
activations in again every batch and the "ceiling" came out 1.3-2.5x too low), in this
process over preloaded inputs: the image tower over already-preprocessed tensors (batches of
32), the text tower over the same captions (batches of 32), and the image+text ceiling
1 / (1/image ips + 1/text ips): one item = one image + one caption, with no decoding, no I/O,
no store. Throughput of an ingest = "ingested" / "seconds" (the command's own timer, which
includes loading the towers).

speedup_vs_fp32 = default ingest images/s over fp32 ingest images/s (paired round by round);
ratio_vs_image_text_ceiling = default ingest images/s over the default engine's image+text
ceiling. Rounds (--rounds, default 2) run everything in a rotated order; CPU time per image is
also shown (load from other jobs moves it much less than wall time). The model is trained
beforehand (`jointspace train --epochs 3`, default precision) in another home.

    .venv/bin/python benchmarks/ingest.py --n 512

Human tables go to stdout; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import (
    Stamp,
    emit_json,
    fresh_home,
    machine,
    machine_summary,
    make_folder_corpus,
    print_machine,
    print_table,
    run_cli,
    select_stamps,
    snippet_json,
    train_model,
    workdir,
)

from jointspace.corpus.images import decode_image, read_image_bytes
from jointspace.corpus.item import Item
from jointspace.pipeline.compute import Compute
from jointspace.pipeline.features import keep_freed_memory
from jointspace.pipeline.loaded import LoadedModel

BATCH = 32


@dataclass
class Rate:
    """Items per second of wall time, and CPU milliseconds (all threads) per item."""

    ips: float
    cpu_ms: float


def timed(work: Callable[[], None], items: int) -> Rate:
    started, cpu = time.perf_counter(), time.process_time()
    work()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Rate(items / wall, 1000 * cpu / items)


def batched_rate(encode: Callable[[Sequence], np.ndarray], inputs: Sequence) -> Rate:
    """Rate of `encode` over all `inputs` in batches of BATCH (after one untimed batch)."""
    encode(inputs[:BATCH])

    def work() -> None:
        for start in range(0, len(inputs), BATCH):
            encode(inputs[start : start + BATCH])

    return timed(work, len(inputs))


@dataclass
class Engine:
    """One path's encoder (the exported towers at its precision) and its preloaded inputs."""

    label: str
    precision: str
    encoder: object
    pixels: torch.Tensor

    def image_rate(self) -> Rate:
        return batched_rate(self.encoder.encode_images, self.pixels)

    def text_rate(self, captions: list[str]) -> Rate:
        return batched_rate(self.encoder.encode_texts, captions)


def encoder_of(
    label: str, compute: Compute, model_dir: str, home: Path, stamps: list[Stamp]
) -> Engine:
    """The encoder ingest uses on `compute` (exported towers in `home` on a CPU) and all the
    images decoded and preprocessed by it, as ingest does (untimed)."""
    loaded = LoadedModel.load(model_dir, home, compute)
    encoder = loaded.bulk_encoder()
    tensors = []
    for stamp in stamps:
        item = Item(source="bench", key=str(stamp.path), image=str(stamp.path))
        tensors.append(encoder.preprocess(decode_image(read_image_bytes(item), str(stamp.path))))
    precision = f"{loaded.compute.precision} {loaded.compute.engine}"
    return Engine(label, precision, encoder, torch.stack(tensors))


_LOAD_SNIPPET = """
import json, sys, time
from pathlib import Path
from PIL import Image
started = time.perf_counter()
from jointspace.pipeline.compute import Compute
from jointspace.pipeline.loaded import LoadedModel
compute = Compute.resolve(sys.argv[3], sys.argv[4], sys.argv[5])
loaded = LoadedModel.load(sys.argv[1], Path(sys.argv[2]), compute)
imported = time.perf_counter()
encoder = loaded.bulk_encoder()
encoder.encode_images(encoder.preprocess(Image.new("RGB", (64, 64), "white"))[None])
encoder.encode_texts(["a penguin"])
towers = time.perf_counter()
loaded.backbone  # open_clip, for comparison
print(json.dumps({"imports_s": imported - started, "towers_s": towers - imported,
                  "engine": type(encoder).__name__, "open_clip_s": time.perf_counter() - towers}))
"""


def load_times(model_dir: str, home: Path, device: str, setting: tuple[str, str]) -> dict:
    """In a fresh interpreter: imports, then the towers loaded and run once (what ingest loads
    before its first batch), then the open_clip backbone (what it loaded before)."""
    return snippet_json(_LOAD_SNIPPET, model_dir, str(home), device, *setting)


def ingest_command(
    corpus: Path, model_dir: str, device: str, setting: tuple[str, str], extra: Sequence[str] = ()
) -> list[str]:
    precision, engine = setting
    return [
        "--device",
        device,
        "--precision",
        precision,
        "--engine",
        engine,
        "ingest",
        str(corpus),
        "--collection",
        "bench",
        "--model",
        model_dir,
        "--json",
        "-q",
        *extra,
    ]


def home_with_towers(work: Path, label: str, towers_home: Path) -> Path:
    """An empty home holding only the exported towers (no features, no store; on a GPU there
    are none: ingest runs the open_clip backbone there)."""
    home = fresh_home(work, label)
    if (towers_home / "towers").is_dir():
        shutil.copytree(towers_home / "towers", home / "towers")
    return home


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rotated(items: list, by: int) -> list:
    by %= len(items)
    return items[by:] + items[:by]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="stamp PNGs (at most 796)")
    parser.add_argument("--seed", type=int, default=0, help="which stamps are drawn")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (medians are reported)")
    parser.add_argument("--model", help="use this trained model folder instead of training one")
    parser.add_argument("--workdir", help="scratch folder (default: a new one under /tmp)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    args = parser.parse_args()

    keep_freed_memory()  # as ingest does: the ceilings are those of the engine ingest runs
    work = workdir("ingest", args.workdir)
    before = machine()
    print_machine("start", before)
    print(f"workdir: {work}")
    stamps = select_stamps(args.n, args.seed)
    corpus = make_folder_corpus(stamps, work / "corpus")
    captions = [stamp.caption for stamp in stamps]
    default = Compute.resolve(args.device, "auto", "auto")
    print(f"default precision and engine here: {default.describe()}")
    if args.model:
        model_dir, train_wall = args.model, None
    else:
        model_dir = str(work / "model")
        train_wall = train_model(corpus, work / "model", fresh_home(work, "train")).wall_s

    paths = {"default": ("auto", "auto"), "torch": ("auto", "torch"), "fp32": ("fp32", "torch")}
    # a user's first run at each precision: open_clip loaded, towers exported (timed apart)
    first_runs, towers_homes, load = {}, {}, {}
    for label, setting in paths.items():
        towers_homes[label] = fresh_home(work, f"towers-{label}")
        first = run_cli(
            ingest_command(corpus, model_dir, args.device, setting, ["--limit", "8"]),
            towers_homes[label],
            sample_memory=False,
        )
        first_runs[label] = first.wall_s
        load[label] = load_times(model_dir, towers_homes[label], args.device, setting)
    engines = {
        label: encoder_of(
            label, Compute.resolve(args.device, *setting), model_dir, towers_homes[label], stamps
        )
        for label, setting in paths.items()
    }
    reference = engines["fp32"].encoder.encode_images(engines["fp32"].pixels[:BATCH])
    default_features = engines["default"].encoder.encode_images(engines["default"].pixels[:BATCH])
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    b = default_features / np.linalg.norm(default_features, axis=1, keepdims=True)
    min_cosine = float((a * b).sum(axis=1).min())

    image_rates: dict[str, list[Rate]] = {label: [] for label in paths}
    text_rates: dict[str, list[Rate]] = {label: [] for label in paths}
    ingests: dict[str, list[dict]] = {label: [] for label in paths}
    for round_ in range(args.rounds):
        for label in rotated(list(paths), round_):
            image_rates[label].append(engines[label].image_rate())
            text_rates[label].append(engines[label].text_rate(captions))
        for label in rotated(list(paths), round_):
            home = home_with_towers(work, f"ingest-{label}", towers_homes[label])
            run = run_cli(ingest_command(corpus, model_dir, args.device, paths[label]), home)
            doc = run.document
            if doc["ingested"] != args.n:
                print(f"warning: {label}: ingested {doc['ingested']} of {args.n} ({doc})")
            ingests[label].append(
                {
                    "seconds": doc["seconds"],
                    "ips": doc["ingested"] / doc["seconds"],
                    "cpu_ms": 1000 * run.cpu_s / max(doc["ingested"], 1),
                    "wall_s": run.wall_s,
                    "wall_ips": doc["ingested"] / run.wall_s,
                    "peak_tree_rss_mb": run.memory.tree_rss_mb,
                }
            )
    after = machine()

    # summary -----------------------------------------------------------------------------------
    def ceiling_of(label: str) -> dict[str, float]:
        image = median([r.ips for r in image_rates[label]])
        text = median([r.ips for r in text_rates[label]])
        return {
            "image_ips": image,
            "text_ips": text,
            "image_text_ips": 1 / (1 / image + 1 / text),
            "image_cpu_ms": median([r.cpu_ms for r in image_rates[label]]),
            "text_cpu_ms": median([r.cpu_ms for r in text_rates[label]]),
        }

    ceilings = {label: ceiling_of(label) for label in paths}
    runs = {label: {k: median([r[k] for r in rs]) for k in rs[0]} for label, rs in ingests.items()}
    speedup = median(
        [d["ips"] / f["ips"] for d, f in zip(ingests["default"], ingests["fp32"], strict=True)]
    )
    ratio = {label: runs[label]["ips"] / ceilings[label]["image_text_ips"] for label in paths}
    ratio_paired = {
        label: median(
            [
                run["ips"] / (1 / (1 / i.ips + 1 / t.ips))
                for run, i, t in zip(
                    ingests[label], image_rates[label], text_rates[label], strict=True
                )
            ]
        )
        for label in paths
    }
    precision_of = {label: engines[label].precision for label in paths}

    print_table(
        f"ceilings: the exported towers over {args.n} preloaded inputs, batches of {BATCH} "
        f"(torch threads {torch.get_num_threads()}; median of {args.rounds} rounds; "
        f"default vs fp32 image features: min cosine {min_cosine:.4f})",
        [
            "path",
            "precision, engine",
            "image/s",
            "text/s",
            "image+text/s",
            "CPU ms/image",
            "CPU ms/text",
        ],
        [
            [
                label,
                precision_of[label],
                c["image_ips"],
                c["text_ips"],
                c["image_text_ips"],
                c["image_cpu_ms"],
                c["text_cpu_ms"],
            ]
            for label, c in ceilings.items()
        ],
    )
    trained = f"; model trained in {train_wall:.0f} s" if train_wall else ""
    print_table(
        f"jointspace ingest of the same {args.n} images (empty feature cache each run, towers "
        f"exported beforehand{trained}; median of {args.rounds} rounds; CPU ms/image = the "
        "whole process tree's CPU, startup included / images)",
        [
            "path",
            "seconds",
            "images/s",
            "vs image+text ceiling",
            "(paired)",
            "CPU ms/image",
            "wall s",
            "wall images/s",
            "peak RSS MB",
        ],
        [
            [
                label,
                r["seconds"],
                r["ips"],
                ratio[label],
                ratio_paired[label],
                r["cpu_ms"],
                r["wall_s"],
                r["wall_ips"],
                r["peak_tree_rss_mb"],
            ]
            for label, r in runs.items()
        ],
    )
    print_table(
        "loading (fresh interpreter): the towers ingest loads (and runs once), against the "
        "open_clip backbone; a user's first run at each precision (open_clip + export, "
        "8 images), whole process",
        ["path", "imports s", "towers s", "engine", "open_clip s", "first run wall s"],
        [
            [
                label,
                load[label]["imports_s"],
                load[label]["towers_s"],
                load[label]["engine"],
                load[label]["open_clip_s"],
                first_runs[label],
            ]
            for label in paths
        ],
    )
    print(
        f"\ndefault ({precision_of['default']}) ingest {runs['default']['ips']:.1f} images/s, "
        f"fp32 {runs['fp32']['ips']:.1f}: speedup {speedup:.2f}; vs its image+text ceiling "
        f"{ratio['default']:.2f} (paired {ratio_paired['default']:.2f})"
    )
    print_machine("end", after)
    emit_json(
        {
            "n": args.n,
            "rounds": args.rounds,
            "device": args.device,
            "default_precision": default.precision,
            "default_engine": default.engine,
            "ingest_ips": round(runs["default"]["ips"], 2),
            "ingest_fp32_ips": round(runs["fp32"]["ips"], 2),
            "speedup_vs_fp32": round(speedup, 3),
            "image_text_ceiling_ips": round(ceilings["default"]["image_text_ips"], 2),
            "ratio_vs_image_text_ceiling": round(ratio["default"], 3),
            "ratio_vs_image_text_ceiling_paired": round(ratio_paired["default"], 3),
            "fp32_ratio_vs_image_text_ceiling": round(ratio["fp32"], 3),
            "torch_ingest_ips": round(runs["torch"]["ips"], 2),
            "torch_ratio_vs_image_text_ceiling": round(ratio["torch"], 3),
            "ceilings": {
                label: {k: round(v, 2) for k, v in c.items()} for label, c in ceilings.items()
            },
            "ingest_runs_ips": {
                label: [round(r["ips"], 2) for r in rs] for label, rs in ingests.items()
            },
            "ingest_cpu_ms_per_image": {label: round(r["cpu_ms"], 1) for label, r in runs.items()},
            "peak_tree_rss_mb": {label: round(r["peak_tree_rss_mb"]) for label, r in runs.items()},
            "towers_load_s": {label: round(load[label]["towers_s"], 3) for label in paths},
            "open_clip_load_s": {label: round(load[label]["open_clip_s"], 2) for label in paths},
            "first_run_wall_s": {label: round(v, 2) for label, v in first_runs.items()},
            "min_cosine_default_vs_fp32": round(min_cosine, 4),
            "torch_threads": torch.get_num_threads(),
            "machine": machine_summary(before, after),
        }
    )


if __name__ == "__main__":
    main()

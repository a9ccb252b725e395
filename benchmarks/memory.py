"""Peak memory of `jointspace ingest` for a small vs a large manifest (default 1k vs 10k items).

What this measures: the pipeline's memory growth with corpus size (reading the manifest,
batching, the already-stored check, embedding, upserting, the store) WITH IMAGE FEATURES CACHED.
The large corpus is synthesized from the real PNG stamps: a CSV manifest that repeats the
distinct images under distinct keys (`id` column), each row with its stamp's caption plus " #n"
(distinct text per row), and the stamp's category as label. The feature cache is
content-addressed, so it is warmed first (untimed) by ingesting the distinct images once; each
measured run then starts from a fresh home holding a copy of that warm cache (the same cache for
both sizes, no store), so images are cache hits (read and hashed, not decoded or encoded), while
the rows' distinct captions are still encoded by the MiniLM text tower (on 2 cores, 10k
captions took ~10 min (load 3-4) padded to 64 tokens, ~1 min with the padding trimmed).
With --caption-pool K the captions cycle through K variants
instead (then text encoding is bounded by K, not by the corpus).

Memory is sampled every 0.2 s from /proc over the ingest subprocess and all its children (the
decoding workers): the tree's summed RSS (the headline; forked workers' shared pages count once
per process, an upper bound), the tree's summed PSS, and the main process's RSS.

    .venv/bin/python benchmarks/memory.py

ratio = peak RSS large / peak RSS small (target <= 1.3). Human tables go to stdout; the LAST line
is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

from _common import (
    Stamp,
    all_stamps,
    emit_json,
    fresh_home,
    machine,
    machine_summary,
    make_folder_corpus,
    print_machine,
    print_table,
    run_cli,
    train_model,
    workdir,
)


def write_manifest(path: Path, stamps: list[Stamp], rows: int, caption_pool: int) -> Path:
    """`rows` items cycling through `stamps`: distinct ids, the stamp's absolute path, its caption
    with " #n" (n = row, or row modulo caption_pool), its category as label."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "image", "text", "label"])
        for row in range(rows):
            stamp = stamps[row % len(stamps)]
            n = row % caption_pool if caption_pool else row
            writer.writerow(
                [f"item-{row:07d}", str(stamp.path), f"{stamp.caption} #{n}", stamp.category]
            )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000, help="items in the small manifest")
    parser.add_argument("--large", type=int, default=10_000, help="items in the large manifest")
    parser.add_argument(
        "--caption-pool",
        type=int,
        default=0,
        help="cycle captions through this many variants (0: distinct caption per row)",
    )
    parser.add_argument("--workers", type=int, default=1, help="ingest --workers")
    parser.add_argument("--model", help="use this trained model folder instead of training one")
    parser.add_argument("--workdir", help="scratch folder (default: a new one under /tmp)")
    args = parser.parse_args()

    work = workdir("memory", args.workdir)
    before = machine()
    print_machine("start", before)
    print(f"workdir: {work}")
    stamps = all_stamps()
    distinct = make_folder_corpus(stamps, work / "distinct")

    # warm the feature cache with every distinct image (untimed) ----------------------------------
    warm_home = fresh_home(work, "warm")
    if args.model:
        model_dir = args.model
    else:
        model_dir = str(work / "model")
        train_model(distinct, work / "model", warm_home)  # encodes every distinct image
    warm = run_cli(
        ["ingest", str(distinct), "--collection", "warm", "--model", model_dir, "--json", "-q"],
        warm_home,
        sample_memory=False,
    )
    features = warm_home / "features"

    # the measured runs: a fresh home each, holding a copy of the warm feature cache ------------
    results = {}
    for label, rows in (("small", args.small), ("large", args.large)):
        manifest = write_manifest(work / f"{label}.csv", stamps, rows, args.caption_pool)
        home = fresh_home(work, label)
        shutil.copytree(features, home / "features")
        run = run_cli(
            [
                "ingest",
                str(manifest),
                "--collection",
                "mem",
                "--model",
                model_dir,
                "--workers",
                str(args.workers),
                "--json",
                "-q",
            ],
            home,
        )
        if run.document["ingested"] != rows:
            print(f"warning: {label}: ingested {run.document['ingested']} of {rows}")
        results[label] = (rows, run)
    after = machine()

    print_table(
        f"jointspace ingest of a CSV manifest over {len(stamps)} distinct stamps, image features "
        f"cached (warm-up ingest: {warm.wall_s:.0f} s); captions "
        + (
            f"cycle through {args.caption_pool} variants"
            if args.caption_pool
            else "distinct per row"
        ),
        [
            "run",
            "items",
            "ingested",
            "seconds",
            "items/s",
            "wall s",
            "peak tree RSS MB",
            "peak tree PSS MB",
            "peak main RSS MB",
            "processes",
        ],
        [
            [
                label,
                rows,
                run.document["ingested"],
                run.document["seconds"],
                run.document["items_per_second"],
                run.wall_s,
                run.memory.tree_rss_mb,
                run.memory.tree_pss_mb,
                run.memory.main_rss_mb,
                run.memory.max_processes,
            ]
            for label, (rows, run) in results.items()
        ],
    )
    small, large = results["small"][1].memory, results["large"][1].memory
    ratio = large.tree_rss_mb / small.tree_rss_mb
    print(
        f"\npeak RSS (tree) {small.tree_rss_mb:.0f} MB -> {large.tree_rss_mb:.0f} MB: ratio "
        f"{ratio:.2f} (target <= 1.3); PSS ratio {large.tree_pss_mb / small.tree_pss_mb:.2f}; "
        f"main process ratio {large.main_rss_mb / small.main_rss_mb:.2f}"
    )
    print_machine("end", after)
    emit_json(
        {
            "rss_small_mb": round(small.tree_rss_mb, 1),
            "rss_large_mb": round(large.tree_rss_mb, 1),
            "ratio": round(ratio, 3),
            "small_items": args.small,
            "large_items": args.large,
            "pss_small_mb": round(small.tree_pss_mb, 1),
            "pss_large_mb": round(large.tree_pss_mb, 1),
            "main_rss_small_mb": round(small.main_rss_mb, 1),
            "main_rss_large_mb": round(large.main_rss_mb, 1),
            "distinct_images": len(stamps),
            "caption_pool": args.caption_pool,
            "workers": args.workers,
            "image_features": "cached",
            "machine": machine_summary(before, after),
        }
    )


if __name__ == "__main__":
    main()

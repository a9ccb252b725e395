"""Re-running an unchanged ingest: first run vs second run of the same command, same home.

The first `jointspace ingest FOLDER --json` starts from an empty JOINTSPACE_HOME (every image
decoded and encoded); the second, identical, finds every point stored and skips it. Both are
timed as whole subprocesses (wall clock: interpreter start, imports, model and backbone loading
included), and by the command's own "seconds" (which starts after loading). The model is trained
beforehand in another home (`jointspace train --epochs 3`: train fills its feature cache).

    .venv/bin/python benchmarks/reingest.py --n 512

speedup = first wall s / second wall s (target >= 10). Human tables go to stdout; the LAST line
is one JSON object.
"""

from __future__ import annotations

import argparse

from _common import (
    backbone_loads_in_timer,
    emit_json,
    fresh_home,
    machine,
    machine_summary,
    make_folder_corpus,
    print_machine,
    print_table,
    run_cli,
    select_stamps,
    startup_breakdown,
    train_model,
    workdir,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="stamp PNGs (at most 796)")
    parser.add_argument("--seed", type=int, default=0, help="which stamps are drawn")
    parser.add_argument("--model", help="use this trained model folder instead of training one")
    parser.add_argument("--workdir", help="scratch folder (default: a new one under /tmp)")
    args = parser.parse_args()

    work = workdir("reingest", args.workdir)
    before = machine()
    print_machine("start", before)
    print(f"workdir: {work}")
    corpus = make_folder_corpus(select_stamps(args.n, args.seed), work / "corpus")
    if args.model:
        model_dir = args.model
    else:
        model_dir = str(work / "model")
        train_model(corpus, work / "model", fresh_home(work, "train"))

    home = fresh_home(work, "ingest")
    command = ["ingest", str(corpus), "--collection", "bench", "--model", model_dir, "--json", "-q"]
    first = run_cli(command, home)
    second = run_cli(command, home)
    # what any run of the command costs before it reads a record: a third, identical run with
    # --limit 0 (nothing read, nothing skipped; same imports and model loading)
    startup = run_cli([*command, "--limit", "0"], home)
    breakdown = startup_breakdown(model_dir)
    lazy_backbone = backbone_loads_in_timer()
    after = machine()

    rows = []
    for label, run in (("first", first), ("second", second), ("--limit 0", startup)):
        doc = run.document
        rows.append(
            [
                label,
                doc["ingested"],
                doc["already_stored"],
                doc["skipped"],
                doc["seconds"],
                run.wall_s,
            ]
        )
    print_table(
        f"jointspace ingest of {args.n} stamps, twice in one home",
        ["run", "ingested", "already stored", "skipped", "seconds", "wall s"],
        rows,
    )
    speedup = first.wall_s / second.wall_s
    inner = first.document["seconds"] / max(second.document["seconds"], 1e-3)
    print(
        f"\nspeedup (wall) {speedup:.1f}x; speedup of the command's own seconds {inner:.1f}x; "
        f"fixed cost of a run that reads nothing: {startup.wall_s:.1f} s wall"
    )
    print(
        f"fixed cost, measured apart in a fresh process: imports {breakdown['imports_s']:.1f} s,"
        f" model {breakdown['model_s']:.2f} s, backbone {breakdown['backbone_s']:.1f} s"
    )
    if lazy_backbone:
        print("this version loads the backbone only when something is left to encode")
        lazy = speedup
    else:
        lazy = first.wall_s / max(second.wall_s - breakdown["backbone_s"], 1e-3)
        print(
            "this version loads the backbone even when nothing is left to encode: without "
            f"loading it, the speedup would be about {lazy:.1f}x"
        )
    if second.document["already_stored"] != first.document["ingested"]:
        print("warning: the second run did not find every point of the first one stored")
    print_machine("end", after)
    emit_json(
        {
            "first_s": round(first.wall_s, 2),
            "second_s": round(second.wall_s, 2),
            "speedup": round(speedup, 2),
            "n": args.n,
            "first_seconds_inner": first.document["seconds"],
            "second_seconds_inner": second.document["seconds"],
            "speedup_inner": round(inner, 1),
            "startup_wall_s": round(startup.wall_s, 2),
            "startup_breakdown_s": {k: round(v, 2) for k, v in breakdown.items()},
            "backbone_loaded_lazily": lazy_backbone,
            "speedup_without_backbone_load": round(lazy, 2),
            "second_already_stored": second.document["already_stored"],
            "machine": machine_summary(before, after),
        }
    )


if __name__ == "__main__":
    main()

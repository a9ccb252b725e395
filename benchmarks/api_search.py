"""A notebook's searches through the Python API: the first search of a Collection (it loads the
model and backbone) against the ones after it (which reuse them), in one process.

Run against a collection that exists, e.g. after `bash scripts/demo.sh`:

    .venv/bin/python benchmarks/api_search.py --home jointspace-data --collection stamps

Baseline: the first search, same process, same run. Human tables go to stdout; the LAST line is
one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _common import emit_json, machine, machine_summary, print_machine, print_table

QUERIES = ("penguin", "a red car", "birthday cake", "tree", "a cup of coffee", "dog", "boat")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default="jointspace-data", help="the embedded store's home")
    parser.add_argument("--collection", default="stamps")
    parser.add_argument("--repeats", type=int, default=20, help="searches after the first")
    args = parser.parse_args()

    before = machine()
    print_machine("start", before)
    started = time.perf_counter()
    import jointspace as js

    import_s = time.perf_counter() - started
    heavy = sorted({"torch", "open_clip", "qdrant_edge"} & set(sys.modules))
    space = js.connect(home=args.home)
    collection = space.collection(args.collection)

    def timed(text: str) -> float:
        start = time.perf_counter()
        collection.search(text=text, k=10)
        return time.perf_counter() - start

    first = timed(QUERIES[0])
    loaded = collection.model.loaded
    later = [timed(QUERIES[1 + i % (len(QUERIES) - 1)]) for i in range(args.repeats)]
    assert collection.model.loaded is loaded, "the model was reloaded"
    space.close()

    median = statistics.median(later)
    print_table(
        f"Collection.search in one process ('{args.collection}', k=10)",
        ["", "seconds", "first / this"],
        [
            ["import jointspace", round(import_s, 3), "—"],
            ["first search (loads model + backbone)", round(first, 3), 1.0],
            [
                f"later searches, median of {args.repeats}",
                round(median, 4),
                round(first / median, 1),
            ],
            ["later searches, max", round(max(later), 4), round(first / max(later), 1)],
        ],
    )
    emit_json(
        {
            "import_s": round(import_s, 3),
            "heavy_modules_after_import": heavy,
            "first_search_s": round(first, 3),
            "later_search_median_s": round(median, 4),
            "later_search_max_s": round(max(later), 4),
            "speedup_later_vs_first": round(first / median, 1),
            "machine": machine_summary(before, machine()),
        }
    )


if __name__ == "__main__":
    main()

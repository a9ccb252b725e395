"""The image tower's throughput per engine and precision: torch and OpenVINO (the default on a
CPU, `--engine openvino`), each at fp32 and bf16, as ingest runs them: the exported towers
(TorchScript for torch, OpenVINO IR for openvino) loaded from a jointspace home, with the
allocator setting ingest makes.

Each (engine, precision) runs in its own fresh interpreter, over the same 32 real stamp PNGs
preprocessed as ingest does; rounds rotate the order and medians are reported. Features are
compared with torch fp32's on the same pixels (untimed). The towers come from a home where
ingest exported them (`--home`), or are exported here from the offline backbone.

    .venv/bin/python benchmarks/engines.py --rounds 3

Human tables go to stdout; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from _common import (
    emit_json,
    machine,
    machine_summary,
    print_machine,
    print_table,
    select_stamps,
    snippet_json,
)

BATCH, REPEATS = 32, 12
SETTINGS = [("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16")]

_MEASURE = """
import gc, json, sys, time
import numpy as np, torch
from pathlib import Path
from jointspace.pipeline.features import keep_freed_memory
keep_freed_memory()
engine, precision, home = sys.argv[1], sys.argv[2], Path(sys.argv[3])
from jointspace.corpus.images import decode_image
from jointspace.pipeline.backbone import Backbone
from jointspace.pipeline.compute import Compute
from jointspace.pipeline.towers import ExportedTowers, export_towers, towers_dir

def towers_at(engine, precision):
    backbone = Backbone("offline", Compute("cpu", precision, engine=engine))
    folder = towers_dir(home, backbone.features_key)
    return ExportedTowers.open(folder, backbone.features_key) or export_towers(backbone, folder)

def rate(run):
    run()
    started = time.perf_counter()
    for _ in range(%(repeats)d):
        run()
    return %(batch)d * %(repeats)d / (time.perf_counter() - started)

paths = [Path(p) for p in json.loads(sys.argv[4])]
reference_towers = towers_at("torch", "fp32")
towers = towers_at(engine, precision)
gc.collect()  # the open_clip backbones built above are gone before timing
x = torch.stack([towers.preprocess(decode_image(p.read_bytes(), p.name)) for p in paths])
features = towers.encode_images(x)
ips = rate(lambda: towers.encode_images(x))
reference = reference_towers.encode_images(x)
a = features / np.linalg.norm(features, axis=1, keepdims=True)
b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
print(json.dumps({"ips": ips, "min_cosine": float((a * b).sum(axis=1).min())}))
"""


IMAGES = json.dumps([str(stamp.path) for stamp in select_stamps(BATCH)])


def measure(engine: str, precision: str, home: Path) -> dict:
    """Images/s of one engine at one precision, in a fresh interpreter."""
    code = _MEASURE % {"batch": BATCH, "repeats": REPEATS}
    return snippet_json(code, engine, precision, str(home), IMAGES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--home", help="a jointspace home with (or for) the exported towers")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="jointspace-bench-engines-"))
    before = machine()
    print_machine("start", before)
    rates: dict[tuple[str, str], list[float]] = {s: [] for s in SETTINGS}
    cosines: dict[tuple[str, str], float] = {}
    for round_ in range(args.rounds):
        for setting in SETTINGS[round_ % len(SETTINGS) :] + SETTINGS[: round_ % len(SETTINGS)]:
            result = measure(*setting, home)
            rates[setting].append(result["ips"])
            cosines[setting] = result["min_cosine"]
    after = machine()
    ips = {setting: statistics.median(r) for setting, r in rates.items()}

    def gain(engine: str, precision: str) -> float:
        """This setting over torch at the same precision, paired round by round."""
        pairs = zip(rates[(engine, precision)], rates[("torch", precision)], strict=True)
        return statistics.median(a / b for a, b in pairs)

    print_table(
        f"image tower, batches of {BATCH}, median of {args.rounds} rounds (each a fresh "
        "interpreter)",
        ["engine", "precision", "images/s", "vs torch same precision", "min cosine vs torch fp32"],
        [[e, p, ips[(e, p)], gain(e, p), f"{cosines[(e, p)]:.4f}"] for e, p in SETTINGS],
    )
    print_machine("end", after)
    emit_json(
        {
            "rounds": args.rounds,
            **{
                f"{e}_{p}": {
                    "ips": round(ips[(e, p)], 1),
                    "vs_torch_same_precision": round(gain(e, p), 2),
                    "min_cosine_vs_torch_fp32": round(cosines[(e, p)], 4),
                    "runs": [round(r, 1) for r in rates[(e, p)]],
                }
                for e, p in SETTINGS
            },
            "machine": machine_summary(before, after),
        }
    )


if __name__ == "__main__":
    main()

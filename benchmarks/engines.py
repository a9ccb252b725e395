"""OpenVINO's throughput on the image tower at f32 and bf16: the exported fp32 TorchScript trace
ingest's towers come from, converted with `openvino.convert_model` and compiled for the CPU
(INFERENCE_PRECISION_HINT f32 or bf16, 2 threads). Is a second engine worth adding for ingest?
Compare with torch's own ceilings, which benchmarks/ingest.py measures in its process as ingest
runs them (run both in one quiet window).

Each precision runs in its own fresh interpreter, over the same 32 real stamp PNGs preprocessed
as ingest does, with the allocator setting ingest makes; rounds rotate the order and medians
are reported. Features are compared with torch fp32's on the same pixels (untimed). OpenVINO is
not a dependency of jointspace: `pip install openvino` first (the script says so if it is
missing). The towers come from a home where ingest exported them (`--home`), or are exported
here from the offline backbone.

(Torch is not timed here: measured in a fresh interpreter like this, its towers ran at 20
images/s in a quiet window where ingest.py's in-process ceilings gave 314 (bf16) and 185
(fp32); the cause was not found, so torch's figures come from ingest.py.)

    .venv/bin/python benchmarks/engines.py --rounds 3

Human tables go to stdout; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
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

_MEASURE = """
import json, sys, time
import numpy as np, torch
from pathlib import Path
from jointspace.pipeline.features import keep_freed_memory
keep_freed_memory()
precision, home = sys.argv[1], Path(sys.argv[2])
from jointspace.corpus.images import decode_image
from jointspace.pipeline.backbone import Backbone
from jointspace.pipeline.compute import Compute
from jointspace.pipeline.towers import ExportedTowers, export_towers, towers_dir

def towers_at(precision):
    compute = Compute.resolve("cpu", precision)
    backbone = Backbone("offline", compute)
    folder = towers_dir(home, backbone.features_key)
    return ExportedTowers.open(folder, backbone.features_key) or export_towers(backbone, folder)

def rate(run):
    run()
    started = time.perf_counter()
    for _ in range(%(repeats)d):
        run()
    return %(batch)d * %(repeats)d / (time.perf_counter() - started)

paths = [Path(p) for p in json.loads(sys.argv[3])]
x = torch.stack([towers_at("fp32").preprocess(decode_image(p.read_bytes(), p.name)) for p in paths])
import openvino
reference = towers_at("fp32").encode_images(x)
traced = torch.jit.load(str(towers_at("fp32").folder / "image.ts")).eval()
compiled = openvino.Core().compile_model(
    openvino.convert_model(traced, example_input=x), "CPU",
    {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
     "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2})
pixels = x.numpy()
encode = lambda: compiled(pixels)[0]
features = np.asarray(encode())
a = features / np.linalg.norm(features, axis=1, keepdims=True)
b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
print(json.dumps({"ips": rate(encode), "min_cosine": float((a * b).sum(axis=1).min())}))
"""


IMAGES = json.dumps([str(stamp.path) for stamp in select_stamps(BATCH)])


def measure(precision: str, home: Path) -> dict:
    """Images/s of OpenVINO at one precision, in a fresh interpreter."""
    code = _MEASURE % {"batch": BATCH, "repeats": REPEATS}
    return snippet_json(code, precision, str(home), IMAGES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--home", help="a jointspace home with (or for) the exported towers")
    args = parser.parse_args()
    try:
        import openvino  # noqa: F401
    except ImportError:
        sys.exit("OpenVINO is not installed: `.venv/bin/pip install openvino`, then run again.")
    home = Path(args.home or tempfile.mkdtemp(prefix="jointspace-bench-engines-"))
    before = machine()
    print_machine("start", before)
    precisions = ["fp32", "bf16"]
    rates: dict[str, list[float]] = {p: [] for p in precisions}
    cosines: dict[str, float] = {}
    for round_ in range(args.rounds):
        for precision in precisions[round_ % 2 :] + precisions[: round_ % 2]:
            result = measure(precision, home)
            rates[precision].append(result["ips"])
            cosines[precision] = result["min_cosine"]
    after = machine()
    summary = {
        f"openvino_{p}": {
            "ips": round(statistics.median(rates[p]), 1),
            "min_cosine_vs_torch_fp32": round(cosines[p], 4),
            "runs": [round(r, 1) for r in rates[p]],
        }
        for p in precisions
    }
    bf16_gain = statistics.median(b / f for b, f in zip(rates["bf16"], rates["fp32"], strict=True))
    print_table(
        f"OpenVINO image tower, batches of {BATCH}, 2 threads, median of {args.rounds} rounds "
        "(each a fresh interpreter)",
        ["precision", "images/s", "min cosine vs torch fp32"],
        [[p, statistics.median(rates[p]), f"{cosines[p]:.4f}"] for p in precisions],
    )
    print(f"bf16 over f32 (paired): {bf16_gain:.2f}x")
    print_machine("end", after)
    emit_json(
        {
            "rounds": args.rounds,
            **summary,
            "bf16_over_f32": round(bf16_gain, 2),
            "machine": machine_summary(before, after),
        }
    )


if __name__ == "__main__":
    main()

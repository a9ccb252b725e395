"""The image tower's throughput under two engines, at fp32 and bf16: torch (the exported towers
ingest runs: TorchScript traced at the precision, channels_last, bf16 autocast) and OpenVINO
(the same fp32 trace converted with `openvino.convert_model`, compiled for the CPU with
INFERENCE_PRECISION_HINT bf16 or f32). Is a second engine worth adding for ingest?

Each (engine, precision) runs in its own fresh interpreter (engines' thread pools never share
a process), over the same 32 random 224 px inputs, 2 threads, with the allocator setting ingest
makes; rounds rotate the order and medians are reported. OpenVINO is not a dependency of
jointspace: `pip install openvino` first (the script says so if it is missing). The towers come
from a home where ingest exported them (`--home`, e.g. a benchmarks/ingest.py workdir's
home-towers-fp32 / home-towers-default), or are exported here from the offline backbone.

    .venv/bin/python benchmarks/engines.py --rounds 3

Human tables go to stdout; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import emit_json, machine, machine_summary, print_machine, print_table

BATCH, REPEATS = 32, 12

_MEASURE = """
import json, sys, time
import numpy as np, torch
from pathlib import Path
from jointspace.pipeline.features import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(2)
engine, precision, home = sys.argv[1], sys.argv[2], Path(sys.argv[3])
from jointspace.pipeline.backbone import Backbone
from jointspace.pipeline.compute import Compute
from jointspace.pipeline.towers import ExportedTowers, export_towers, towers_dir
x = torch.randn(%(batch)d, 3, 224, 224, generator=torch.Generator().manual_seed(0))

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

if engine == "torch":
    towers = towers_at(precision)
    encode = lambda: towers.encode_images(x)
    features = encode()
else:
    import openvino
    traced = torch.jit.load(str(towers_at("fp32").folder / "image.ts")).eval()
    compiled = openvino.Core().compile_model(
        openvino.convert_model(traced, example_input=x), "CPU",
        {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
         "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2})
    pixels = x.numpy()
    encode = lambda: compiled(pixels)[0]
    features = np.asarray(encode())
print(json.dumps({"ips": rate(encode), "features": np.asarray(features)[:4].tolist()}))
"""


def measure(engine: str, precision: str, home: Path) -> dict:
    """Images/s of one engine at one precision, in a fresh interpreter."""
    code = _MEASURE % {"batch": BATCH, "repeats": REPEATS}
    out = subprocess.run(
        [sys.executable, "-c", code, engine, precision, str(home)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def min_cosine(a: list, b: list) -> float:
    import numpy as np

    x, y = np.asarray(a), np.asarray(b)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    return float((x * y).sum(axis=1).min())


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
    paths = [("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16")]
    measure("torch", "fp32", home)  # exports the towers once, untimed
    measure("torch", "bf16", home)
    rates: dict[tuple[str, str], list[float]] = {p: [] for p in paths}
    features: dict[tuple[str, str], list] = {}
    for round_ in range(args.rounds):
        for path in paths[round_ % len(paths) :] + paths[: round_ % len(paths)]:
            result = measure(*path, home)
            rates[path].append(result["ips"])
            features[path] = result["features"]
    after = machine()
    reference = rates[("torch", "fp32")]
    rows = []
    summary = {}
    for path in paths:
        ips = statistics.median(rates[path])
        paired = statistics.median(r / f for r, f in zip(rates[path], reference, strict=True))
        cosine = min_cosine(features[path], features[("torch", "fp32")])
        rows.append([*path, ips, paired, f"{cosine:.4f}"])
        summary[f"{path[0]}_{path[1]}"] = {
            "ips": round(ips, 1),
            "vs_torch_fp32": round(paired, 2),
            "min_cosine_vs_torch_fp32": round(cosine, 4),
            "runs": [round(r, 1) for r in rates[path]],
        }
    print_table(
        f"image tower, batches of {BATCH}, 2 threads, median of {args.rounds} rounds "
        "(each a fresh interpreter); vs torch fp32 paired round by round",
        ["engine", "precision", "images/s", "vs torch fp32", "min cosine vs torch fp32"],
        rows,
    )
    print_machine("end", after)
    emit_json({"rounds": args.rounds, **summary, "machine": machine_summary(before, after)})


if __name__ == "__main__":
    main()

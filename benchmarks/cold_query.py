"""A terminal search as a user runs it: one cold `jointspace query` process, wall clock from start
to exit. The backbone's exported towers (loaded with torch alone, only the tower the query needs)
against the open_clip path (JOINTSPACE_EXPORTED_TOWERS=0, the baseline, same run), a text and an
image query each, `python -c "import torch"` as the floor, and the same text query through a
running service (`--server`).

    .venv/bin/python benchmarks/cold_query.py            # builds its own stamps collection
    .venv/bin/python benchmarks/cold_query.py --home jointspace-data --collection stamps

Each measured command runs --repeats times (median reported), the variants interleaved so that
load from other jobs spreads over all of them; CPU time (user + system) is reported beside wall
time because it is much less sensitive to that load. Human tables go to stdout; the LAST line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import (
    JOINTSPACE,
    STAMPS,
    emit_json,
    machine,
    machine_summary,
    make_folder_corpus,
    print_machine,
    print_table,
    run_cli,
    select_stamps,
    train_model,
    workdir,
)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process run to its end; exits on a failure."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            sys.exit(f"{' '.join(command)} failed:\n{err.read().decode(errors='replace')[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(home: Path, collection: str, env: dict[str, str]) -> tuple[Any, str, str]:
    """A running service on a loopback port: `jointspace serve` when the CLI has it, else the
    service's app under uvicorn. (process, URL, how it was started)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    has_serve = (
        subprocess.run(
            [str(JOINTSPACE), "serve", "--help"], capture_output=True, env=env
        ).returncode
        == 0
    )
    if has_serve:
        command = [str(JOINTSPACE), "serve", "--collection", collection, "--port", str(port)]
        how = "jointspace serve"
    else:
        launcher = (
            "import sys, uvicorn; from pathlib import Path;"
            "from jointspace.serve import ServiceSettings, create_app;"
            "uvicorn.run(create_app(ServiceSettings(home=Path(sys.argv[1]),"
            " collections=(sys.argv[2],))), host='127.0.0.1', port=int(sys.argv[3]),"
            " log_level='error')"
        )
        command = [sys.executable, "-c", launcher, str(home), collection, str(port)]
        how = "create_app under uvicorn"
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the service did not start ({how}):\n{process.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return process, url, how
        except OSError:
            time.sleep(0.3)
    process.kill()
    sys.exit("the service did not answer /healthz within 180 s")


# One fresh process per measurement: import torch, load the text tower in one format, tokenize
# and embed one query; prints the seconds of each step and the features.
_FORMAT_SNIPPET = """
import json, sys, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
kind, folder, text = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
t0, c0 = time.perf_counter(), time.process_time()
import torch
t1, c1 = time.perf_counter(), time.process_time()
if kind == "open_clip":
    from jointspace.pipeline.backbone import Backbone
    from jointspace.pipeline.compute import Compute
    backbone = Backbone("offline", Compute("cpu", "fp32"))
    t2, c2 = time.perf_counter(), time.process_time()
    features = backbone.encode_texts([text])
else:
    from jointspace.pipeline import towers
    export = json.loads((folder / "meta.json").read_text())
    meta, compute = export["text"], towers.Compute("cpu", export["precision"])
    tokenizer = towers._load_tokenizer(meta["tokenizer"], folder / "tokenizer.json")
    if kind == "torchscript":
        tower = towers._load_tower("torchscript", folder / "text-traced.ts", None, compute)
    else:
        path = folder / meta["files"]["tower"]
        tower = towers._load_tower(meta["tower"], path, meta["config"], compute)
    t2, c2 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        features = tower(towers._trim(tokenizer([text]), meta["trim_pad_id"])).numpy()
t3, c3 = time.perf_counter(), time.process_time()
print(json.dumps({"import_torch": [t1 - t0, c1 - c0], "load": [t2 - t1, c2 - c1],
                  "embed": [t3 - t2, c3 - c2], "features": features[0].tolist()}))
"""


def compare_formats(folder: Path, text: str, repeats: int) -> list[list[Any]]:
    """The offline preset's text tower loaded three ways, each in fresh processes: as exported
    (safetensors weights + MeanPooledBert), traced to TorchScript, and through open_clip; the
    median seconds (wall / CPU) to load it and embed one query, and the largest difference of
    its features from open_clip's."""
    import numpy as np

    from jointspace.pipeline import towers
    from jointspace.pipeline.backbone import Backbone
    from jointspace.pipeline.compute import Compute

    backbone = Backbone("offline", Compute("cpu", "fp32"))  # the snippets run at fp32
    export = towers.towers_dir(folder, backbone.fingerprint)
    if not (export / "meta.json").is_file():
        towers.export_towers(backbone, export)
    pad_id = json.loads((export / "meta.json").read_text())["text"]["trim_pad_id"]
    example = towers._trim(backbone.tokenizer(list(towers.PROBE_TEXTS[:2])), pad_id)
    part = towers._part_of(backbone.model, image=False)
    towers._trace(backbone, towers._Encode(part, "encode_text"), example, export / "text-traced.ts")
    reference = backbone.encode_texts([text])[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    rows = []
    for kind, label in (
        ("exported", "safetensors + MeanPooledBert (chosen)"),
        ("torchscript", "TorchScript (torch.jit.trace)"),
        ("open_clip", "open_clip (import + build both towers)"),
    ):
        results = []
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, "-c", _FORMAT_SNIPPET, kind, str(export), text],
                capture_output=True, text=True, env=env, check=True,
            )  # fmt: skip
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        diff = float(np.abs(np.asarray(results[0]["features"]) - reference).max())

        def med(step: str, which: int, results: list = results) -> float:
            return statistics.median(r[step][which] for r in results)

        rows.append(
            [label, med("load", 0), med("load", 1), med("embed", 0), med("embed", 1), f"{diff:.1e}"]
        )
    (export / "text-traced.ts").unlink()
    return rows


def build_collection(root: Path, n: int, epochs: int) -> tuple[Path, str]:
    """A stamps collection of `n` items (a small model trained on them first)."""
    corpus = make_folder_corpus(select_stamps(n), root / "corpus")
    home = root / "home"
    train_model(corpus, root / "model", home, epochs=epochs)
    run_cli(
        ["ingest", str(corpus), "--collection", "stamps", "--model", str(root / "model"),
         "--json", "-q"],
        home,
        sample_memory=False,
    )  # fmt: skip
    return home, "stamps"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", help="an existing home (default: build one under /tmp)")
    parser.add_argument("--collection", default="stamps")
    parser.add_argument("--text", default="penguin")
    parser.add_argument("--image", help="query image (default: the penguin stamp)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=200, help="stamps in the built collection")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workdir")
    parser.add_argument(
        "--no-formats", action="store_true", help="skip comparing the text tower's formats"
    )
    args = parser.parse_args()

    before = machine()
    print_machine("start", before)
    root = workdir("cold-query", args.workdir)
    if args.home:
        home, collection = Path(args.home), args.collection
    else:
        home, collection = build_collection(root, args.n, args.epochs)
    image = Path(args.image or STAMPS / "animals" / "birds" / "penguin.png")
    env = {
        **os.environ,
        "JOINTSPACE_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("QDRANT_URL", None)
    env.pop("JOINTSPACE_SERVER", None)
    open_clip_env = {**env, "JOINTSPACE_EXPORTED_TOWERS": "0"}
    query = [str(JOINTSPACE), "query", "--collection", collection, "-k", "10"]
    text, picture = [*query, "--text", args.text], [*query, "--image", str(image)]

    # the first query builds the backbone through open_clip and exports its towers
    towers = home / "towers"
    had_export = towers.is_dir() and any(towers.iterdir())
    if had_export:
        shutil.rmtree(towers)
    first_wall, first_cpu = timed(text, env)

    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "import torch": ([sys.executable, "-c", "import torch"], env),
        "text query, exported towers": (text, env),
        "text query, open_clip path": (text, open_clip_env),
        "image query, exported towers": (picture, env),
        "image query, open_clip path": (picture, open_clip_env),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (command, variant_env) in variants.items():
            runs[name].append(timed(command, variant_env))

    service, url, how = start_service(home, collection, env)
    try:
        remote = [*text, "--server", url]
        timed(remote, env)  # the service's own first query (its model warms up)
        runs["text query via the service"] = [timed(remote, env) for _ in range(args.repeats)]
    finally:
        service.terminate()
        service.wait(timeout=30)

    formats = compare_formats(root / "formats", args.text, 3) if not args.no_formats else []

    def median(name: str, which: int) -> float:
        return statistics.median(r[which] for r in runs[name])

    torch_s = median("import torch", 0)
    rows = [["first text query (builds open_clip, exports)", first_wall, first_cpu, "—", "—"]]
    for name in runs:
        wall, cpu = median(name, 0), median(name, 1)
        rows.append([name, wall, cpu, round(wall / torch_s, 2), min(r[0] for r in runs[name])])
    print_table(
        f"Cold `jointspace query` processes on '{collection}' (median of {args.repeats}; "
        f"service: {how})",
        ["", "wall s", "CPU s", "/ import torch", "best wall s"],
        rows,
    )
    if formats:
        print_table(
            "The offline preset's text tower: load it and embed one query in a fresh process "
            "(after import torch; median of 3; one thread)",
            ["format", "load wall s", "load CPU s", "embed wall s", "embed CPU s", "max |diff|"],
            formats,
        )
    after = machine()
    print_machine("end", after)
    text_s, baseline_s = (
        median("text query, exported towers", 0),
        median("text query, open_clip path", 0),
    )
    image_s = median("image query, exported towers", 0)
    image_baseline_s = median("image query, open_clip path", 0)
    emit_json(
        {
            "benchmark": "cold_query",
            "collection": collection,
            "repeats": args.repeats,
            "cold_query_s": round(text_s, 3),
            "cold_query_open_clip_s": round(baseline_s, 3),
            "speedup": round(baseline_s / text_s, 2),
            "cold_image_query_s": round(image_s, 3),
            "cold_image_query_open_clip_s": round(image_baseline_s, 3),
            "via_service_s": round(median("text query via the service", 0), 3),
            "service": how,
            "import_torch_s": round(torch_s, 3),
            "cold_ratio": round(text_s / torch_s, 2),
            "cpu_s": {name: round(median(name, 1), 3) for name in runs},
            "first_query_s": round(first_wall, 3),
            "text_tower_formats": {
                row[0]: {"load_s": round(row[1], 3), "embed_s": round(row[3], 3), "diff": row[5]}
                for row in formats
            },
            "machine": machine_summary(before, after),
        }
    )


if __name__ == "__main__":
    main()

"""The HTTP service under load: `jointspace serve` on loopback against the same searches done
in-process through the Python API, at 10k and 100k units, and one cold `jointspace query`
process against `python -c "import torch"`.

    .venv/bin/python benchmarks/serve.py             # the full run (~5 minutes on 2 cores)
    .venv/bin/python benchmarks/serve.py --quick     # fewer requests, one cold run: to iterate

The collections: the demo's `stamps` collection (1,042 units embedded by the demo model, home
/tmp/demo/jointspace-data, or --demo-home) is copied, never modified, and its points repeated
to 10k and 100k units, each vector plus Gaussian noise and re-normalised, each payload the real
one's (text, image path, labels, width/height, ...) with a distinct key. Each collection
records the demo collection's metadata (model, backbone), so the service and
`Space.collection()` accept them and embed queries with the demo model.

The load, per collection: `jointspace serve` runs as a real subprocess on a free loopback port
(waited for at /healthz). 1, 4 and 16 clients (one keep-alive httpx client each, all in one
asyncio loop) each send one untimed request, then --requests / clients timed ones, for three
query kinds: a text (JSON), an image (a multipart upload of a real stamp PNG) and "more like
this" (a stored point's id). Per cell: p50/p95/p99 latency, QPS over the timed part, errors
(any answer but 200) and the service process's CPU time per request.

The baseline, in the same run: the same queries through `js.connect(home).collection(name)
.search(...)` in this process, with as many threads as clients (one untimed query each, then
the same timed ones), on a byte copy of the same collection (an embedded collection has one
owner, so the service and this process cannot open one copy together). Service and in-process
cells alternate, so that load from other jobs falls on both. `overhead_ratio` = service p50 /
in-process p50 for the same collection, query kind and concurrency. Read the in-process
latencies with the GIL in mind: Qdrant Edge's search holds it (~8 ms at 100k units), so a
thread that waits for the GIL before it starts its clock does not count that wait; a service
request counts all its queueing. At 10k units a "more like this" search is ~1 ms, so there
the ratio is the HTTP round trip (~2-3 ms), not the search.

The cold query: `jointspace query --text penguin` on a copy of the demo collection, one untimed
run first (it may export the backbone's towers into the home, as a user's first query does),
then --cold-repeats timed runs interleaved with as many `python -c "import torch"`;
`cold_ratio` = median cold query / median import torch.

This process freezes what it has loaded (gc.freeze) before the load, as the service does
(serve/state.py): a full garbage collection over a loaded model holds the GIL for 125-290 ms.

Human tables go to stdout; the LAST line is one JSON object: the service's numbers for 16
clients, 100k units, text queries (`p50_ms`, `p99_ms`, `qps`, `errors`, `inprocess_p50_ms`,
`overhead_ratio`), the cold query's (`cold_query_s`, `import_torch_s`, `cold_ratio`), every
cell under `cells`, and the machine and code measured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    JOINTSPACE,
    STAMPS,
    emit_json,
    machine,
    machine_summary,
    print_machine,
    print_table,
    workdir,
)

DEMO_HOME = Path("/tmp/demo/jointspace-data")
DEMO_COLLECTION = "stamps"
VECTORS = {"unit": 512, "image": 512, "text": 512}
NOISE = 0.02  # per dimension, before re-normalising: noise of norm ~0.45 on a unit vector
BATCH = 2000
TEXTS = (
    "penguin",
    "a red car",
    "birthday cake",
    "tree",
    "a cup of coffee",
    "dog",
    "boat",
    "a musical note",
)
# Real stamps of moderate size, uploaded as the image queries (PNG bytes).
IMAGES = (
    "animals/birds/penguin.png",
    "food/fruit/apple_green.png",
    "vehicles/auto/sportscar2.png",
    "plants/flowers/rose.png",
)
KINDS = ("text", "image", "like")
K = 10
SIZES = (10_000, 100_000)
CLIENTS = (1, 4, 16)
HEALTH_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 120.0


# --- the collections ---------------------------------------------------------------------------


def copy_demo(demo_home: Path, dest: Path) -> Path:
    """A home holding a copy of the demo collection (the demo's home is never opened)."""
    source = demo_home / "qdrant" / "collections" / DEMO_COLLECTION
    if not (source / "collection.json").is_file():
        sys.exit(f"No demo collection at {source}: run `bash scripts/demo.sh` first.")
    home = dest / "demo-copy"
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(source, home / "qdrant" / "collections" / DEMO_COLLECTION)
    return home


def read_demo(home: Path) -> tuple[list[Any], dict[str, Any]]:
    """The demo collection's points (vectors, payloads) and its metadata."""
    from jointspace.store import open_store

    store = open_store(home=home / "qdrant")
    try:
        points = sorted(store.scroll(DEMO_COLLECTION), key=lambda p: p.id)
        metadata = dict(store.info(DEMO_COLLECTION).metadata)
    finally:
        store.close()
    return points, metadata


def point_id(j: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"jointspace-bench-serve/{j}"))


def build_collection(
    home: Path, name: str, units: int, points: list[Any], metadata: dict[str, Any]
) -> float:
    """`units` points made from the demo's (point j from demo point j mod n: its vectors plus
    noise, re-normalised; its payload with a distinct key), upserted into a new collection
    `name` that records the demo collection's metadata. Returns the seconds it took."""
    import numpy as np

    from jointspace.store import Point, open_store

    started = time.perf_counter()
    rng = np.random.default_rng(units)
    store = open_store(home=home / "qdrant")
    try:
        store.create_collection(name, VECTORS, metadata)
        for start in range(0, units, BATCH):
            batch = []
            for j in range(start, min(units, start + BATCH)):
                demo = points[j % len(points)]
                vectors = {}
                for vector_name, values in demo.vectors.items():
                    noisy = np.asarray(values, dtype=np.float32) + rng.normal(
                        0.0, NOISE, len(values)
                    ).astype(np.float32)
                    vectors[vector_name] = noisy / np.linalg.norm(noisy)
                payload = dict(demo.payload)
                payload["key"] = f"{payload.get('key', demo.id)}#{j}"
                batch.append(Point(point_id(j), vectors, payload))
            store.upsert(name, batch)
        if store.count(name) != units:
            sys.exit(f"collection {name}: {store.count(name)} points stored, {units} expected")
    finally:
        store.close()
    return time.perf_counter() - started


def stored_units(home: Path, name: str) -> int | None:
    """The points of collection `name` in `home`, or None if it has none (for --reuse)."""
    from jointspace.store import open_store

    if not (home / "qdrant" / "collections" / name / "collection.json").is_file():
        return None
    store = open_store(home=home / "qdrant")
    try:
        return store.count(name)
    finally:
        store.close()


def copy_collection(home: Path, name: str, dest: Path) -> None:
    """A byte copy of a closed collection into another home (for the in-process side)."""
    target = dest / "qdrant" / "collections" / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(home / "qdrant" / "collections" / name, target)


# --- the queries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    kind: str
    value: Any  # text, PNG bytes or a point id

    def kwargs(self) -> dict[str, Any]:
        key = {"text": "text", "image": "image", "like": "id"}[self.kind]
        return {key: self.value, "k": K}


def queries(kind: str, count: int, units: int, images: list[bytes], offset: int) -> list[Query]:
    """`count` queries of one kind, cycling through the texts, images or ids from `offset`
    (ids spread over the whole collection)."""
    out = []
    for i in range(offset, offset + count):
        if kind == "text":
            out.append(Query(kind, TEXTS[i % len(TEXTS)]))
        elif kind == "image":
            out.append(Query(kind, images[i % len(images)]))
        else:
            out.append(Query(kind, point_id((i * 7919) % units)))
    return out


def plan(kind: str, clients: int, per_client: int, units: int, images: list[bytes]) -> list:
    """Each client's queries: one untimed warm-up, then `per_client` timed ones."""
    return [
        queries(kind, per_client + 1, units, images, offset=c * (per_client + 1))
        for c in range(clients)
    ]


# --- one cell: clients × requests -----------------------------------------------------------


@dataclass
class Cell:
    latencies: list[float] = field(default_factory=list)  # seconds, timed requests only
    errors: Counter = field(default_factory=Counter)
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        done = len(lat) + sum(self.errors.values())
        return {
            "requests": done,
            "p50_ms": round(_percentile(lat, 50) * 1000, 2),
            "p95_ms": round(_percentile(lat, 95) * 1000, 2),
            "p99_ms": round(_percentile(lat, 99) * 1000, 2),
            "qps": round(done / self.wall_s, 2) if self.wall_s else 0.0,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "cpu_ms_per_request": round(self.cpu_s * 1000 / done, 2) if done else None,
        }


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), of sorted values."""
    if not values:
        return float("nan")
    pos = (len(values) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return values[low] + (values[high] - values[low]) * (pos - low)


def run_inprocess(collection: Any, work: list[list[Query]]) -> Cell:
    """The clients as threads calling collection.search: each its warm-up, then (after all
    are warm) its timed queries."""
    cell = Cell()
    lock = threading.Lock()
    clock: dict[str, float] = {}

    def go() -> None:  # run by the last thread to arrive, before any is released
        clock["wall"], clock["cpu"] = time.perf_counter(), time.process_time()

    barrier = threading.Barrier(len(work), action=go)

    def client(mine: list[Query]) -> None:
        try:
            collection.search(**mine[0].kwargs())
        finally:
            barrier.wait()
        for query in mine[1:]:
            started = time.perf_counter()
            try:
                collection.search(**query.kwargs())
            except Exception as error:  # noqa: BLE001 - counted, like the service's errors
                with lock:
                    cell.errors[type(error).__name__] += 1
                continue
            elapsed = time.perf_counter() - started
            with lock:
                cell.latencies.append(elapsed)

    with ThreadPoolExecutor(len(work)) as pool:
        futures = [pool.submit(client, mine) for mine in work]
        for future in futures:
            future.result()
        cell.wall_s = time.perf_counter() - clock["wall"]
        cell.cpu_s = time.process_time() - clock["cpu"]
    return cell


def run_service(url: str, name: str, pid: int, work: list[list[Query]]) -> Cell:
    """The clients as keep-alive httpx clients in one asyncio loop: each its warm-up, then
    (after all are warm) its timed requests. CPU time: the service process's."""
    return asyncio.run(_run_service(url, name, pid, work))


async def _run_service(url: str, name: str, pid: int, work: list[list[Query]]) -> Cell:
    import httpx

    cell = Cell()
    warm, waiting = asyncio.Event(), [len(work)]
    clock: dict[str, float] = {}

    async def all_warm() -> None:  # the last client to arrive starts the clock
        waiting[0] -= 1
        if waiting[0] == 0:
            clock["wall"], clock["cpu"] = time.perf_counter(), process_cpu_s(pid)
            warm.set()
        await warm.wait()

    async def send(client: httpx.AsyncClient, query: Query) -> str | None:
        if query.kind == "image":
            files = {"image": ("stamp.png", query.value, "image/png")}
            data = {"collection": name, "k": str(K)}
            response = await client.post("/search", data=data, files=files)
        else:
            response = await client.post("/search", json={"collection": name, **query.kwargs()})
        if response.status_code != 200:
            return f"http {response.status_code}"
        if not response.json()["results"]:
            return "no results"
        return None

    async def one_client(mine: list[Query]) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S
        ) as client:
            try:
                await send(client, mine[0])
            finally:
                await all_warm()
            for query in mine[1:]:
                started = time.perf_counter()
                try:
                    error = await send(client, query)
                except httpx.HTTPError as exc:
                    error = type(exc).__name__
                if error:
                    cell.errors[error] += 1
                else:
                    cell.latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one_client(mine) for mine in work))
    cell.wall_s = time.perf_counter() - clock["wall"]
    cell.cpu_s = process_cpu_s(pid) - clock["cpu"]
    return cell


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the service as a subprocess ------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """`jointspace serve --collection NAME --port P` on loopback, its output in a log file;
    ready once /healthz answers 200."""

    def __init__(self, home: Path, name: str, log: Path, model_threads: int | None) -> None:
        self.home, self.name, self.log_path = home, name, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(
            os.environ,
            JOINTSPACE_HOME=str(home),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        env.pop("QDRANT_URL", None)
        env.pop("JOINTSPACE_API_KEY", None)
        command = [str(JOINTSPACE), "serve", "--collection", name, "--port", str(self.port)]
        if model_threads:
            command += ["--model-threads", str(model_threads)]
        self.log = log.open("wb")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=home
        )
        self.ready_s = self._wait_ready()

    def _wait_ready(self) -> float:
        import httpx

        while time.perf_counter() - self.started < HEALTH_TIMEOUT_S:
            if self.process.poll() is not None:
                self.stop()
                sys.exit(f"jointspace serve exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit(
            f"jointspace serve did not answer /healthz in {HEALTH_TIMEOUT_S:.0f} s:\n{self.tail()}"
        )

    def tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# --- the cold query -------------------------------------------------------------------------


def timed_process(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process run to its end; exits on a failure."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            out.seek(0)
            sys.exit(f"{' '.join(command)} failed:\n{out.read().decode(errors='replace')[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def cold_query(home: Path, repeats: int) -> dict[str, Any]:
    """One cold `jointspace query --text penguin` process (median of `repeats`, after one
    untimed run) against `python -c "import torch"`, interleaved."""
    env = dict(os.environ, JOINTSPACE_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("QDRANT_URL", None)
    env.pop("JOINTSPACE_SERVER", None)
    query = [str(JOINTSPACE), "query", "--collection", DEMO_COLLECTION, "--text", "penguin"]
    torch = [sys.executable, "-c", "import torch"]
    first = timed_process(query, env)
    runs: dict[str, list[tuple[float, float]]] = {"query": [], "torch": []}
    for _ in range(repeats):
        runs["query"].append(timed_process(query, env))
        runs["torch"].append(timed_process(torch, env))
    return {"first": first, **runs}


# --- the run --------------------------------------------------------------------------------


def label(units: int) -> str:
    return f"{units // 1000}k" if units % 1000 == 0 else str(units)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="scratch folder (default: a fresh one under /tmp)")
    parser.add_argument("--demo-home", default=str(DEMO_HOME), help="the demo's home (read only)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument(
        "--requests", type=int, default=256, help="timed requests per cell, split among clients"
    )
    parser.add_argument("--cold-repeats", type=int, default=3)
    parser.add_argument(
        "--model-threads", type=int, help="`serve --model-threads` (default: the service's own)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="32 requests per cell, one timed cold query"
    )
    parser.add_argument("--keep", action="store_true", help="keep the workdir's homes")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --workdir: keep the collections an earlier run built there (same sizes)",
    )
    args = parser.parse_args()
    if args.quick:
        args.requests, args.cold_repeats = 32, 1

    before = machine()
    print_machine("start", before)
    scratch = workdir("serve", args.workdir)
    print(f"workdir: {scratch}")
    demo_copy = copy_demo(Path(args.demo_home), scratch)
    points, metadata = read_demo(demo_copy)
    images = [(STAMPS / path).read_bytes() for path in IMAGES]
    served_home, inprocess_home = scratch / "home-served", scratch / "home-inprocess"
    reuse = args.reuse and args.workdir
    for home in (served_home, inprocess_home):
        if home.exists() and not reuse:
            shutil.rmtree(home)
        home.mkdir(parents=True, exist_ok=True)

    builds = []
    for units in args.sizes:
        name = f"stamps_{label(units)}"
        if reuse and all(stored_units(h, name) == units for h in (served_home, inprocess_home)):
            builds.append([name, units, "reused"])
            continue
        seconds = build_collection(served_home, name, units, points, metadata)
        copy_collection(served_home, name, inprocess_home)
        builds.append([name, units, round(seconds, 1)])
    print_table(
        f"collections built from the demo's {len(points)} units (vectors + noise, re-normalised)",
        ["collection", "units", "build s"],
        builds,
    )
    del points  # ~1.6M float objects: a full garbage collection would pause the clients

    # The in-process side uses the same kind of home as the service (exported towers there).
    os.environ["JOINTSPACE_HOME"] = str(inprocess_home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import jointspace as js

    cells: list[dict[str, Any]] = []
    service_start: dict[str, float] = {}
    for units in args.sizes:
        name = f"stamps_{label(units)}"
        log = scratch / f"serve-{name}.log"
        service = ServiceProcess(served_home, name, log, args.model_threads)
        service_start[name] = round(service.ready_s, 2)
        space = js.connect(home=inprocess_home)
        try:
            collection = space.collection(name)
            collection.search(text="warm-up", k=K)  # loads the model (as the service's start)
            collection.search(image=images[0], k=K)
            # What is loaded stays: keep it out of the collector's scans (a full collection
            # over a loaded model holds the GIL for 100s of ms, pausing clients and threads).
            gc.collect()
            gc.freeze()
            index = 0
            for kind in args.kinds:
                for clients in args.clients:
                    per_client = max(1, math.ceil(args.requests / clients))
                    work = plan(kind, clients, per_client, units, images)
                    sides: dict[str, Cell] = {}
                    order = ("service", "inprocess") if index % 2 == 0 else ("inprocess", "service")
                    for side in order:
                        if side == "service":
                            sides[side] = run_service(service.url, name, service.process.pid, work)
                        else:
                            sides[side] = run_inprocess(collection, work)
                    index += 1
                    served, local = sides["service"].summary(), sides["inprocess"].summary()
                    ratio = served["p50_ms"] / local["p50_ms"] if local["p50_ms"] else None
                    cells.append(
                        {
                            "units": units,
                            "kind": kind,
                            "clients": clients,
                            "service": served,
                            "inprocess": local,
                            "overhead_ratio": round(ratio, 3) if ratio else None,
                        }
                    )
                    _progress(cells[-1])
        finally:
            space.close()
            service.stop()

    cold = cold_query(demo_copy, args.cold_repeats)
    threads = service_model_threads(args.model_threads)
    after = machine()

    print_table(
        "service (jointspace serve, loopback, keep-alive httpx clients) vs in-process "
        "(Collection.search, one thread per client), k=10; ms; "
        "overhead_ratio = service p50 / in-process p50 (same units, kind, clients)",
        [
            "units",
            "kind",
            "clients",
            "requests",
            "errors",
            "svc p50",
            "svc p95",
            "svc p99",
            "svc qps",
            "svc cpu/req",
            "in-proc p50",
            "in-proc p95",
            "in-proc p99",
            "in-proc qps",
            "in-proc cpu/req",
            "overhead_ratio",
        ],
        [
            [
                label(c["units"]),
                c["kind"],
                c["clients"],
                c["service"]["requests"],
                f"{c['service']['errors']}/{c['inprocess']['errors']}",
                c["service"]["p50_ms"],
                c["service"]["p95_ms"],
                c["service"]["p99_ms"],
                c["service"]["qps"],
                c["service"]["cpu_ms_per_request"],
                c["inprocess"]["p50_ms"],
                c["inprocess"]["p95_ms"],
                c["inprocess"]["p99_ms"],
                c["inprocess"]["qps"],
                c["inprocess"]["cpu_ms_per_request"],
                c["overhead_ratio"],
            ]
            for c in cells
        ],
    )
    print(
        "errors: service/in-process; cpu/req: CPU ms per request of the service process, or "
        "of this process for in-process"
    )
    print(f"service ready (start to /healthz 200): {service_start} s; model threads: {threads}")

    cold_s = statistics.median(w for w, _ in cold["query"])
    torch_s = statistics.median(w for w, _ in cold["torch"])
    print_table(
        f"cold processes (median of {args.cold_repeats}; the query after one untimed run)",
        ["command", "wall s", "cpu s"],
        [
            ["jointspace query --text penguin (first run)", cold["first"][0], cold["first"][1]],
            [
                "jointspace query --text penguin",
                cold_s,
                statistics.median(c for _, c in cold["query"]),
            ],
            ['python -c "import torch"', torch_s, statistics.median(c for _, c in cold["torch"])],
        ],
    )

    headline = _find(cells, max(args.sizes), "text", max(args.clients))
    base_1 = _find(cells, max(args.sizes), "text", min(args.clients))
    if headline:
        print(
            f"\n{label(max(args.sizes))} units, {max(args.clients)} clients, text: service p50 "
            f"{headline['service']['p50_ms']} ms vs in-process p50 "
            f"{headline['inprocess']['p50_ms']} ms: overhead_ratio "
            f"{headline['overhead_ratio']} (target <= 1.5), errors {headline['service']['errors']}"
        )
    if base_1:
        print(
            f"in-process p50 at {min(args.clients)} client(s), {label(max(args.sizes))} units, "
            f"text: {base_1['inprocess']['p50_ms']} ms"
        )
    print(f"cold query {cold_s:.2f} s / import torch {torch_s:.2f} s = {cold_s / torch_s:.2f}")
    print_machine("end", after)
    if not args.keep and not args.workdir:
        shutil.rmtree(scratch, ignore_errors=True)

    document: dict[str, Any] = {}
    if headline:
        document.update(
            {
                "units": headline["units"],
                "clients": headline["clients"],
                "kind": "text",
                "p50_ms": headline["service"]["p50_ms"],
                "p95_ms": headline["service"]["p95_ms"],
                "p99_ms": headline["service"]["p99_ms"],
                "qps": headline["service"]["qps"],
                "errors": headline["service"]["errors"],
                "inprocess_p50_ms": headline["inprocess"]["p50_ms"],
                "inprocess_p99_ms": headline["inprocess"]["p99_ms"],
                "inprocess_qps": headline["inprocess"]["qps"],
                "overhead_ratio": headline["overhead_ratio"],
            }
        )
    if base_1:
        document["inprocess_p50_ms_1_client"] = base_1["inprocess"]["p50_ms"]
    document.update(
        {
            "cold_query_s": round(cold_s, 3),
            "import_torch_s": round(torch_s, 3),
            "cold_ratio": round(cold_s / torch_s, 3),
            "cold_query_first_s": round(cold["first"][0], 3),
            "cold_query_cpu_s": round(statistics.median(c for _, c in cold["query"]), 3),
            "import_torch_cpu_s": round(statistics.median(c for _, c in cold["torch"]), 3),
            "requests_per_cell": args.requests,
            "service_ready_s": service_start,
            "service_model_threads": threads,
            "build_s": {row[0]: row[2] for row in builds},
            "cells": cells,
            "machine": machine_summary(before, after),
        }
    )
    emit_json(document)


def service_model_threads(given: int | None) -> str:
    """The model threads the service ran with, as said."""
    if given:
        return str(given)
    try:
        from jointspace.serve.settings import default_model_threads
    except ImportError:  # a version without it: one
        return "1 (default)"
    return f"{default_model_threads()} (default)"


def _find(cells: list[dict[str, Any]], units: int, kind: str, clients: int) -> dict | None:
    for cell in cells:
        if (cell["units"], cell["kind"], cell["clients"]) == (units, kind, clients):
            return cell
    return None


def _progress(cell: dict[str, Any]) -> None:
    served, local = cell["service"], cell["inprocess"]
    print(
        f"  {label(cell['units'])} {cell['kind']:5} x{cell['clients']:<2}  service p50 "
        f"{served['p50_ms']:7.1f} ms ({served['errors']} errors)  in-process p50 "
        f"{local['p50_ms']:7.1f} ms  ratio {cell['overhead_ratio']}",
        flush=True,
    )


if __name__ == "__main__":
    main()

"""Exact search vs an HNSW index vs HNSW over int8 copies, in the embedded store, at N units.

The store is the real one (`EdgeStore`, Qdrant Edge), used as ingest uses it: a collection with
three 512-d named vectors per unit ("unit", "image", "text") and the payload and payload indexes
that ingest gives (key, text, image, source, locator, labels, split, width, height, sha256;
keyword indexes on key/source/labels/split, integer on width/height), upserted in batches
(--batch, default 256 points per `upsert`, each flushed).

The vectors. Real base vectors: the units of a real collection (--base-home/--base-name: an
embedded store and a collection whose points have all three vectors, e.g. the ~1,000 Tux Paint
stamps ingested with a trained model), or else, without one, features of the real stamp PNGs
(pixels at 24x24, centred, randomly projected to 512-d; captions hashed into character
trigrams, projected likewise; unit = image + text). Unit i mixes two random base items,
(1 - a) * base[j] + a * base[k] with a ~ U(0, 0.5), adds isotropic gaussian noise of total norm
--noise (default 0.5, i.e. noise/sqrt(512) per dimension) and is normalised; image and text
likewise with the same j, k, a and their own noise. So the corpus is a continuum between the
real items, not N/1000 tight copies of each, and its nearest-neighbour cosines (printed, and in
the JSON) are lower than a real corpus' at the same size: a harder case for HNSW, not an easier
one. Queries (--queries, default 200) are held out: a base item's unit vector plus the same
noise, not mixed, never stored.

Measured: upsert time and rate, peak RSS (ru_maxrss: includes the shard's mapped files),
store size on disk (allocated blocks), reopen time (a new store: first count loads the shard),
exact top-10 p50/p95 (`search(exact=True)`), `build_index` time, HNSW top-10 p50/p95 and
recall@10 against exact (the store's default hnsw_ef, and a sweep of hnsw_ef), a filtered
search (labels = the commonest base label) exact vs HNSW, points upserted after the build
(found at once?), and the same again in a second collection created with quantize="int8"
(upsert, build, p50/p95, recall against the float collection's exact answers). At 1M the
float collection is dropped before the int8 one is made (--keep keeps both: twice the disk).

The ground truth is also computed without the store: the exact top-10 by brute force in numpy
over the same generated unit vectors (queries @ units.T, 50k units at a time, a running top-10;
~30 s at 1M), and checked against the float collection's exact=True (printed, and in the
JSON: recall@10 plain and allowing ties). It gives the stored units' nearest-neighbour cosines,
and with --no-float (the float collection, over an hour at 1M, skipped: its keys are absent
from the JSON) the truth for the int8 collection's recall; exact=True is then timed on the int8
collection (int8_exact_p50_ms).

    .venv/bin/python benchmarks/scale.py --units 300000 \\
        --base-home /tmp/scale11/realhome --base-name stamps
    .venv/bin/python benchmarks/scale.py --units 1000000 --no-float \\
        --base-home /tmp/scale11/realhome --base-name stamps

Human tables go to stdout; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    all_stamps,
    emit_json,
    machine,
    machine_summary,
    print_machine,
    print_table,
    workdir,
)

from jointspace.corpus.split import split_of
from jointspace.store.base import Point
from jointspace.store.edge import EdgeStore
from jointspace.store.indexing import HNSW_EF, HNSW_EF_CONSTRUCT, HNSW_M, INDEX_THRESHOLD

DIM = 512
NAMES = ("unit", "image", "text")
# As ingest creates a collection (jointspace.ingest.points.KEYWORD_FIELDS / NUMERIC_FIELDS; not
# imported, as that module loads torch, whose memory would count in the peak RSS).
KEYWORD_FIELDS = ("key", "source", "labels", "split")
NUMERIC_FIELDS = {"width": "integer", "height": "integer"}
CHUNK = 10_000  # units generated at a time (each chunk from its own seeded generator)
K = 10


# --- base vectors and the synthetic corpus -----------------------------------------------------


def base_from_collection(home: Path, name: str) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The three vectors and the payload of every point of a real collection that has all
    three (the store is opened read-only in effect, and closed)."""
    vectors: dict[str, list] = {n: [] for n in NAMES}
    payloads = []
    with EdgeStore(home) as store:
        for point in store.scroll(name, 1000):
            if all(n in point.vectors for n in NAMES):
                for n in NAMES:
                    vectors[n].append(point.vectors[n])
                payloads.append(dict(point.payload))
    if len(payloads) < 100:
        raise SystemExit(f"{home} '{name}' has only {len(payloads)} points with all vectors")
    return {n: _normalised(np.asarray(v, np.float32)) for n, v in vectors.items()}, payloads


def base_from_stamps(seed: int) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Features of the real stamp PNGs and captions, randomly projected to DIM (see the module
    docstring); cheap (~10 s) and needs no model."""
    from PIL import Image

    stamps = all_stamps()
    pixels, grams = [], []
    for stamp in stamps:
        with Image.open(stamp.path) as image:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            small = Image.alpha_composite(white, rgba).convert("RGB").resize((24, 24))
        pixels.append(np.asarray(small, np.float32).ravel() / 255.0)
        counts = np.zeros(4096, np.float32)
        text = f"  {stamp.caption.lower()}  "
        for i in range(len(text) - 2):
            digest = hashlib.blake2b(text[i : i + 3].encode(), digest_size=4).digest()
            counts[int.from_bytes(digest, "little") % 4096] += 1.0
        grams.append(counts)
    rng = np.random.default_rng(seed)
    image = _project(np.stack(pixels), rng)
    text = _project(np.stack(grams), rng)
    payloads = [
        {
            "text": s.caption,
            "labels": [s.category, str(s.relative.parent)],
            "width": 64 + int(rng.integers(0, 448)),
            "height": 64 + int(rng.integers(0, 448)),
        }
        for s in stamps
    ]
    return {"unit": _normalised(image + text), "image": image, "text": text}, payloads


def _project(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    centred = features - features.mean(axis=0)
    matrix = rng.standard_normal((features.shape[1], DIM)).astype(np.float32)
    return _normalised(centred @ matrix)


def _normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def chunk_vectors(
    base: dict[str, np.ndarray],
    chunk: int,
    noise: float,
    seed: int,
    names: tuple[str, ...] = NAMES,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Vectors of the CHUNK units of chunk number `chunk` (the same units always get the same
    vectors; "unit" is drawn first, so names=("unit",) gives the same unit vectors), and each
    unit's main base item."""
    rng = np.random.default_rng([seed, chunk])
    items = len(base["unit"])
    j, k = rng.integers(0, items, CHUNK), rng.integers(0, items, CHUNK)
    mix = rng.uniform(0.0, 0.5, (CHUNK, 1)).astype(np.float32)
    out = {}
    for n in names:
        g = rng.standard_normal((CHUNK, DIM), dtype=np.float32) * (noise / np.sqrt(DIM))
        out[n] = _normalised((1.0 - mix) * base[n][j] + mix * base[n][k] + g)
    return out, j


def unit_vectors(
    base: dict[str, np.ndarray], units: list[int], noise: float, seed: int
) -> dict[int, np.ndarray]:
    """The stored unit vector of each of `units` (each chunk generated once)."""
    out: dict[int, np.ndarray] = {}
    for chunk in sorted({i // CHUNK for i in units}):
        vectors, _ = chunk_vectors(base, chunk, noise, seed, names=("unit",))
        out.update({i: vectors["unit"][i % CHUNK] for i in units if i // CHUNK == chunk})
    return out


def point_id(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"scale-unit-{i}"))


def payload_of(i: int, item: dict[str, Any]) -> dict[str, Any]:
    """A payload like ingest's, from unit i's main base item."""
    key = f"scale/{i:07d}.png"
    return {
        "key": key,
        "text": f"{item.get('text', '')} #{i}",
        "image": f"/data/scale/{i:07d}.png",
        "source": "scale-benchmark",
        "locator": f"row {i}",
        "labels": list(item.get("labels") or []),
        "split": split_of(key),
        "width": int(item.get("width") or 64),
        "height": int(item.get("height") or 64),
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
    }


def batches(
    base: dict[str, np.ndarray],
    payloads: list[dict],
    start: int,
    stop: int,
    noise: float,
    seed: int,
    batch: int,
) -> Iterator[list[Point]]:
    """Points start..stop-1 in batches of `batch`, generated CHUNK at a time."""
    for chunk_start in range(start - start % CHUNK, stop, CHUNK):
        vectors, items = chunk_vectors(base, chunk_start // CHUNK, noise, seed)
        lo, hi = max(start, chunk_start), min(stop, chunk_start + CHUNK)
        for b in range(lo, hi, batch):
            rows = slice(b - chunk_start, min(hi, b + batch) - chunk_start)
            lists = {n: vectors[n][rows].tolist() for n in NAMES}
            yield [
                Point(
                    point_id(i),
                    {n: lists[n][i - b] for n in NAMES},
                    payload_of(i, payloads[items[i - chunk_start]]),
                )
                for i in range(b, min(hi, b + batch))
            ]


# --- measuring ---------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb(key: str = "VmRSS:") -> float:
    """This process's resident memory (VmRSS: all, mapped files included; RssAnon: its own)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return 0.0


_ANON_SAMPLER = """
import os, sys, time
pid, stop = sys.argv[1], sys.argv[2]
peak = 0
while not os.path.exists(stop):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    peak = max(peak, int(line.split()[1]))
    except OSError:
        break
    time.sleep(0.5)
print(peak / 1024)
"""


class AnonPeak:
    """The peak of this process's anonymous memory (RssAnon), sampled every 0.5 s by another
    process (Edge's optimize() holds the GIL, so a thread here would stop sampling)."""

    def __init__(self, work: Path) -> None:
        self.stop_file = work / ".anon-sampler-stop"
        self.stop_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ANON_SAMPLER, str(os.getpid()), str(self.stop_file)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self.stop_file.touch()
        out, _ = self.process.communicate()
        self.stop_file.unlink(missing_ok=True)
        try:
            return float(out.strip() or 0)
        except ValueError:
            return 0.0


def disk_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total / 2**20


_DISK_SAMPLER = """
import os, sys, time
path, stop = sys.argv[1], sys.argv[2]
def size():
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total
peak = size()
while not os.path.exists(stop):
    time.sleep(float(sys.argv[3]))
    peak = max(peak, size())
print(max(peak, size()) / 2**20)
"""


@contextlib.contextmanager
def disk_peak(path: Path, every_s: float = 1.0) -> Iterator[dict[str, float]]:
    """Sample disk_mb(path) every `every_s` while the block runs, from another process (Edge's
    optimize() holds the GIL throughout, so a thread here would not run): {"peak_mb"}."""
    result = {"peak_mb": disk_mb(path)}
    stop = path.parent / f".{path.name}.sampler-stop"
    stop.unlink(missing_ok=True)
    sampler = subprocess.Popen(
        [sys.executable, "-c", _DISK_SAMPLER, str(path), str(stop), str(every_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield result
    finally:
        stop.touch()
        out, _ = sampler.communicate()
        stop.unlink(missing_ok=True)
        with contextlib.suppress(ValueError):
            result["peak_mb"] = max(result["peak_mb"], float(out.strip() or 0))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


WARMUP: np.ndarray = np.zeros((0, DIM), np.float32)  # other held-out queries, set in main()


def timed_searches(
    store: EdgeStore, name: str, queries: np.ndarray, **kwargs: Any
) -> tuple[list[float], list[list[str]], list[list[float]]]:
    """Per-query milliseconds, hit ids and scores of store.search(name, "unit", q, K, ...),
    after the same search for the WARMUP queries (untimed: page cache, first-call costs; a
    serving process is warm)."""
    for q in WARMUP:
        store.search(name, "unit", q, K, **kwargs)
    times, ids, scores = [], [], []
    for q in queries:
        started = time.perf_counter()
        hits = store.search(name, "unit", q, K, **kwargs)
        times.append((time.perf_counter() - started) * 1000)
        ids.append([h.id for h in hits])
        scores.append([h.score for h in hits])
    return times, ids, scores


def interleaved(
    store: EdgeStore,
    name: str,
    queries: np.ndarray,
    configs: dict[str, dict[str, Any]],
    block: int = 20,
) -> dict[str, tuple[list[float], list[list[str]]]]:
    """timed_searches for several search configurations, taking turns block by block of
    `block` queries, the order rotating from block to block: load from other jobs falls on
    all alike, and a query meets each configuration only after `block - 1` others (a query
    repeated at once would find what it touched still in the CPU caches): label -> (ms, ids)."""
    for kwargs in configs.values():
        for q in WARMUP:
            store.search(name, "unit", q, K, **kwargs)
    out: dict[str, tuple[list[float], list[list[str]]]] = {c: ([], []) for c in configs}
    labels = list(configs)
    for number, start in enumerate(range(0, len(queries), block)):
        turn = number % len(labels)
        for label in labels[turn:] + labels[:turn]:
            for q in queries[start : start + block]:
                started = time.perf_counter()
                hits = store.search(name, "unit", q, K, **configs[label])
                out[label][0].append((time.perf_counter() - started) * 1000)
                out[label][1].append([h.id for h in hits])
    return out


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return statistics.fmean(
        len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth, strict=True)
    )


def shard_state(store: EdgeStore, name: str) -> dict[str, int]:
    info = store._shard(name).info()  # noqa: SLF001 - Edge's own view, for the report only
    return {"segments": info.segments_count, "indexed_vectors": info.indexed_vectors_count}


def fill(
    store: EdgeStore,
    name: str,
    args: argparse.Namespace,
    base: dict[str, np.ndarray],
    payloads: list[dict],
    quantize: str | None,
) -> dict[str, float]:
    """Create `name` as ingest would and upsert the N units; seconds spent in upsert only."""
    store.create_collection(
        name,
        dict.fromkeys(NAMES, DIM),
        {"benchmark": "scale", "units": args.units},
        keyword_fields=KEYWORD_FIELDS,
        fields=NUMERIC_FIELDS,
        quantize=quantize,
    )
    upsert_s, started, done = 0.0, time.perf_counter(), 0
    for batch in batches(base, payloads, 0, args.units, args.noise, args.seed, args.batch):
        t = time.perf_counter()
        store.upsert(name, batch)
        upsert_s += time.perf_counter() - t
        done += len(batch)
        if done % 100_000 < args.batch:
            print(
                f"  {name}: {done:,} units, upsert {upsert_s:.0f} s, wall "
                f"{time.perf_counter() - started:.0f} s, rss {rss_mb():.0f} MB",
                flush=True,
            )
    return {"upsert_s": upsert_s, "wall_s": time.perf_counter() - started}


def progress(text: str) -> None:
    """A line as the run goes (a long run killed halfway still leaves its numbers)."""
    print(f"  [{time.strftime('%H:%M:%S')}] {text} (load {os.getloadavg()[0]:.1f})", flush=True)


def reopen(home: Path, name: str) -> tuple[EdgeStore, float]:
    store = EdgeStore(home)
    started = time.perf_counter()
    store.count(name)
    return store, time.perf_counter() - started


# --- ground truth in numpy ---------------------------------------------------------------------


def brute_force(
    base: dict[str, np.ndarray],
    units: int,
    noise: float,
    seed: int,
    queries: np.ndarray,
    block: int = 5 * CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-K (unit numbers, cosines; best first) of each query among units 0..units-1,
    without the store: their unit vectors generated again CHUNK at a time as `batches` gave
    them, scored `block` units at a time (queries @ units.T, float32), a running top-K kept."""
    k = min(K, units)
    best_i = np.zeros((len(queries), k), np.int64)
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    for start in range(0, units, block):
        stop = min(units, start + block)
        chunks = range(start // CHUNK, (stop + CHUNK - 1) // CHUNK)
        vectors = np.concatenate(
            [chunk_vectors(base, c, noise, seed, names=("unit",))[0]["unit"] for c in chunks]
        )[: stop - start]
        scores = np.concatenate([best_s, queries @ vectors.T], axis=1)
        numbers = np.concatenate(
            [best_i, np.broadcast_to(np.arange(start, stop), (len(queries), stop - start))], axis=1
        )
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_i = np.take_along_axis(numbers, top, axis=1)
        best_s = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, axis=1), np.take_along_axis(best_s, order, axis=1)


def recall_allowing_ties(
    found: list[list[str]],
    found_scores: list[list[float]],
    truth: list[list[str]],
    truth_scores: np.ndarray,
    tol: float = 1e-4,
) -> float:
    """recall@K, a found hit outside the truth counting too when its score ties (within `tol`)
    the truth's K-th: which of two equal scores makes the top K is arbitrary."""
    per_query = []
    for ids, scores, want, want_scores in zip(
        found, found_scores, truth, truth_scores, strict=True
    ):
        kth = float(want_scores[-1])
        hits = sum(i in set(want) or s >= kth - tol for i, s in zip(ids, scores, strict=True))
        per_query.append(min(hits, len(want)) / max(1, len(want)))
    return statistics.fmean(per_query)


# --- the two collections -----------------------------------------------------------------------


def measure_float(
    args: argparse.Namespace,
    home: Path,
    base: dict[str, np.ndarray],
    payloads: list[dict],
    queries: np.ndarray,
    where: dict[str, str] | None,
    efs: list[int],
    truth: tuple[list[list[str]], np.ndarray],
) -> tuple[dict[str, Any], list[list[str]]]:
    """The float collection: upsert, exact, build, HNSW, the hnsw_ef sweep, a filtered search,
    upserts after the build; (its JSON keys, the store's exact=True ids: the int8 truth).
    The numpy truth is checked against exact=True on the way."""
    name = "scale"
    store = EdgeStore(home)
    filled = fill(store, name, args, base, payloads, None)
    rss_after_upsert = rss_mb()
    size_mb = disk_mb(home / "collections" / name)
    unindexed = shard_state(store, name)
    store.close()
    store, reopen_s = reopen(home, name)

    exact_ms, exact_ids, exact_scores = timed_searches(store, name, queries, exact=True)
    brute_recall = recall(truth[0], exact_ids)
    brute_recall_ties = recall_allowing_ties(exact_ids, exact_scores, *truth)
    progress(
        f"upserted in {filled['upsert_s']:.0f} s, {size_mb:.0f} MB, reopened in {reopen_s:.2f} s;"
        f" exact p50 {pct(exact_ms, 50):.2f} ms; numpy brute force vs exact=True: recall@10 "
        f"{brute_recall:.4f}, {brute_recall_ties:.4f} allowing ties"
    )
    if brute_recall_ties < 1.0:
        print("warning: the numpy ground truth disagrees with the store's exact=True", flush=True)
    default_ms, _, _ = timed_searches(store, name, queries)  # unindexed: exact too
    filter_exact_ms, filter_exact_ids, _ = timed_searches(
        store, name, queries, where=where, exact=True
    )

    started = time.perf_counter()
    with disk_peak(home / "collections" / name) as build_disk:
        store.build_index(name)
    build_s = time.perf_counter() - started
    progress(f"build_index {build_s:.0f} s")
    rss_after_build = rss_mb()
    indexed_size_mb = disk_mb(home / "collections" / name)
    indexed_state = shard_state(store, name)
    store.close()
    store, reopen_indexed_s = reopen(home, name)
    assert store.info(name).indexed

    runs = interleaved(store, name, queries, search_configs(efs))
    hnsw_ms, hnsw_ids = runs["hnsw"]
    hnsw_recall = recall(hnsw_ids, exact_ids)
    exact_after_ms, exact_after_ids = runs["exact"]
    progress(
        f"hnsw p50 {pct(hnsw_ms, 50):.3f} ms, recall@10 {hnsw_recall:.4f}; exact=True p50 "
        f"{pct(exact_after_ms, 50):.2f} ms"
    )
    filter_hnsw_ms, filter_hnsw_ids, _ = timed_searches(store, name, queries, where=where)

    # points upserted after the build: in an unindexed segment, found at once
    extra = 1000
    started = time.perf_counter()
    for batch in batches(
        base, payloads, args.units, args.units + extra, args.noise, args.seed, args.batch
    ):
        store.upsert(name, batch)
    extra_upsert_s = time.perf_counter() - started
    found = 0
    probe = list(range(args.units, args.units + extra, extra // 50))
    for i, vec in unit_vectors(base, probe, args.noise, args.seed).items():
        hits = store.search(name, "unit", vec, 1)
        found += bool(hits) and hits[0].id == point_id(i)
    after_ms, _, _ = timed_searches(store, name, queries)
    after_state = shard_state(store, name)
    store.close()
    if not args.keep:
        with EdgeStore(home) as dropper:
            dropper.drop_collection(name)

    exact_p50, hnsw_p50 = pct(exact_ms, 50), pct(hnsw_ms, 50)
    return {
        "upsert_s": round(filled["upsert_s"], 1),
        "upsert_units_per_s": round(args.units / filled["upsert_s"]),
        "rss_after_upsert_mb": round(rss_after_upsert),
        "rss_after_build_mb": round(rss_after_build),
        "disk_mb": round(size_mb),
        "indexed_disk_mb": round(indexed_size_mb),
        "build_peak_disk_mb": round(build_disk["peak_mb"]),
        "reopen_s": round(reopen_s, 2),
        "reopen_indexed_s": round(reopen_indexed_s, 2),
        "exact_p50_ms": round(exact_p50, 3),
        "exact_p95_ms": round(pct(exact_ms, 95), 3),
        "exact_unindexed_default_p50_ms": round(pct(default_ms, 50), 3),
        "brute_force_recall_vs_exact": round(brute_recall, 4),
        "brute_force_recall_vs_exact_allowing_ties": round(brute_recall_ties, 4),
        "hnsw_build_s": round(build_s, 1),
        "hnsw_p50_ms": round(hnsw_p50, 3),
        "hnsw_p95_ms": round(pct(hnsw_ms, 95), 3),
        "recall_at_10": round(hnsw_recall, 4),
        "hnsw_speedup_vs_exact": round(exact_p50 / hnsw_p50, 1),
        "exact_indexed_p50_ms": round(pct(exact_after_ms, 50), 3),
        "exact_after_build_recall_vs_before": round(recall(exact_after_ids, exact_ids), 4),
        "hnsw_speedup_vs_exact_interleaved": round(pct(exact_after_ms, 50) / hnsw_p50, 1),
        "done_when_met": hnsw_recall >= 0.95 and hnsw_p50 <= 0.1 * exact_p50,
        "ef_sweep": sweep_of(runs, efs, exact_ids),
        "filter_exact_p50_ms": round(pct(filter_exact_ms, 50), 3),
        "filter_hnsw_p50_ms": round(pct(filter_hnsw_ms, 50), 3),
        "filter_hnsw_recall_at_10": round(recall(filter_hnsw_ids, filter_exact_ids), 4),
        "after_build_upserted": extra,
        "after_build_upsert_s": round(extra_upsert_s, 2),
        "after_build_found": f"{found}/{len(probe)}",
        "after_build_hnsw_p50_ms": round(pct(after_ms, 50), 3),
        "shard_before_build": unindexed,
        "shard_after_build": indexed_state,
        "shard_after_upserts": after_state,
    }, exact_ids


def measure_int8(
    args: argparse.Namespace,
    home: Path,
    base: dict[str, np.ndarray],
    payloads: list[dict],
    queries: np.ndarray,
    efs: list[int],
    truth_ids: list[list[str]],
) -> dict[str, Any]:
    """The int8 collection: upsert, build, reopen, HNSW (and the sweep) and exact=True, recall
    against `truth_ids` (the float collection's exact=True, or the numpy brute force)."""
    name = "scale-int8"
    store = EdgeStore(home)
    filled = fill(store, name, args, base, payloads, "int8")
    progress(f"int8: upserted in {filled['upsert_s']:.0f} s")
    started = time.perf_counter()
    with disk_peak(home / "collections" / name) as build_disk:
        store.build_index(name)
    build_s = time.perf_counter() - started
    size_mb = disk_mb(home / "collections" / name)
    progress(f"int8: build_index {build_s:.0f} s, {size_mb:.0f} MB")
    store.close()
    store, reopen_s = reopen(home, name)
    info = store.info(name)
    runs = interleaved(store, name, queries, search_configs(efs))
    hnsw_ms, hnsw_ids = runs["hnsw"]
    exact_ms, exact_ids = runs["exact"]
    progress(
        f"int8: reopened in {reopen_s:.2f} s; hnsw p50 {pct(hnsw_ms, 50):.3f} ms, recall@10 "
        f"{recall(hnsw_ids, truth_ids):.4f}; exact=True p50 {pct(exact_ms, 50):.2f} ms"
    )
    store.close()
    if not args.keep:
        with EdgeStore(home) as dropper:
            dropper.drop_collection(name)
    return {
        "int8_quantize_recorded": info.quantize,
        "int8_upsert_s": round(filled["upsert_s"], 1),
        "int8_upsert_units_per_s": round(args.units / filled["upsert_s"]),
        "int8_build_s": round(build_s, 1),
        "int8_size_mb": round(size_mb),
        "int8_build_peak_disk_mb": round(build_disk["peak_mb"]),
        "int8_reopen_s": round(reopen_s, 2),
        "int8_p50_ms": round(pct(hnsw_ms, 50), 3),
        "int8_p95_ms": round(pct(hnsw_ms, 95), 3),
        "int8_recall_at_10": round(recall(hnsw_ids, truth_ids), 4),
        "int8_exact_p50_ms": round(pct(exact_ms, 50), 3),
        "int8_exact_p95_ms": round(pct(exact_ms, 95), 3),
        "int8_exact_recall_vs_float": round(recall(exact_ids, truth_ids), 4),
        "int8_sweep": sweep_of(runs, efs, truth_ids),
    }


def search_configs(efs: list[int]) -> dict[str, dict[str, Any]]:
    """The searches taken in turns after a build: the default, exact=True, each hnsw_ef."""
    return {"hnsw": {}, "exact": {"exact": True}, **{f"ef{ef}": {"hnsw_ef": ef} for ef in efs}}


def sweep_of(
    runs: dict[str, tuple[list[float], list[list[str]]]], efs: list[int], truth: list[list[str]]
) -> list[dict[str, Any]]:
    return [
        {
            "hnsw_ef": ef,
            "p50_ms": round(pct(runs[f"ef{ef}"][0], 50), 3),
            "recall_at_10": round(recall(runs[f"ef{ef}"][1], truth), 4),
        }
        for ef in efs
    ]


# --- the run -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=100_000, help="units in the collection")
    parser.add_argument("--queries", type=int, default=200, help="held-out queries")
    parser.add_argument("--noise", type=float, default=0.5, help="norm of the gaussian noise")
    parser.add_argument("--batch", type=int, default=256, help="points per upsert")
    parser.add_argument("--ef", default="16,32,64,128,256", help="hnsw_ef values to sweep")
    parser.add_argument("--base-home", help="embedded store holding the real base collection")
    parser.add_argument("--base-name", default="stamps", help="its collection name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 collection")
    parser.add_argument(
        "--no-float",
        action="store_true",
        help="skip the float collection (int8 recall against a numpy brute force)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the float collection")
    parser.add_argument("--workdir", help="scratch folder (default: a new one under /tmp)")
    args = parser.parse_args()
    if args.no_float and args.no_int8:
        parser.error("--no-float and --no-int8 leave nothing to measure")
    before = machine()
    print_machine("start", before)
    work = workdir("scale", args.workdir)
    anon = AnonPeak(work)
    home = work / "home"
    rng = np.random.default_rng([args.seed, 999])

    if args.base_home:
        base, payloads = base_from_collection(Path(args.base_home), args.base_name)
        base_kind = f"collection {args.base_name} in {args.base_home}"
    else:
        base, payloads = base_from_stamps(args.seed)
        base_kind = "stamp pixels and captions, randomly projected"
    items = len(base["unit"])
    picks = rng.integers(0, items, args.queries)
    noise = rng.standard_normal((args.queries, DIM), dtype=np.float32) * (args.noise / DIM**0.5)
    queries = _normalised(base["unit"][picks] + noise)
    global WARMUP
    picks = rng.integers(0, items, 50)
    noise = rng.standard_normal((50, DIM), dtype=np.float32) * (args.noise / DIM**0.5)
    WARMUP = _normalised(base["unit"][picks] + noise)
    label_counts: dict[str, int] = {}
    for p in payloads:
        for label in p.get("labels") or []:
            label_counts[label] = label_counts.get(label, 0) + 1
    top_label = max(label_counts, key=label_counts.__getitem__) if label_counts else None
    where = {"labels": top_label} if top_label else None
    efs = [int(x) for x in args.ef.split(",") if x]
    print(f"base: {items} real items ({base_kind}); noise {args.noise}; work {work}")

    # -- the ground truth in numpy: the queries' top-K, and stored units' nearest other unit ----
    sample = [int(i) for i in rng.choice(args.units, min(args.queries, args.units), replace=False)]
    sample_vectors = unit_vectors(base, sample, args.noise, args.seed)
    started = time.perf_counter()
    numbers, scores = brute_force(
        base,
        args.units,
        args.noise,
        args.seed,
        np.concatenate([queries, np.stack([sample_vectors[i] for i in sample])]),
    )
    brute_force_s = time.perf_counter() - started
    truth = (
        [[point_id(int(i)) for i in row] for row in numbers[: len(queries)]],
        scores[: len(queries)],
    )
    query_nn_cos = scores[: len(queries), 0].tolist()
    nn_cos = [
        float(next(s for n, s in zip(row, row_scores, strict=True) if n != i))
        for i, row, row_scores in zip(
            sample, numbers[len(queries) :], scores[len(queries) :], strict=True
        )
    ]
    base_g = base["unit"] @ base["unit"].T
    np.fill_diagonal(base_g, -1.0)
    base_nn_cos = base_g.max(axis=1).tolist()
    progress(f"numpy brute-force top-{K} over {args.units:,} units in {brute_force_s:.0f} s")

    flt: dict[str, Any] = {}
    truth_ids = truth[0]
    if not args.no_float:
        flt, truth_ids = measure_float(args, home, base, payloads, queries, where, efs, truth)
    int8: dict[str, Any] = {}
    if not args.no_int8:
        int8 = measure_int8(args, home, base, payloads, queries, efs, truth_ids)
    anon_peak_mb = anon.stop()

    # -- report -----------------------------------------------------------------------------------
    rows = []
    if flt:
        rows += [
            ["exact", flt["upsert_s"], "-", flt["disk_mb"], flt["exact_p50_ms"],
             flt["exact_p95_ms"], 1.0],
            ["hnsw", "-", flt["hnsw_build_s"], flt["indexed_disk_mb"], flt["hnsw_p50_ms"],
             flt["hnsw_p95_ms"], flt["recall_at_10"]],
        ]  # fmt: skip
    if int8:
        rows += [
            ["int8 exact=True", "-", "-", "-", int8["int8_exact_p50_ms"],
             int8["int8_exact_p95_ms"], int8["int8_exact_recall_vs_float"]],
            ["hnsw int8", int8["int8_upsert_s"], int8["int8_build_s"], int8["int8_size_mb"],
             int8["int8_p50_ms"], int8["int8_p95_ms"], int8["int8_recall_at_10"]],
        ]  # fmt: skip
    truth_kind = "the float collection's exact=True" if flt else "a numpy brute force"
    print_table(
        f"{args.units:,} units x 3 x {DIM}-d, top-{K} over {args.queries} held-out queries "
        f"(noise {args.noise}; HNSW m={HNSW_M}, ef_construct={HNSW_EF_CONSTRUCT}, "
        f"search hnsw_ef={HNSW_EF}; recall against {truth_kind})",
        ["", "upsert s", "build s", "disk MB", "p50 ms", "p95 ms", "recall@10"],
        rows,
    )
    by_ef = [
        {s["hnsw_ef"]: s for s in part.get(key, [])}
        for part, key in ((flt, "ef_sweep"), (int8, "int8_sweep"))
    ]
    print_table(
        "hnsw_ef sweep (taking turns, 20 queries at a time, with the default and exact=True)",
        ["hnsw_ef", "p50 ms", "recall@10", "int8 p50 ms", "int8 recall@10"],
        [
            [
                ef,
                *(
                    part.get(ef, {}).get(k, "-")
                    for part in by_ef
                    for k in ("p50_ms", "recall_at_10")
                ),
            ]
            for ef in efs
        ],
    )
    checks = [["numpy brute force s", round(brute_force_s, 1)]]
    if flt:
        checks += [
            ["numpy brute force recall@10 vs exact=True (allowing ties)",
             f"{flt['brute_force_recall_vs_exact']} "
             f"({flt['brute_force_recall_vs_exact_allowing_ties']})"],
            ["filtered exact p50 ms", flt["filter_exact_p50_ms"]],
            ["filtered hnsw p50 ms", flt["filter_hnsw_p50_ms"]],
            ["filtered hnsw recall@10", flt["filter_hnsw_recall_at_10"]],
            ["exact p50 ms, unindexed, default params", flt["exact_unindexed_default_p50_ms"]],
            ["exact p50 ms, indexed, exact=True (interleaved)", flt["exact_indexed_p50_ms"]],
            ["exact=True after build: recall@10 vs before",
             flt["exact_after_build_recall_vs_before"]],
            ["reopen s (unindexed / indexed)", f"{flt['reopen_s']} / {flt['reopen_indexed_s']}"],
            ["rss MB after upsert / build",
             f"{flt['rss_after_upsert_mb']} / {flt['rss_after_build_mb']}"],
            ["disk MB: peak during build", flt["build_peak_disk_mb"]],
            ["segments/indexed vectors before build", str(flt["shard_before_build"])],
            ["segments/indexed vectors after build", str(flt["shard_after_build"])],
            [f"{flt['after_build_upserted']} upserted after build: s",
             flt["after_build_upsert_s"]],
            ["  found as top-1", flt["after_build_found"]],
            ["  hnsw p50 ms afterwards", flt["after_build_hnsw_p50_ms"]],
            ["  segments/indexed vectors", str(flt["shard_after_upserts"])],
        ]  # fmt: skip
    if int8:
        checks += [
            ["int8 reopen s", int8["int8_reopen_s"]],
            ["int8 disk MB: peak during build", int8["int8_build_peak_disk_mb"]],
        ]
    checks.append(
        ["peak rss MB (ru_maxrss) / anonymous only", f"{peak_rss_mb():.0f} / {anon_peak_mb:.0f}"]
    )
    title = f"filtered (labels = {top_label!r}) and other checks" if flt else "other checks"
    print_table(title, ["", "value"], checks)
    print_table(
        "nearest-neighbour cosine (unit vectors)",
        ["", "p5", "p50", "p95"],
        [
            ["stored unit -> nearest other unit", *(pct(nn_cos, q) for q in (5, 50, 95))],
            ["query -> nearest unit", *(pct(query_nn_cos, q) for q in (5, 50, 95))],
            [f"real base items ({items}) -> nearest", *(pct(base_nn_cos, q) for q in (5, 50, 95))],
        ],
    )
    after = machine()
    print_machine("end", after)
    emit_json(
        {
            "benchmark": "scale",
            "units": args.units,
            "dim": DIM,
            "vectors": list(NAMES),
            "queries": args.queries,
            "noise": args.noise,
            "base": base_kind,
            "base_items": items,
            "batch": args.batch,
            "float": bool(flt),
            "recall_truth": truth_kind,
            "brute_force_s": round(brute_force_s, 1),
            "peak_rss_mb": round(peak_rss_mb()),
            "peak_anon_rss_mb": round(anon_peak_mb),
            "hnsw_m": HNSW_M,
            "hnsw_ef_construct": HNSW_EF_CONSTRUCT,
            "hnsw_ef": HNSW_EF,
            "filter_label": top_label,
            "nn_cos_p5_p50_p95": [round(pct(nn_cos, q), 3) for q in (5, 50, 95)],
            "query_nn_cos_p5_p50_p95": [round(pct(query_nn_cos, q), 3) for q in (5, 50, 95)],
            "base_nn_cos_p5_p50_p95": [round(pct(base_nn_cos, q), 3) for q in (5, 50, 95)],
            "index_threshold": INDEX_THRESHOLD,
            **flt,
            **int8,
            "workdir": str(work),
            "machine": machine_summary(before, after),
        }
    )


if __name__ == "__main__":
    main()

"""Shared helpers for the benchmarks: the stamps corpus, the console script as a subprocess
with its process tree's memory sampled from /proc, the machine's description, tables.

Every benchmark runs in private folders under /tmp (its own JOINTSPACE_HOME per measured run),
so nothing touches a user's jointspace-data and no feature cache leaks between measured sides.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STAMPS = Path("/usr/share/tuxpaint/stamps")
JOINTSPACE = Path(sys.executable).with_name("jointspace")
SAMPLE_INTERVAL_S = 0.2


# --- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    path: Path
    caption: str
    category: str

    @property
    def relative(self) -> Path:
        return self.path.relative_to(STAMPS)


def caption_of(image: Path) -> str:
    """First line of the same-named .txt (the English caption); the file stem if there is none."""
    txt = image.with_suffix(".txt")
    try:
        first = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
    except (OSError, IndexError):
        first = ""
    return first or image.stem.replace("_", " ")


def all_stamps() -> list[Stamp]:
    """Every PNG stamp, sorted by path."""
    if not STAMPS.is_dir():
        sys.exit(f"{STAMPS} is missing: apt-get install tuxpaint-stamps-default")
    pngs = sorted(p for p in STAMPS.rglob("*.png") if not p.name.startswith("."))
    return [Stamp(p, caption_of(p), p.relative_to(STAMPS).parts[0]) for p in pngs]


def select_stamps(n: int, seed: int = 0) -> list[Stamp]:
    """`n` PNG stamps drawn at random (seeded) across all categories, in path order."""
    stamps = all_stamps()
    if n > len(stamps):
        sys.exit(f"--n {n}: only {len(stamps)} PNG stamps exist in {STAMPS}")
    if n == len(stamps):
        return stamps
    chosen = random.Random(seed).sample(range(len(stamps)), n)
    return [stamps[i] for i in sorted(chosen)]


def make_folder_corpus(stamps: list[Stamp], dest: Path) -> Path:
    """A folder corpus (PNG + same-named .txt, category folders kept) of exactly `stamps`."""
    for stamp in stamps:
        target = dest / stamp.relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stamp.path, target)
        txt = stamp.path.with_suffix(".txt")
        if txt.is_file():
            shutil.copyfile(txt, target.with_suffix(".txt"))
        else:
            target.with_suffix(".txt").write_text(stamp.caption + "\n", encoding="utf-8")
    return dest


def workdir(name: str, given: str | None) -> Path:
    """The benchmark's scratch folder: `given`, or a fresh one under /tmp."""
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix=f"jointspace-bench-{name}-", dir="/tmp"))


def fresh_home(parent: Path, label: str) -> Path:
    """An empty JOINTSPACE_HOME that no other run has used."""
    home = parent / f"home-{label}"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    return home


# --- process-tree memory from /proc ------------------------------------------------------------


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def tree_pids(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _kib(path: str, key: bytes) -> int:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class MemoryPeaks:
    """Peaks over the run, in MiB: the tree's summed RSS (counts pages that forked workers share
    with the parent once per process: an upper bound), the tree's summed PSS (shared pages split
    between sharers: closer to real use), the main process's RSS, and the most processes seen."""

    tree_rss_mb: float = 0.0
    tree_pss_mb: float = 0.0
    main_rss_mb: float = 0.0
    max_processes: int = 0
    samples: int = 0

    def sample(self, root: int) -> None:
        pids = tree_pids(root)
        rss = {pid: _kib(f"/proc/{pid}/status", b"VmRSS:") for pid in pids}
        pss = sum(_kib(f"/proc/{pid}/smaps_rollup", b"Pss:") for pid in pids)
        self.tree_rss_mb = max(self.tree_rss_mb, sum(rss.values()) / 1024)
        self.tree_pss_mb = max(self.tree_pss_mb, pss / 1024)
        self.main_rss_mb = max(self.main_rss_mb, rss.get(root, 0) / 1024)
        self.max_processes = max(self.max_processes, sum(1 for v in rss.values() if v))
        self.samples += 1


# --- the console script as a subprocess -------------------------------------------------------


@dataclass
class CliRun:
    args: list[str]
    wall_s: float
    document: dict[str, Any]
    memory: MemoryPeaks = field(default_factory=MemoryPeaks)
    cpu_s: float = 0.0  # user + system CPU of the process and its reaped children (workers)


def run_cli(
    args: list[str], home: Path, *, sample_memory: bool = True, timeout_s: float = 3600
) -> CliRun:
    """Run `jointspace ARGS` (ARGS should include --json) with JOINTSPACE_HOME=home; wall time
    from start to exit, CPU time (user + system, the process and the workers it reaped: load
    from other jobs inflates wall time much more than CPU time), the JSON document it printed,
    the process tree's memory peaks (sampling costs ~5 ms of one core every 0.2 s)."""
    env = dict(os.environ, JOINTSPACE_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("QDRANT_URL", None)  # always the embedded store
    memory = MemoryPeaks()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        process = subprocess.Popen([str(JOINTSPACE), *args], stdout=out, stderr=err, env=env)
        while process.poll() is None:
            if sample_memory:
                memory.sample(process.pid)
            if time.perf_counter() - started > timeout_s:
                process.kill()
                process.wait()
                break
            time.sleep(SAMPLE_INTERVAL_S)
        wall = time.perf_counter() - started
        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = done.ru_utime - usage.ru_utime + done.ru_stime - usage.ru_stime
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode != 0:
        sys.exit(
            f"jointspace {' '.join(args)} failed (exit {process.returncode}):\n{stderr[-3000:]}"
        )
    try:
        document = json.loads(stdout[stdout.index("{") :])
    except ValueError:
        sys.exit(f"jointspace {' '.join(args)} printed no JSON document:\n{stdout[-2000:]}")
    return CliRun(args, wall, document, memory, cpu)


def train_model(corpus: Path, out: Path, home: Path, epochs: int = 3) -> CliRun:
    """A small model trained on `corpus` (fills `home`'s feature cache: never ingest there)."""
    return run_cli(
        ["train", str(corpus), "--out", str(out), "--epochs", str(epochs), "--json", "-q"],
        home,
        sample_memory=False,
    )


# --- where a run's fixed cost goes -------------------------------------------------------------

# Measured in a fresh interpreter, as the ingest command does it: imports, the trained model, the
# backbone (open_clip model and weights).
_STARTUP_SNIPPET = """
import json, sys, time
started = time.perf_counter()
import jointspace.cli, jointspace.ingest.run, jointspace.store
from pathlib import Path
from jointspace.pipeline.loaded import LoadedModel
imported = time.perf_counter()
loaded_model = LoadedModel.load(Path(sys.argv[1]))
loaded, cpu = time.perf_counter(), time.process_time()
loaded_model.backbone
print(json.dumps({"imports_s": imported - started, "model_s": loaded - imported,
                  "backbone_s": time.perf_counter() - loaded,
                  "backbone_cpu_s": time.process_time() - cpu}))
"""


def startup_breakdown(model_dir: str) -> dict[str, float]:
    """Seconds spent importing, loading the model and loading the backbone (fresh process)."""
    return snippet_json(_STARTUP_SNIPPET, model_dir)


def snippet_json(code: str, *args: str) -> dict:
    """Run `code` in a fresh interpreter with `args` as sys.argv[1:]; its last stdout line,
    parsed as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def backbone_loads_in_timer() -> bool:
    """Whether this version of `run_ingest` loads the backbone itself (lazily, inside the time it
    reports as "seconds") rather than receiving a loaded one."""
    from jointspace.ingest.run import run_ingest

    return "load_backbone" in inspect.signature(run_ingest).parameters


# --- the machine and the output ---------------------------------------------------------------


def source_state() -> dict[str, Any]:
    """The code measured: git commit, files changed under src/, and a hash of src/'s contents
    (compare start and end: the tree may change while a long benchmark runs)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    digest = hashlib.sha256()
    for path in sorted((REPO / "src").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_changed": git("status", "--porcelain", "--", "src").splitlines(),
        "src_hash": digest.hexdigest()[:12],
    }


def machine() -> dict[str, Any]:
    """nproc, CPU model, load averages, date: what a result needs to be read against."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **source_state(),
    }


def print_machine(label: str, info: dict[str, Any]) -> None:
    load = " ".join(f"{x:.2f}" for x in info["loadavg"])
    changed = len(info["src_changed"])
    print(
        f"{label}: {info['date']}  nproc={info['nproc']}  cpu={info['cpu']}  load={load}  "
        f"code={info['commit']}+{changed} changed src files (src hash {info['src_hash']})"
    )


def machine_summary(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the JSON line records about the machine and the code, start and end."""
    if after["src_hash"] != before["src_hash"]:
        print("warning: src/ changed while this benchmark ran; the numbers mix two versions")
    return {
        **{k: v for k, v in before.items() if k != "src_changed"},
        "src_changed_files": len(before["src_changed"]),
        "loadavg_end": after["loadavg"],
        "src_hash_end": after["src_hash"],
    }


def print_table(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    """A plain aligned table (first column left-aligned, the others right-aligned)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        first = values[0].ljust(widths[0])
        rest = (v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    print(f"\n{title}")
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def emit_json(document: dict[str, Any]) -> None:
    """The result, as the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(document, sort_keys=False))

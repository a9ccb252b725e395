"""The embedded store's own collection lock, `collections list` with busy and broken collections,
and a full disk; with real processes and the real Qdrant Edge (nothing mocked).

The disk-full tests mount small tmpfs file systems (root only): they are skipped, with the reason,
where mounting is not permitted, unless CI=true, where that is a failure."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import jointspace
from jointspace.errors import JointspaceError
from jointspace.store.base import Point
from jointspace.store.edge import EdgeStore

SRC_DIR = str(Path(jointspace.__file__).resolve().parents[1])
NAMESPACE = uuid.UUID("2f1c9d9e-0d55-4b8e-9a51-5c3f5b8f3a10")
DIM = 8

# Creates the collection (or opens it), says "holding", upserts batches of random 8-d points with
# payloads (each upsert is flushed), then waits for a line on stdin before it counts and exits:
# so the test decides when it lets go, after every reader has tried.
# argv: home collection round batches per_batch pause_s
WRITER = textwrap.dedent(
    """
    import random, sys, time, uuid
    from jointspace.store.base import Point
    from jointspace.store.edge import EdgeStore

    home, name = sys.argv[1], sys.argv[2]
    rnd, batches, per_batch = (int(a) for a in sys.argv[3:6])
    pause = float(sys.argv[6])
    ns = uuid.UUID("2f1c9d9e-0d55-4b8e-9a51-5c3f5b8f3a10")
    rng = random.Random(rnd)
    store = EdgeStore(home, owner=f"test writer round {rnd}")
    try:
        if store.has_collection(name):
            store.count(name)  # opens it (for reading, until the first upsert)
        else:
            store.create_collection(name, {"unit": 8}, {"model": "test"}, ["label"])
        print("holding", flush=True)
        for b in range(batches):
            store.upsert(name, [
                Point(
                    str(uuid.uuid5(ns, f"{rnd}-{b}-{i}")),
                    {"unit": [rng.gauss(0, 1) for _ in range(8)]},
                    {"label": f"l{i % 5}", "round": rnd, "text": "x" * rng.randrange(200)},
                )
                for i in range(per_batch)
            ])
            time.sleep(pause)
        sys.stdin.readline()
        print(store.count(name), flush=True)
    finally:
        store.close()
    """
)

# Imports, says "ready", waits for a line on stdin and a random delay, then tries one call.
# A JointspaceError goes to stderr as its one sentence, exit 1; anything else is a traceback.
# argv: home collection op delay_s
READER = textwrap.dedent(
    """
    import json, sys, time, uuid
    from jointspace.errors import JointspaceError
    from jointspace.store.base import Point
    from jointspace.store.edge import EdgeStore

    home, name, op, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    print("ready", flush=True)
    sys.stdin.readline()
    time.sleep(delay)
    store = EdgeStore(home, owner=f"test reader {op}")
    try:
        if op == "info":
            store.info(name)
        elif op == "search":
            store.search(name, "unit", [1.0] * 8, 3)
        elif op == "upsert":
            pid = str(uuid.uuid5(uuid.UUID("2f1c9d9e-0d55-4b8e-9a51-5c3f5b8f3a10"), "0-0-0"))
            store.upsert(name, [Point(pid, {"unit": [1.0] * 8}, {"label": "reader"})])
        elif op == "create":
            store.create_collection(name, {"unit": 8}, {"model": "reader"})
        elif op == "drop":
            store.drop_collection(name)
        elif op == "list":
            print(json.dumps([
                {"name": i.name, "state": i.state, "points": i.points, "detail": i.detail}
                for i in store.list_infos()
            ]), flush=True)
        else:
            raise SystemExit(f"unknown op {op}")
    except JointspaceError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    finally:
        store.close()
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC_DIR, env.get("PYTHONPATH")) if p)
    return env


def _spawn(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _run(script: str, *args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _one_sentence(stderr: str, *expected: str) -> str:
    """stderr is one line, no traceback, containing each of `expected`."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def _point(key: str, payload: dict | None = None) -> Point:
    rng = random.Random(key)
    return Point(
        str(uuid.uuid5(NAMESPACE, key)),
        {"unit": [rng.gauss(0, 1) for _ in range(DIM)]},
        payload or {"label": "a"},
    )


def _kill(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


# -- (a) a writer and the processes it refuses ----------------------------------------------------

ROUNDS = 20
BATCHES, PER_BATCH, PAUSE_S = 10, 40, 0.08
LOCKED_OPS = ("info", "search", "upsert", "drop")


def test_writer_survives_concurrent_readers_and_writers(tmp_path: Path) -> None:
    """Every round: a writer holds the collection and upserts ~1 s; info, search, upsert and drop
    processes are refused with one sentence naming its pid (without touching the shard: the
    writer used to die at its next flush), create says it exists, list says busy; the writer
    exits 0 with the exact count, and the store reopens with it."""
    home, name = tmp_path / "home", "shared"
    for rnd in range(ROUNDS):
        ops = [*LOCKED_OPS, "create", "list"]
        rng = random.Random(rnd)
        readers = [_spawn(READER, home, name, op, rng.uniform(0.0, 0.7)) for op in ops]
        writer = _spawn(WRITER, home, name, rnd, BATCHES, PER_BATCH, PAUSE_S)
        try:
            for reader in readers:
                assert reader.stdout and reader.stdout.readline().strip() == "ready"
            assert writer.stdout
            line = writer.stdout.readline().strip()
            assert line == "holding", f"round {rnd}: {line!r}\n{writer.stderr.read()}"
            for reader in readers:  # all at once; each tries after its random delay
                assert reader.stdin
                reader.stdin.write("go\n")
                reader.stdin.flush()
            outputs = [reader.communicate(timeout=60) for reader in readers]
            out, err = writer.communicate("finish\n", timeout=60)
        finally:
            _kill(writer, *readers)
        expected = (rnd + 1) * BATCHES * PER_BATCH
        assert writer.returncode == 0, f"round {rnd}: writer exit {writer.returncode}\n{err}"
        assert out.strip() == str(expected), f"round {rnd}: {out!r}\n{err}"
        for op, reader, (stdout, stderr) in zip(ops, readers, outputs, strict=True):
            where = f"round {rnd}, {op}"
            if op == "list":
                assert reader.returncode == 0, f"{where}: {stderr}"
                (info,) = json.loads(stdout)
                assert info["state"] == "busy" and info["points"] is None, where
                assert f"pid {writer.pid}" in info["detail"], f"{where}: {info}"
                continue
            assert reader.returncode == 1, f"{where}: exit {reader.returncode}\n{stderr}"
            if op == "create":
                _one_sentence(stderr, "already exists")
            else:
                sentence = _one_sentence(
                    stderr, f"'{name}'", str(home), f"pid {writer.pid}", "in use by another"
                )
                assert f"test writer round {rnd}" in sentence, sentence
        with EdgeStore(home) as store:  # reopens fine, nothing lost, nothing added
            assert store.count(name) == expected
            assert store.list_collections() == [name]


# Holds a collection for reading (a count) until it has slept argv[3] seconds.
SHORT_READER = textwrap.dedent(
    """
    import sys, time
    from jointspace.store.edge import EdgeStore
    with EdgeStore(sys.argv[1], owner="a short query") as store:
        print(store.count(sys.argv[2]), flush=True)
        time.sleep(float(sys.argv[3]))
    """
)


def test_reader_waits_briefly_for_another_reader(tmp_path: Path) -> None:
    """A reader that meets another (short) reader waits for it and succeeds; one that meets a
    long reader gives up after ~2 s with the holder's pid and description."""
    home = tmp_path / "home"
    with EdgeStore(home) as store:
        store.create_collection("c", {"unit": DIM}, {})
        store.upsert("c", [_point(str(i)) for i in range(5)])

    short = _spawn(SHORT_READER, home, "c", 0.6)
    try:
        assert short.stdout and short.stdout.readline().strip() == "5"
        start = time.monotonic()
        with EdgeStore(home) as store:
            assert store.count("c") == 5  # waited for `short` to let go
        assert time.monotonic() - start < 2.0
        short.communicate(timeout=30)
        assert short.returncode == 0
    finally:
        _kill(short)

    long = _spawn(SHORT_READER, home, "c", 30)
    try:
        assert long.stdout and long.stdout.readline().strip() == "5"
        start = time.monotonic()
        with EdgeStore(home) as store, pytest.raises(JointspaceError) as err:
            store.search("c", "unit", [1.0] * DIM, 3)
        waited = time.monotonic() - start
        assert 1.5 <= waited < 10, waited
        message = str(err.value)
        assert f"pid {long.pid}" in message and "a short query" in message, message
        assert "use a Qdrant server" in message, message
    finally:
        _kill(long)
    with EdgeStore(home) as store:  # released with the process
        assert store.count("c") == 5


# -- (b) collections list with busy and broken collections ----------------------------------------

CORRUPTIONS = {
    "truncated": b'{"format": 1, "vectors": {"unit": 8}, "metad',
    "garbled": b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe",
    "wrong-types": b'{"format": 1, "vectors": {"unit": "eight"}, "metadata": {}}',
    "a-list": b"[1, 2, 3]",
    "empty": b"",
}


def test_list_infos_reports_busy_and_broken_collections(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with EdgeStore(home) as store:
        for name in ("healthy", "busy", *CORRUPTIONS):
            store.create_collection(name, {"unit": DIM}, {"model": "m"}, ["label"])
            store.upsert(name, [_point(f"{name}-{i}") for i in range(3)])
    for name, content in CORRUPTIONS.items():
        (home / "collections" / name / "collection.json").write_bytes(content)

    writer = _spawn(WRITER, home, "busy", 1, BATCHES, PER_BATCH, PAUSE_S)
    try:
        assert writer.stdout and writer.stdout.readline().strip() == "holding"
        with EdgeStore(home) as store:
            infos = {info.name: info for info in store.list_infos()}
            assert sorted(infos) == sorted(["healthy", "busy", *CORRUPTIONS])
            assert infos["healthy"].state == "ready" and infos["healthy"].points == 3
            assert infos["healthy"].detail == "" and dict(infos["healthy"].vectors) == {"unit": 8}
            busy = infos["busy"]
            assert busy.state == "busy" and busy.points is None, busy
            assert f"pid {writer.pid}" in busy.detail and "test writer round 1" in busy.detail
            assert dict(busy.vectors) == {"unit": 8}  # from collection.json, no Edge needed
            for name in CORRUPTIONS:
                path = home / "collections" / name / "collection.json"
                info = infos[name]
                assert info.state == "broken" and info.points is None, info
                assert str(path) in info.detail and "corrupt" in info.detail, info.detail
                # every other way in says the same one sentence
                for call in (
                    lambda n=name: store.info(n),
                    lambda n=name: store.count(n),
                    lambda n=name: store.upsert(n, [_point("x")]),
                ):
                    with pytest.raises(JointspaceError) as err:
                        call()
                    assert str(path) in str(err.value) and "\n" not in str(err.value)
            # listing did not keep the healthy collection open
            assert _run(READER, home, "healthy", "info", 0).returncode == 0
        out, err = writer.communicate("finish\n", timeout=60)
    finally:
        _kill(writer)
    assert writer.returncode == 0, err
    assert out.strip() == str(3 + BATCHES * PER_BATCH)
    with EdgeStore(home) as store:
        for name in CORRUPTIONS:  # a broken collection can still be dropped
            store.drop_collection(name)
        assert [(i.name, i.state, i.points) for i in store.list_infos()] == [
            ("busy", "ready", 3 + BATCHES * PER_BATCH),
            ("healthy", "ready", 3),
        ]


# -- (c) a full disk ---------------------------------------------------------------------------

# Creates the collection if needed, then upserts argv[3] batches of 200 points with 4 KB of
# incompressible text each (~1 MB a batch), printing each batch done. argv: home name batches
FILLER = textwrap.dedent(
    """
    import random, sys, uuid
    from jointspace.errors import JointspaceError
    from jointspace.store.base import Point
    from jointspace.store.edge import EdgeStore

    home, name, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ns = uuid.UUID("2f1c9d9e-0d55-4b8e-9a51-5c3f5b8f3a10")
    try:
        with EdgeStore(home) as store:
            if not store.has_collection(name):
                store.create_collection(name, {"unit": 8}, {}, ["label"])
            for b in range(batches):
                rng = random.Random(b)
                store.upsert(name, [
                    Point(
                        str(uuid.uuid5(ns, f"fill-{b}-{i}")),
                        {"unit": [rng.gauss(0, 1) for _ in range(8)]},
                        {"label": str(i % 3), "text": rng.randbytes(2000).hex()},
                    )
                    for i in range(200)
                ])
                print(b, flush=True)
            print("count", store.count(name), flush=True)
    except JointspaceError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    """
)
FILL_BATCHES = 60


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        reason = f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An empty mount point; the test mounts a tmpfs of its size with _mount_tmpfs."""
    mount = tmp_path / "disk"
    yield mount
    if os.path.ismount(mount):
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_too_small_disk_refuses_to_create(small_disk: Path) -> None:
    _mount_tmpfs(small_disk, "5m")
    home = small_disk / "home"
    proc = _run(FILLER, home, "items", 3)
    assert proc.returncode == 1, f"exit {proc.returncode} (135 is SIGBUS)\n{proc.stderr}"
    _one_sentence(proc.stderr, f"Not enough free space in {home}", "MB free", "MB needed")
    assert proc.stdout == ""
    with EdgeStore(home) as store:
        assert store.list_collections() == []


def test_disk_filling_up_stops_with_one_sentence_and_rerun_completes(small_disk: Path) -> None:
    _mount_tmpfs(small_disk, "48m")
    home = small_disk / "home"
    proc = _run(FILLER, home, "items", FILL_BATCHES)
    assert proc.returncode == 1, f"exit {proc.returncode} (135 is SIGBUS)\n{proc.stderr}"
    _one_sentence(proc.stderr, f"Not enough free space in {home}", "what was written is kept")
    done = len(proc.stdout.split())
    assert 0 < done < FILL_BATCHES, proc.stdout

    # A reader on the full tmpfs is told too (loading would fill the shard's sparse files).
    query = _run(READER, home, "items", "search", 0)
    assert query.returncode == 1, f"exit {query.returncode}\n{query.stderr}"
    _one_sentence(query.stderr, "Not enough free space")

    subprocess.run(["mount", "-o", "remount,size=320m", str(small_disk)], check=True)
    with EdgeStore(home) as store:  # what was written is kept
        assert store.count("items") == done * 200
    rerun = _run(FILLER, home, "items", FILL_BATCHES)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.split()[-2:] == ["count", str(FILL_BATCHES * 200)]
    with EdgeStore(home) as store:
        assert store.count("items") == FILL_BATCHES * 200


def test_edge_disk_full_error_becomes_one_sentence(tmp_path: Path) -> None:
    """What Edge raises when a write fails with ENOSPC (rather than SIGBUS) reads the same."""
    from jointspace.store.edge import _translate

    error = _translate(
        Exception("Service internal error: No space left on device (os error 28)"), "x", tmp_path
    )
    assert str(error).startswith(f"Not enough free space in {tmp_path} (")
    assert "re-run: what was written is kept." in str(error)


# A writer that takes the lock, forks a child (as the ingest's decoding workers are forked: it
# inherits the lock's descriptor), and dies at once: the child lets go a moment later.
ORPHANING_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from jointspace.store.lock import WRITING, CollectionLock

    lock = CollectionLock(sys.argv[1], "c", owner="a killed ingest")
    lock.acquire(WRITING)
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1), os.dup2(null, 2)  # the test reads the parent's output only
        time.sleep(1.0)  # a worker that has not died yet
        os._exit(0)
    print("holding", flush=True)
    os._exit(0)  # like SIGKILL: no release
    """
)


def test_a_dead_holder_s_lingering_workers_are_waited_for(tmp_path: Path) -> None:
    """Right after `kill -9` of an ingest, its workers still hold the lock for a moment: a
    re-run waits for them instead of being told the dead ingest is writing."""
    from jointspace.store.lock import WRITING, CollectionLock

    env = {**os.environ, "PYTHONPATH": SRC_DIR}
    proc = subprocess.run(
        [sys.executable, "-c", ORPHANING_WRITER, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == "holding"
    lock = CollectionLock(tmp_path, "c", owner="the re-run")
    lock.acquire(WRITING)  # before: CollectionBusy naming the dead writer
    assert lock.held
    lock.release()

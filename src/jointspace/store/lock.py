"""Our own per-collection lock for the embedded store, taken before Qdrant Edge opens anything.

Why. Edge locks a shard's WAL while it is open, but a second opener still touches the shard's
files before it finds out: a refused `EdgeShard.load` used to make the *running* ingest die with
"Failed to flush payload_index ... tracker_journal.dat is shorter than expected". So a process
must know that a collection is taken without asking Edge: every EdgeStore call that opens a
shard (load, create, drop) first takes this lock, and a refused process never calls Edge for
that collection.

How. One lock file per collection, `{home}/locks/{name}.lock` (outside the collection's
directory, so neither Edge nor a drop ever touches it; lock files are never deleted, because
unlinking a lock file that another process is waiting on lets two processes "hold" it).
`fcntl.flock(LOCK_EX | LOCK_NB)` on it, held for as long as the shard is open in this process
and released by close or by the death of the process (kill -9 included). After acquiring, the
holder writes a small JSON into the file, `{"pid", "owner", "since", "activity"}`, so that a
refused process can say who holds the collection; the JSON is cleared on release. On Linux the
holder's pid is also read from /proc/locks, which tells a live holder's JSON from a stale one.

Waiting. A holder is "reading" (it opened the collection to count, search or list) or
"writing" (it created the collection, or upserted, changed or dropped it); the first write
marks it. A process refused by a *reader* polls for up to `DEFAULT_WAIT_S` (2 s) before giving
up, because readers are usually short (a `query`, `collections info`): two queries that meet
then both succeed, one a moment later. A process refused by a *writer* gives up at once: an
ingest runs for minutes, so waiting 2 s would only delay the answer. Waiting is polling with
LOCK_NB, never a blocking flock, so a waiting process never holds anything and can never block
or harm the holder; a writer that holds a collection is never slowed down by anyone.
`collections list` does not wait (it reports the collection as busy).

Windows has no fcntl: there the lock degrades to nothing and Edge's own lock is the only guard.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from jointspace.errors import JointspaceError

DEFAULT_WAIT_S = 2.0
_POLL_S = 0.05
# How long a lock whose holder has died may take to be let go by its dying worker processes.
_ORPHAN_WAIT_S = 10.0
# How long a refused process re-reads the lock file to get the holder's own description (it may
# be written a moment after the lock is taken).
_INFO_WAIT_S = 0.5
_OWNER_MAX = 80
READING, WRITING = "reading", "writing"
# How `jointspace serve` names itself as a lock's owner ("jointspace serve at URL").
SERVICE_OWNER = "jointspace serve"


def lock_path(home: Path, collection: str) -> Path:
    """Where the lock file of `collection` lives in the store home `home`."""
    return Path(home) / "locks" / f"{collection}.lock"


def default_owner() -> str:
    """This process's command line, shortened: what a refused process is told holds the lock."""
    argv = list(sys.argv) or ["python"]
    if argv[0] in ("-c", "-m", ""):
        argv = ["python", *argv]
    else:
        argv[0] = Path(argv[0]).name
    text = " ".join(arg if arg and " " not in arg else repr(arg) for arg in argv)
    return text if len(text) <= _OWNER_MAX else text[: _OWNER_MAX - 3] + "..."


@dataclass(frozen=True)
class Holder:
    """Who holds a collection: what its lock file and /proc/locks say (pid None: unknown)."""

    pid: int | None
    owner: str = ""
    since: str = ""
    activity: str = ""


class CollectionBusy(JointspaceError):
    """Another process (or another store in this one) holds the collection."""

    def __init__(self, collection: str, home: Path, holder: Holder) -> None:
        self.collection = collection
        self.home = home
        self.holder = holder
        who = f"pid {holder.pid}" if holder.pid is not None else "a process we cannot name"
        owner = holder.owner or "owner unknown"
        since = holder.since or "an unknown time"
        if owner.startswith(SERVICE_OWNER):  # a service does not end by itself
            ways_out = (
                "stop the service, or use a Qdrant server (--qdrant-url), where ingest and "
                "serve run side by side"
            )
        else:
            ways_out = (
                "try again when it ends, or use a Qdrant server for concurrent ingest and queries"
            )
        super().__init__(
            f"The collection '{collection}' in {home} is in use by another process, {who} "
            f"({owner}, since {since}); {ways_out}."
        )


class CollectionLock:
    """The lock of one collection, as held by one store. Not reentrant: a second
    CollectionLock on the same file, even in this process, is refused while this one holds."""

    def __init__(self, home: Path, collection: str, owner: str | None = None) -> None:
        self.home = Path(home)
        self.collection = collection
        self.path = lock_path(self.home, collection)
        self.owner = owner if owner is not None else default_owner()
        self._fd: int | None = None
        self._activity = ""

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, activity: str = READING, wait: float = DEFAULT_WAIT_S) -> None:
        """Take the lock, or raise CollectionBusy. While the holder is reading, retry for up to
        `wait` seconds; while it is writing, give up at once."""
        if self._fd is not None:
            self.mark(activity)
            return
        fd = self._open()
        if fcntl is None:
            self._fd = fd
            return
        started = time.monotonic()
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = self._holder(fd)
                    waited = time.monotonic() - started
                    # The holder is gone but its lock lives on in the descriptors its worker
                    # processes inherited (e.g. right after `kill -9` of an ingest): they die
                    # with it within moments, so wait for them whatever it was doing.
                    orphaned = holder.pid is not None and not _alive(holder.pid)
                    if orphaned and waited < _ORPHAN_WAIT_S:
                        time.sleep(_POLL_S)
                        continue
                    if holder.activity == WRITING or waited >= max(0.0, wait):
                        raise CollectionBusy(self.collection, self.home, holder) from None
                    time.sleep(_POLL_S)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._activity = activity
        self._write_info()

    def mark(self, activity: str) -> None:
        """Record what this holder does now ("writing" is never taken back)."""
        if self._fd is None or activity == self._activity or self._activity == WRITING:
            return
        self._activity = activity
        self._write_info()

    def release(self) -> None:
        """Clear the lock file's description and let go of the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor releases the flock

    # -- internals -----------------------------------------------------------------------------

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JointspaceError(
                f"Cannot open the lock file {self.path} of collection '{self.collection}' "
                f"({exc.strerror or exc}); check that {self.home} is writable."
            ) from None

    def _write_info(self) -> None:
        """Best effort: the lock itself is the flock, the JSON only describes its holder (on a
        full disk it may stay empty)."""
        if self._fd is None:
            return
        data = json.dumps(
            {
                "pid": os.getpid(),
                "owner": self.owner,
                "since": _now(),
                "activity": self._activity,
            }
        ).encode()
        with contextlib.suppress(OSError):
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))

    def _holder(self, fd: int) -> Holder:
        """Who holds the lock on `fd`'s file: its JSON, checked against /proc/locks where there
        is one (the JSON may be stale for a moment after a new holder took the lock)."""
        locked_by = _flock_holder_pid(fd)
        deadline = time.monotonic() + _INFO_WAIT_S
        while True:
            info = _read_info(fd)
            if info is not None:
                pid = info.get("pid")
                if locked_by is None and isinstance(pid, int) and _alive(pid):
                    return _holder_from(info)
                if locked_by is not None and pid == locked_by:
                    return _holder_from(info)
            if time.monotonic() >= deadline:
                return Holder(pid=locked_by if locked_by is not None else _pid_of(info))
            time.sleep(_POLL_S / 2)


def _holder_from(info: dict) -> Holder:
    return Holder(
        pid=_pid_of(info),
        owner=str(info.get("owner", "")),
        since=str(info.get("since", "")),
        activity=str(info.get("activity", "")),
    )


def _pid_of(info: dict | None) -> int | None:
    pid = info.get("pid") if info else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def _read_info(fd: int) -> dict | None:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode("utf-8")) if raw else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _flock_holder_pid(fd: int) -> int | None:
    """The pid /proc/locks gives for the flock on `fd`'s file (Linux), else None."""
    try:
        st = os.fstat(fd)
        key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:123 0 EOF" ("->" marks a waiter)
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key:
                    pid = int(fields[4])
                    return pid if pid > 0 else None
    except (OSError, ValueError):
        return None
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")

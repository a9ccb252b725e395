"""How a service runs: its store, collections, key, address and limits (checked once, here)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import JointspaceError

DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 * 1024
# Where `jointspace serve --workers N` hands its settings to the worker processes it starts.
SETTINGS_ENV = "JOINTSPACE_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServiceSettings:
    """`home`/`qdrant_url`/`qdrant_api_key`/`grpc`: the store, as `jointspace.connect` takes
    them. `collections`: those to serve (empty: every ready one). `api_key`: the key clients
    must send (None: none). `processes`: server processes (more than one needs a Qdrant
    server). `model_threads`: threads running model calls (each with its share of the cores as
    torch threads; `jointspace serve` takes `default_model_threads()`); `queue_size`: calls that
    may wait for one (beyond: 503). `max_upload_bytes`: the largest query image accepted.
    `device`/`precision`/`engine`: where queries run the backbone, as `jointspace.connect` takes
    them."""

    home: Path | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    grpc: bool = True
    collections: tuple[str, ...] = ()
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    processes: int = 1
    model_threads: int = 1
    queue_size: int = 32
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    device: str | None = None
    precision: str | None = None
    engine: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "collections", tuple(dict.fromkeys(self.collections)))
        if self.api_key is not None and not self.api_key.strip():
            object.__setattr__(self, "api_key", None)
        if self.processes > 1 and not self.qdrant_url:
            raise JointspaceError(
                f"--workers {self.processes} needs a Qdrant server (--qdrant-url or QDRANT_URL): "
                "the embedded store has one owner, so serve it from one process, which answers "
                "requests concurrently."
            )
        for flag, value, least in (
            ("--workers", self.processes, 1),
            ("--model-threads", self.model_threads, 1),
            ("--queue-size", self.queue_size, 0),
            ("--max-upload-mb", self.max_upload_bytes, 1),
        ):
            if value < least:
                raise JointspaceError(f"{flag} must be at least {least} (got {value}).")
        if not 0 <= self.port <= 65535:
            raise JointspaceError(f"--port must be between 0 and 65535 (got {self.port}).")

    @property
    def base_url(self) -> str:
        """The URL a client on this machine opens (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def owner(self) -> str:
        """How the service names itself in the embedded store's locks, so that a refused ingest
        can say which service holds a collection (see store/lock.py)."""
        from ..store.lock import SERVICE_OWNER

        return f"{SERVICE_OWNER} at {self.base_url}"

    def to_environment(self) -> str:
        """The settings as JSON, for worker processes (`from_environment`)."""
        document = asdict(self)
        document["home"] = str(self.home) if self.home is not None else None
        return json.dumps(document)

    @classmethod
    def from_environment(cls) -> ServiceSettings:
        document = json.loads(os.environ[SETTINGS_ENV])
        document["collections"] = tuple(document["collections"])
        if document["home"] is not None:
            document["home"] = Path(document["home"])
        return cls(**document)


def default_model_threads(processes: int = 1) -> int:
    """The model threads `jointspace serve` runs per process: two where each process has two
    cores or more, else one. A query's model call is small (one text, or one image): on 2
    cores a second intra-op torch thread does not make it faster, while a second model thread
    lets one query's model call run while another's search holds the GIL (the embedded
    store's exact search does). Measured with benchmarks/serve.py at 100k units and 16
    clients: 1.4-1.6x the image queries per second, 1.1-1.2x the text ones (RESULTS.md)."""
    return max(1, min(2, cores() // max(1, processes)))


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1

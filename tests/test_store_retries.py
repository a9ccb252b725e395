"""ServerStore under failure: retries with backoff on the exceptions qdrant-client really
raises, clear errors when a failure persists, version checks, sharding and bulk options.

Failures are injected into qdrant-client's local mode (the server stand-in) by a wrapper that
raises, on chosen calls, exactly what the remote client raises: httpx errors wrapped in
ResponseHandlingException (qdrant_client/http/api_client.py, send_inner), UnexpectedResponse for
an HTTP error status (ApiClient.send), ResourceExhaustedResponse for a 429 with Retry-After, and
grpc.RpcError with a status code in gRPC mode. A few tests talk to a stand-in HTTP server
instead, so that the real client produces those exceptions itself. Nothing sleeps for real
except one test with a 1 ms backoff base.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from qdrant_client import QdrantClient
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from jointspace.errors import JointspaceError
from jointspace.store import ServerOptions, open_store
from jointspace.store.base import Point
from jointspace.store.retry import GaveUp, RetryPolicy, call_with_retries
from jointspace.store.server import DEFAULT_INDEXING_THRESHOLD_KB, ServerStore
from jointspace.store.server_connection import ServerConnection, is_transient, version_gap

DIMS = {"unit": 4, "image": 4, "text": 4}
SECRET = "s3cr3t-api-key-do-not-print"


# -- the exceptions the real client raises -------------------------------------------------------


def read_timeout() -> Exception:
    return ResponseHandlingException(httpx.ReadTimeout("timed out"))


def connect_error() -> Exception:
    return ResponseHandlingException(httpx.ConnectError("[Errno 111] Connection refused"))


def dropped_connection() -> Exception:
    return ResponseHandlingException(
        httpx.RemoteProtocolError("Server disconnected without sending a response.")
    )


def http_status(status: int, error: str = "Service unavailable") -> Exception:
    body = json.dumps({"status": {"error": error}, "time": 0.0}).encode()
    return UnexpectedResponse(status, "Error", body, httpx.Headers())


def unavailable_503() -> Exception:
    return http_status(503)


class FakeRpcError(grpc.RpcError):
    """What a gRPC call raises: an RpcError that is also a Call with code() and details()."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def grpc_unavailable() -> Exception:
    return FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")


def grpc_deadline() -> Exception:
    return FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


TRANSIENT = {
    "read_timeout": read_timeout,
    "http_503": unavailable_503,
    "connect_error": connect_error,
    "dropped_connection": dropped_connection,
    "grpc_unavailable": grpc_unavailable,
    "grpc_deadline": grpc_deadline,
}


# -- a flaky client: the real local-mode client with injected failures --------------------------

# (call number of that method from 1, the call's keyword arguments) -> the exception to raise
# and whether the call is applied first (a lost response: the server did the work, the client
# saw an error), or None to let the call through.
Plan = Callable[[int, dict[str, Any]], "tuple[Exception, bool] | None"]


class FlakyClient:
    """Delegates to a real QdrantClient; methods named in `plans` fail as their plan says.
    Calls are serialised by a lock, since local mode is not thread-safe and the parallel
    upload tests call from several threads."""

    def __init__(self, real: QdrantClient, plans: dict[str, Plan]) -> None:
        self.real = real
        self.plans = plans
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.succeeded: Counter[str] = Counter()
        self.lock = threading.RLock()

    def __getattr__(self, method: str) -> Any:
        target = getattr(self.real, method)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.calls[method] += 1
                plan = self.plans.get(method)
                outcome = plan(self.calls[method], kwargs) if plan else None
                if outcome is None:
                    result = target(*args, **kwargs)
                    self.succeeded[method] += 1
                    return result
                exc, applied = outcome
                if applied:
                    target(*args, **kwargs)
                self.failures[method] += 1
                raise exc

        return call


def every_third(kinds: list[Callable[[], Exception]]) -> Plan:
    """Every 3rd call fails, cycling through `kinds`; every other failure is a lost response
    (applied, then the error), which a retry must not turn into duplicates."""

    def plan(n: int, kwargs: dict[str, Any]) -> tuple[Exception, bool] | None:
        if n % 3:
            return None
        failure = n // 3
        return kinds[failure % len(kinds)](), failure % 2 == 0

    return plan


def every_third_batch(kinds: list[Callable[[], Exception]]) -> Plan:
    """Like every_third, but counting distinct upsert batches (by their first point id) and
    failing only a batch's first try: deterministic when batches go out in parallel, where a
    retry could otherwise land on a failing call number again and again."""
    batches: list[str] = []

    def plan(n: int, kwargs: dict[str, Any]) -> tuple[Exception, bool] | None:
        first_id = str(kwargs["points"][0].id)
        if first_id in batches:
            return None  # a retry
        batches.append(first_id)
        if len(batches) % 3:
            return None
        failure = len(batches) // 3
        return kinds[failure % len(kinds)](), failure % 2 == 0

    return plan


def from_call(first: int, kind: Callable[[], Exception]) -> Plan:
    """Every call from the `first`-th on fails: a persistent failure."""
    return lambda n, kwargs: (kind(), False) if n >= first else None


def over(
    client: Any, options: ServerOptions | None = None, where: str = "the Qdrant server"
) -> ServerStore:
    """A ServerStore over `client` (a real or flaky QdrantClient), as connect() would make it."""
    return ServerStore(ServerConnection(client, where, options))


class Sleeps(list):
    """A RetryPolicy.sleep that records instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def open_flaky(
    plans: dict[str, Plan],
    sleeps: Sleeps,
    *,
    parallel: int = 1,
    attempts: int = 5,
    location: str = ":memory:",
) -> tuple[ServerStore, FlakyClient]:
    client = FlakyClient(QdrantClient(location=location), plans)
    policy = RetryPolicy(attempts=attempts, base_delay=0.01, max_delay=0.08, sleep=sleeps)
    # The key, as connect() would have it: to be scrubbed from every message.
    options = ServerOptions(api_key=SECRET, batch_size=50, parallel=parallel, retry=policy)
    where = "the Qdrant server at http://qdrant:6333"
    store = over(client, options, where)
    store.create_collection("items", DIMS, {"model": "m1"}, ["split"])
    return store, client


def points(n: int, offset: int = 0) -> list[Point]:
    out = []
    for i in range(offset, offset + n):
        rad = math.radians(i % 360)
        vec = [math.cos(rad), math.sin(rad), 0.0, 0.0]
        pid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"point-{i}"))
        out.append(Point(pid, {"unit": vec, "image": vec, "text": vec}, {"n": i, "split": "a"}))
    return out


def stored_ids(store: ServerStore) -> list[str]:
    return [p.id for p in store.scroll("items", batch_size=128)]


# -- ingest through transient failures ----------------------------------------------------------


@pytest.mark.parametrize(
    "kinds",
    [[kind] for kind in TRANSIENT.values()] + [list(TRANSIENT.values())],
    ids=[*TRANSIENT, "all_mixed"],
)
@pytest.mark.parametrize("parallel", [1, 4])
def test_ingest_completes_through_transient_failures(
    kinds: list[Callable[[], Exception]], parallel: int
) -> None:
    sleeps = Sleeps()
    plans = {"upsert": every_third_batch(kinds)}
    store, client = open_flaky(plans, sleeps, parallel=parallel)
    wanted = points(1000)
    store.upsert("items", wanted)  # 20 requests of 50, every 3rd request fails once

    assert client.failures["upsert"] == 6
    assert client.calls["upsert"] == 26  # one retry per failure
    ids = stored_ids(store)
    assert store.count("items") == 1000
    assert len(ids) == len(set(ids)) == 1000
    assert set(ids) == {p.id for p in wanted}
    assert len(sleeps) == client.failures["upsert"]
    assert all(0.005 <= s <= 0.08 for s in sleeps)  # backoff from the tiny test base, capped


def test_ingest_in_caller_batches_with_failures_everywhere() -> None:
    """The ingest loop's own shape: 20 upsert calls of 50 points, existence checks and counts
    between them, with every 3rd call of each kind failing."""
    sleeps = Sleeps()
    kinds = list(TRANSIENT.values())
    plans = {m: every_third(kinds) for m in ("upsert", "retrieve", "count", "query_points")}
    store, client = open_flaky(plans, sleeps)
    for start in range(0, 1000, 50):
        batch = points(50, offset=start)
        assert store.existing_ids("items", [p.id for p in batch]) == set()
        store.upsert("items", batch)
        assert store.count("items") == start + 50
    best = store.search("items", "unit", [1.0, 0.0, 0.0, 0.0], k=3)[0]
    assert best.score == pytest.approx(1.0) and best.payload["n"] % 360 == 0
    assert sum(client.failures.values()) >= 20
    assert len(set(stored_ids(store))) == 1000


def test_real_backoff_with_a_tiny_base() -> None:
    """The one test that really sleeps: 1 ms base, so the whole run costs milliseconds."""
    client = FlakyClient(QdrantClient(location=":memory:"), {})
    policy = RetryPolicy(attempts=5, base_delay=0.001, max_delay=0.004)
    store = over(client, ServerOptions(batch_size=50, retry=policy))
    store.create_collection("items", DIMS, {"model": "m1"})
    client.plans["upsert"] = every_third([read_timeout, unavailable_503])
    store.upsert("items", points(300))
    assert store.count("items") == 300


# -- persistent failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (unavailable_503, r"kept failing \(HTTP 503: Service unavailable"),
        (read_timeout, r"did not answer in time \(ReadTimeout: timed out"),
        (connect_error, r"Cannot reach the Qdrant server at http://qdrant:6333 \(ConnectError"),
        (dropped_connection, r"Cannot reach .*RemoteProtocolError: Server disconnected"),
        (grpc_unavailable, r"Cannot reach .*gRPC UNAVAILABLE"),
        (grpc_deadline, r"did not answer in time \(gRPC DEADLINE_EXCEEDED"),
    ],
)
@pytest.mark.parametrize("parallel", [1, 4])
def test_persistent_failure_raises_a_clear_error_and_keeps_earlier_points(
    kind: Callable[[], Exception], message: str, parallel: int
) -> None:
    sleeps = Sleeps()
    store, client = open_flaky({"upsert": from_call(7, kind)}, sleeps, parallel=parallel)
    with pytest.raises(JointspaceError, match=message) as err:
        store.upsert("items", points(1000))
    text = str(err.value)
    assert "tried 5 times over" in text
    assert "while upserting 50 points into 'items'" in text
    assert SECRET not in text
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained noise
    # Everything acknowledged before the failure is there, exactly once.
    written = client.succeeded["upsert"]
    assert written == 6
    ids = stored_ids(store)
    assert len(ids) == len(set(ids)) == store.count("items") == written * 50
    if parallel == 1:  # in order: the first 300 points
        assert set(ids) == {p.id for p in points(300)}
        assert len(sleeps) == 4  # 5 tries, 4 waits


def test_backoff_grows_exponentially_and_is_capped() -> None:
    sleeps = Sleeps()
    store, _ = open_flaky({"count": from_call(1, unavailable_503)}, sleeps, attempts=6)
    with pytest.raises(JointspaceError, match="tried 6 times"):
        store.count("items")
    ceilings = [0.01, 0.02, 0.04, 0.08, 0.08]  # base 0.01, doubling, capped at 0.08
    assert len(sleeps) == len(ceilings)
    for waited, ceiling in zip(sleeps, ceilings, strict=True):
        assert ceiling / 2 <= waited <= ceiling


def test_policy_delays_have_jitter_within_bounds() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=4.0)
    for retry, ceiling in enumerate([1.0, 2.0, 4.0, 4.0, 4.0]):
        delays = {policy.delay(retry) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered, not a fixed schedule
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_retry_after_of_a_rate_limit_is_honoured() -> None:
    sleeps = Sleeps()

    def plan(n: int, kwargs: dict[str, Any]) -> tuple[Exception, bool] | None:
        return (ResourceExhaustedResponse("Too many requests", 3), False) if n == 1 else None

    store, _ = open_flaky({"count": plan}, sleeps)
    assert store.count("items") == 0
    assert sleeps == [3.0]


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (http_status(400, "Wrong input: bad vector"), "rejected a request on collection 'items'"),
        (http_status(401, "Invalid api-key"), "refused the API key"),
        (http_status(403, "read-only"), "a read-only key can search but not write"),
        (FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad"), "rejected a request"),
        (FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "no"), "read-only key"),
    ],
)
def test_permanent_errors_are_not_retried(exc: Exception, message: str) -> None:
    sleeps = Sleeps()
    store, client = open_flaky({"upsert": lambda n, kwargs: (exc, False)}, sleeps)
    with pytest.raises(JointspaceError, match=message) as err:
        store.upsert("items", points(10))
    assert client.calls["upsert"] == 1
    assert sleeps == []
    assert SECRET not in str(err.value)


def test_the_key_is_scrubbed_from_server_text() -> None:
    leaky = http_status(503, f"upstream said: bad token {SECRET}")
    store, _ = open_flaky({"count": lambda n, kwargs: (leaky, False)}, Sleeps())
    with pytest.raises(JointspaceError) as err:
        store.count("items")
    assert SECRET not in str(err.value) and "***" in str(err.value)


def test_classification_of_real_client_exceptions() -> None:
    for make in TRANSIENT.values():
        assert is_transient(make()), make
    assert is_transient(http_status(500)) and is_transient(http_status(502))
    assert is_transient(ResourceExhaustedResponse("slow down", 1))
    assert is_transient(httpx.ReadTimeout("bare, unwrapped"))
    for permanent in (
        http_status(400),
        http_status(404),
        http_status(401),
        ResponseHandlingException(ValueError("response did not parse")),
        ResponseHandlingException(httpx.UnsupportedProtocol("ftp://")),
        FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "no"),
        ValueError("Collection items not found"),
        JointspaceError("already decided"),
    ):
        assert not is_transient(permanent), permanent


def test_call_with_retries_reports_tries_and_time() -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=3, base_delay=0.0, sleep=sleeps)
    with pytest.raises(GaveUp) as err:
        call_with_retries(lambda: (_ for _ in ()).throw(read_timeout()), policy, is_transient)
    assert err.value.attempts == 3 and len(sleeps) == 2
    assert isinstance(err.value.cause, ResponseHandlingException)


# -- options: sharding, bulk indexing -------------------------------------------------------------


class Recording(FlakyClient):
    """A FlakyClient that also records the keyword arguments of some calls."""

    def __init__(self, real: QdrantClient) -> None:
        super().__init__(real, {})
        self.kwargs: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        inner = super().__getattr__(method)
        if method not in ("create_collection", "update_collection"):
            return inner

        def call(*args: Any, **kwargs: Any) -> Any:
            self.kwargs.append((method, kwargs))
            return inner(*args, **kwargs)

        return call


def test_shards_and_replicas_reach_create_collection() -> None:
    client = Recording(QdrantClient(location=":memory:"))
    store = over(client, ServerOptions(shards=3, replicas=2))
    store.create_collection("items", DIMS, {"model": "m1"})
    (_, kwargs), *_ = [c for c in client.kwargs if c[0] == "create_collection"]
    assert kwargs["shard_number"] == 3 and kwargs["replication_factor"] == 2
    with pytest.raises(JointspaceError, match="at least 1"):
        ServerOptions(shards=0)


def test_default_sharding_is_left_to_the_server() -> None:
    client = Recording(QdrantClient(location=":memory:"))
    over(client).create_collection("items", DIMS, {"model": "m1"})
    (_, kwargs), *_ = [c for c in client.kwargs if c[0] == "create_collection"]
    assert "shard_number" not in kwargs and "replication_factor" not in kwargs


def _thresholds(client: Recording) -> list[int]:
    return [
        kwargs["optimizers_config"].indexing_threshold
        for method, kwargs in client.kwargs
        if method == "update_collection" and kwargs.get("optimizers_config")
    ]


def test_bulk_switches_indexing_off_and_restores_it() -> None:
    client = Recording(QdrantClient(location=":memory:"))
    store = over(client, ServerOptions(batch_size=50))
    store.create_collection("items", DIMS, {"model": "m1"})
    store.set_alias("live", "items")
    with store.bulk("live"):  # through an alias: the collection's settings change
        assert _thresholds(client) == [0]
        store.upsert("live", points(120))
    # Local mode reports Qdrant's default (20000 KB), which is what comes back.
    assert _thresholds(client) == [0, DEFAULT_INDEXING_THRESHOLD_KB]
    assert store.count("items") == 120
    store.end_bulk("items")  # nothing to restore: no further update
    assert _thresholds(client) == [0, DEFAULT_INDEXING_THRESHOLD_KB]


def test_bulk_indexing_is_restored_when_the_upload_fails() -> None:
    client = Recording(QdrantClient(location=":memory:"))
    store = over(client)
    store.create_collection("items", DIMS, {"model": "m1"})
    with pytest.raises(RuntimeError), store.bulk("items"):
        raise RuntimeError("the ingest broke")
    assert _thresholds(client) == [0, DEFAULT_INDEXING_THRESHOLD_KB]


def test_local_mode_never_uploads_in_parallel(tmp_path: Path) -> None:
    with ServerStore.local(tmp_path, ServerOptions(parallel=8, batch_size=20)) as store:
        assert isinstance(store, ServerStore) and store.options.parallel == 1
        store.create_collection("items", DIMS, {"model": "m1"})
        store.upsert("items", points(100))  # 5 requests, from this thread (SQLite insists)
        assert store.count("items") == 100


# -- against a stand-in HTTP server: the real client raising for real -----------------------------


class FakeQdrant(BaseHTTPRequestHandler):
    """Answers like a Qdrant server: GET / with its version, GET /collections with an empty
    list; `script` (a class attribute) decides per request number to fail instead."""

    version = "1.20.0"
    script: Callable[[int], str] = staticmethod(lambda n: "ok")
    served: Counter[str] = Counter()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.served[self.path] += 1
        action = self.script(self.served[self.path]) if self.path == "/collections" else "ok"
        if action == "drop":  # close the connection without an answer
            self.close_connection = True
            return
        if action == "503":
            return self._json(503, {"status": {"error": "Service unavailable"}, "time": 0.0})
        if self.path == "/":
            return self._json(200, {"title": "qdrant", "version": self.version, "commit": None})
        return self._json(200, {"result": {"collections": []}, "status": "ok", "time": 0.0})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_qdrant(request: pytest.FixtureRequest) -> Iterator[tuple[str, type[FakeQdrant]]]:
    version, script = getattr(request, "param", ("1.20.0", lambda n: "ok"))
    handler = type(
        "Handler",
        (FakeQdrant,),
        {"version": version, "script": staticmethod(script), "served": Counter()},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def _connect(url: str) -> ServerStore:
    policy = RetryPolicy(base_delay=0.001, max_delay=0.002)
    return ServerStore.connect(url, ServerOptions(api_key=SECRET, retry=policy))


@pytest.mark.parametrize(
    "fake_qdrant",
    # Request 1 is the probe at connect; then two failures of a real kind, then an answer.
    [("1.20.0", lambda n: {2: "503", 3: "drop"}.get(n, "ok"))],
    indirect=True,
)
def test_real_client_errors_are_retried(fake_qdrant: tuple[str, type[FakeQdrant]]) -> None:
    url, handler = fake_qdrant
    with _connect(url) as store:
        assert store.list_collections() == []
    assert handler.served["/collections"] == 4


@pytest.mark.parametrize(
    "fake_qdrant", [("1.20.0", lambda n: "503" if n > 1 else "ok")], indirect=True
)
def test_real_client_persistent_503(fake_qdrant: tuple[str, type[FakeQdrant]]) -> None:
    url, handler = fake_qdrant
    with _connect(url) as store, pytest.raises(JointspaceError, match="kept failing") as err:
        store.list_collections()
    assert f"Qdrant server at {url} kept failing" in str(err.value)
    assert SECRET not in str(err.value)
    assert handler.served["/collections"] == 1 + 5


def _client_version() -> tuple[int, int]:
    import importlib.metadata

    major, minor = importlib.metadata.version("qdrant-client").split(".")[:2]
    return int(major), int(minor)


def _server(major_delta: int, minor_delta: int) -> str:
    major, minor = _client_version()
    return f"{major + major_delta}.{max(minor + minor_delta, 0)}.3"


@pytest.mark.parametrize("fake_qdrant", [(_server(0, -1), lambda n: "ok")], indirect=True)
def test_one_minor_apart_is_fine(
    fake_qdrant: tuple[str, type[FakeQdrant]], caplog: pytest.LogCaptureFixture
) -> None:
    with _connect(fake_qdrant[0]) as store:
        assert store.server_version == _server(0, -1)
        assert store.server_version_warning is None
    assert "minor versions apart" not in caplog.text


@pytest.mark.parametrize("fake_qdrant", [(_server(0, -3), lambda n: "ok")], indirect=True)
def test_minor_versions_far_apart_warn(
    fake_qdrant: tuple[str, type[FakeQdrant]], caplog: pytest.LogCaptureFixture
) -> None:
    with _connect(fake_qdrant[0]) as store:
        assert store.server_version_warning is not None
        assert "3 minor versions apart" in store.server_version_warning
    assert "3 minor versions apart" in caplog.text and SECRET not in caplog.text


@pytest.mark.parametrize("fake_qdrant", [(_server(1, 0), lambda n: "ok")], indirect=True)
def test_major_version_mismatch_is_an_error(fake_qdrant: tuple[str, type[FakeQdrant]]) -> None:
    with pytest.raises(JointspaceError, match="major versions differ") as err:
        _connect(fake_qdrant[0])
    assert _server(1, 0) in str(err.value) and SECRET not in str(err.value)


def test_version_gap() -> None:
    assert version_gap("1.20.0", "1.20.5") == (0, 0)
    assert version_gap("1.20.0", "v1.18.2") == (0, 2)
    assert version_gap("1.20.0", "2.0.0") == (1, 0)
    assert version_gap("1.20.0", "dev") is None


# -- options ---------------------------------------------------------------------------------------


def test_server_options_hide_the_key_and_check_their_values() -> None:
    options = ServerOptions(api_key=SECRET, timeout=5, shards=2)
    assert SECRET not in repr(options) and "timeout=5" in repr(options)
    for bad in ({"shards": 0}, {"replicas": 0}, {"batch_size": 0}, {"parallel": 0}, {"timeout": 0}):
        with pytest.raises(JointspaceError, match="at least 1|positive"):
            ServerOptions(**bad)


@pytest.mark.parametrize("fake_qdrant", [("1.20.0", lambda n: "ok")], indirect=True)
def test_open_store_passes_the_options(fake_qdrant: tuple[str, type[FakeQdrant]]) -> None:
    url, handler = fake_qdrant
    options = ServerOptions(api_key=SECRET, prefer_grpc=False, timeout=7, batch_size=64)
    with open_store(home=Path("unused"), url=url, options=options) as store:
        assert isinstance(store, ServerStore)
        assert store.options is options and store.where == f"the Qdrant server at {url}"
        assert store.server_version == "1.20.0"
    assert handler.served["/collections"] == 1  # the probe


def test_local_mode_has_no_snapshots_nor_parallel_uploads(tmp_path: Path) -> None:
    with ServerStore.local(tmp_path, ServerOptions(parallel=4)) as store:
        assert store.options.parallel == 1 and store.supports_snapshots is False
        assert store.where == f"the local Qdrant folder {tmp_path}"

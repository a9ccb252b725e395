"""Fetching http(s) images against a real HTTP server on 127.0.0.1, started by the tests."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from PIL import Image

from jointspace.corpus.images import decode_image, image_name, read_image_bytes
from jointspace.corpus.item import Item, Skipped
from jointspace.corpus.remote import fetch_remote_images

FAST = {"timeout": 2.0, "backoff": 0.01}
# How long the server or a test waits for an event that should come at once: a broken test fails
# (or a handler gives up) instead of hanging. No assertion measures time.
GUARD = 30.0


def _png(color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 2), color).save(out, "PNG")
    return out.getvalue()


class _Server(ThreadingHTTPServer):
    """Records what happened: requests per path, how many ran at once, which finished in what
    order, how much a streaming response sent and whether the client hung up on it."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: Counter[str] = Counter()
        self.lock = threading.Condition()
        self.active = 0
        self.max_active = 0
        self.sent: dict[str, int] = {}
        self.ended: dict[str, str] = {}  # response id -> "complete" or "hung up"
        self.finished: dict[str, list[str]] = {}  # tag -> paths, in the order they finished
        self._events: dict[str, threading.Event] = {}
        self._barriers: dict[str, threading.Barrier] = {}

    def event(self, name: str) -> threading.Event:
        """The event `name`: a gate that /hold waits on, or "ended:ID" for a response's end."""
        with self.lock:
            return self._events.setdefault(name, threading.Event())

    def barrier(self, name: str, parties: int) -> threading.Barrier:
        with self.lock:
            return self._barriers.setdefault(name, threading.Barrier(parties, timeout=GUARD))

    def wait_ended(self, response_id: str) -> str:
        """How the response `response_id` ended, once its handler is done."""
        assert self.event(f"ended:{response_id}").wait(GUARD), f"{response_id} never ended"
        return self.ended[response_id]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        server = self.server
        with server.lock:
            server.hits[self.path] += 1
            hits = server.hits[self.path]
            server.active += 1
            server.max_active = max(server.max_active, server.active)
        try:
            self._respond(url.path, hits, query)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with server.lock:
                server.active -= 1
                if "tag" in query:
                    server.finished.setdefault(query["tag"], []).append(self.path)
                server.lock.notify_all()

    def _respond(self, path: str, hits: int, query: dict[str, str]) -> None:
        if "after" in query:  # answer only once `after` requests of the same tag have finished
            with self.server.lock:
                done = self.server.lock.wait_for(
                    lambda: len(self.server.finished.get(query["tag"], [])) >= int(query["after"]),
                    GUARD,
                )
            if not done:
                return self._send(500, b"the others never finished")
        if "barrier" in query:  # answer only once `barrier` requests are running at the same time
            try:
                self.server.barrier(query["name"], int(query["barrier"])).wait()
            except threading.BrokenBarrierError:
                return self._send(500, b"not enough requests at once")
        if path.startswith("/img/"):
            self._send(200, _png(path.removeprefix("/img/").removesuffix(".png")))
        elif path == "/hold":  # answer once the test opens the gate
            self.server.event(query["gate"]).wait(GUARD)
            self._send(200, _png("red"))
        elif path == "/missing":
            self._send(404, b"not found")
        elif path == "/flaky":
            self._send(503, b"busy") if hits == 1 else self._send(200, _png("green"))
        elif path == "/down":
            self._send(503, b"busy")
        elif path == "/drip":  # 200 bytes, one every 50 ms: 10 s in all
            self._stream(query["id"], b"x", 200, pause=0.05)
        elif path == "/big":
            self._send(200, b"x" * 5000)
        elif path == "/endless":  # no Content-Length: only reading tells the size
            self._stream(query["id"], b"x" * 65536, 200 * 16, length=False)
        elif path == "/to-ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/x.png")
            self.end_headers()
        elif path == "/to-img":
            self.send_response(302)
            self.send_header("Location", "/img/blue.png")
            self.end_headers()
        else:
            self._send(500, b"unexpected")

    def _stream(
        self, response_id: str, chunk: bytes, count: int, pause: float = 0.0, length: bool = True
    ) -> None:
        """Send `chunk` `count` times; record how much went out and whether the client hung up
        before the end."""
        server = self.server
        server.sent[response_id], server.ended[response_id] = 0, "hung up"
        try:
            self.send_response(200)
            if length:
                self.send_header("Content-Length", str(len(chunk) * count))
            self.end_headers()
            for _ in range(count):
                self.wfile.write(chunk)
                self.wfile.flush()
                server.sent[response_id] += len(chunk)
                if pause:
                    time.sleep(pause)  # the server being slow is the case under test
            server.ended[response_id] = "complete"
        finally:
            server.event(f"ended:{response_id}").set()

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(server: _Server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def _item(key: str, image: str | None, **fields: object) -> Item:
    return Item(source="test", key=key, image=image, **fields)  # type: ignore[arg-type]


def test_fetches_in_order(server: _Server) -> None:
    colors = ["red", "green", "blue", "white", "black", "yellow"]
    # The server answers the first download only after the five others: it finishes last.
    items = [
        _item(c, _url(server, f"/img/{c}.png?tag=order" + ("&after=5" if i == 0 else "")))
        for i, c in enumerate(colors)
    ]
    out = list(fetch_remote_images(items, workers=3, **FAST))
    with server.lock:  # a handler records its request after sending the response
        assert server.lock.wait_for(lambda: len(server.finished.get("order", [])) == 6, GUARD)
    assert server.finished["order"][-1].startswith("/img/red.png")
    assert [r.key for r in out] == colors  # yet it comes out first
    for record, color in zip(out, colors, strict=True):
        assert isinstance(record, Item)
        assert record.image == items[colors.index(color)].image  # the URL stays as the URI
        assert record.image_bytes == _png(color)
        assert decode_image(read_image_bytes(record), image_name(record)).size == (3, 2)


def test_failures_become_skipped(server: _Server) -> None:
    items = [
        _item("missing", _url(server, "/missing")),
        _item("slow", _url(server, "/hold?gate=slow")),  # held until the client gives up
        _item("big", _url(server, "/big")),
        _item("ok", _url(server, "/to-img")),
        _item("to-ftp", _url(server, "/to-ftp")),
    ]
    try:
        out = list(fetch_remote_images(items, timeout=0.5, max_bytes=1000, backoff=0.01))
    finally:
        server.event("slow").set()
    reasons = {r.key: r.reason for r in out if isinstance(r, Skipped)}
    assert reasons == {
        "missing": "download failed: HTTP 404",
        "slow": "download timed out",
        "big": "download exceeds 1000 bytes",
        "to-ftp": "download failed: redirect to unsupported url scheme ftp",
    }
    assert out[3].image_bytes == _png("blue")  # type: ignore[union-attr]
    assert server.hits["/missing"] == 1  # 4xx: never retried
    assert server.hits["/hold?gate=slow"] == 1  # time-outs: not retried
    assert [r.locator for r in out if isinstance(r, Skipped)] == [  # the URL points back
        items[i].image for i in (0, 1, 2, 4)
    ]


def test_drip_fed_download_times_out(server: _Server) -> None:
    # Each byte comes well within the 0.3 s time-out, but the whole would take 10 s.
    [out] = fetch_remote_images([_item("drip", _url(server, "/drip?id=drip"))], timeout=0.3)
    assert out == Skipped("test", "drip", "download timed out")
    # The client gave up on the download: the server saw it hang up before the last byte.
    assert server.wait_ended("drip") == "hung up"
    assert server.sent["drip"] < 200


def test_size_cap_stops_reading(server: _Server) -> None:
    [out] = fetch_remote_images([_item("e", _url(server, "/endless?id=cap"))], max_bytes=10_000)
    assert out == Skipped("test", "e", "download exceeds 10000 bytes")
    # The client hung up: the server managed to send what socket buffers hold, not 200 MB.
    assert server.wait_ended("cap") == "hung up"
    assert server.sent["cap"] < 50 * 1024 * 1024


def test_retries_5xx_then_succeeds(server: _Server) -> None:
    [out] = fetch_remote_images([_item("f", _url(server, "/flaky"))], retries=2, **FAST)
    assert isinstance(out, Item) and out.image_bytes == _png("green")
    assert server.hits["/flaky"] == 2
    [down] = fetch_remote_images([_item("d", _url(server, "/down"))], retries=2, **FAST)
    assert down == Skipped("test", "d", "download failed: HTTP 503")
    assert server.hits["/down"] == 3


def test_connection_refused_is_retried_then_skipped() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    [out] = fetch_remote_images([_item("r", f"http://127.0.0.1:{port}/a.png")], **FAST)
    assert out == Skipped("test", "r", "download failed: connection refused")


def test_other_schemes_are_never_fetched(server: _Server, tmp_path: Path) -> None:
    local = tmp_path / "a.png"
    local.write_bytes(_png("red"))
    items = [
        _item("file", local.as_uri()),
        _item("ftp", "ftp://127.0.0.1/a.png"),
        _item("gopher", "GOPHER://127.0.0.1/a.png"),
    ]
    before = sum(server.hits.values())
    out = list(fetch_remote_images(items, **FAST))
    assert [(r.key, r.reason) for r in out] == [  # type: ignore[union-attr]
        ("file", "unsupported image url scheme: file"),
        ("ftp", "unsupported image url scheme: ftp"),
        ("gopher", "unsupported image url scheme: gopher"),
    ]
    assert sum(server.hits.values()) == before


def test_other_records_pass_through_unchanged(server: _Server, tmp_path: Path) -> None:
    records = [
        _item("local", str(tmp_path / "a.png")),
        _item("text", None, text="Only words."),
        Skipped("test", "bad", "caption is not valid utf-8"),
        _item("inline", _url(server, "/missing"), image_bytes=b"already here"),
        _item("relative", "img/a:b.png"),
    ]
    before = sum(server.hits.values())
    out = list(fetch_remote_images(records, **FAST))
    assert all(a is b for a, b in zip(out, records, strict=True))
    assert sum(server.hits.values()) == before


def test_bounded_in_flight_and_lookahead(server: _Server) -> None:
    server.max_active = 0
    pulled = 0

    def records() -> Iterator[Item]:
        nonlocal pulled
        for i in range(40):
            pulled += 1
            # The server answers the first four only when all four are running at once.
            wait = "&barrier=4&name=bounded" if i < 4 else ""
            yield _item(f"k{i}", _url(server, f"/img/red.png?n={i}{wait}"))

    stream = fetch_remote_images(records(), workers=4, **FAST)
    first = next(stream)
    assert first.key == "k0"
    assert pulled <= 2 * 4 + 1  # never the whole stream ahead of the consumer
    rest = list(stream)
    assert [r.key for r in [first, *rest]] == [f"k{i}" for i in range(40)]
    assert all(isinstance(r, Item) for r in [first, *rest])  # the four ran together
    assert server.max_active <= 4


def test_stopping_early_does_not_hang(server: _Server) -> None:
    # The first download is answered; the others are held until the stream has been closed.
    items = [_item("k0", _url(server, "/img/red.png?stop=0"))]
    items += [_item(f"k{i}", _url(server, f"/hold?gate=stop&stop={i}")) for i in range(1, 50)]
    stream = fetch_remote_images(items, workers=4, timeout=GUARD, backoff=0.01)
    assert next(stream).key == "k0"
    closer = threading.Thread(target=stream.close)  # type: ignore[attr-defined]
    closer.start()
    closer.join(GUARD)  # close() must not wait for the held downloads: they end after it
    returned = not closer.is_alive()
    server.event("stop").set()
    closer.join()
    assert returned, "closing the stream waited for running downloads"
    with server.lock:  # the held downloads end
        assert server.lock.wait_for(lambda: server.active == 0, GUARD)
    started = sum(n for p, n in server.hits.items() if "stop=" in p)
    assert started <= 1 + 4  # the first and at most one per worker: queued ones were dropped


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        fetch_remote_images([], workers=0)
    with pytest.raises(ValueError):
        fetch_remote_images([], retries=-1)

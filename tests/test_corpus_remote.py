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


def _png(color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 2), color).save(out, "PNG")
    return out.getvalue()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.sent: dict[str, int] = {}


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
            time.sleep(float(query.get("delay", 0)))
            self._respond(url.path, hits, query)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with server.lock:
                server.active -= 1

    def _respond(self, path: str, hits: int, query: dict[str, str]) -> None:
        if path.startswith("/img/"):
            self._send(200, _png(path.removeprefix("/img/").removesuffix(".png")))
        elif path == "/missing":
            self._send(404, b"not found")
        elif path == "/flaky":
            self._send(503, b"busy") if hits == 1 else self._send(200, _png("green"))
        elif path == "/down":
            self._send(503, b"busy")
        elif path == "/slow":
            time.sleep(1.5)
            self._send(200, _png("red"))
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif path == "/big":
            self._send(200, b"x" * 5000)
        elif path == "/endless":  # no Content-Length: only reading tells the size
            self.send_response(200)
            self.end_headers()
            sent, chunk = 0, b"x" * 65536
            self.server.sent[query["id"]] = 0
            while sent < 200 * 1024 * 1024:
                self.wfile.write(chunk)
                sent += len(chunk)
                self.server.sent[query["id"]] = sent
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
    # The first download is the slowest: order must still be the input order.
    items = [
        _item(c, _url(server, f"/img/{c}.png?delay={0.3 if i == 0 else 0}"))
        for i, c in enumerate(colors)
    ]
    out = list(fetch_remote_images(items, workers=3, **FAST))
    assert [r.key for r in out] == colors
    for record, color in zip(out, colors, strict=True):
        assert isinstance(record, Item)
        assert record.image == items[colors.index(color)].image  # the URL stays as the URI
        assert record.image_bytes == _png(color)
        assert decode_image(read_image_bytes(record), image_name(record)).size == (3, 2)


def test_failures_become_skipped(server: _Server) -> None:
    items = [
        _item("missing", _url(server, "/missing")),
        _item("slow", _url(server, "/slow")),
        _item("big", _url(server, "/big")),
        _item("ok", _url(server, "/to-img")),
        _item("to-ftp", _url(server, "/to-ftp")),
    ]
    out = list(fetch_remote_images(items, timeout=0.5, max_bytes=1000, backoff=0.01))
    reasons = {r.key: r.reason for r in out if isinstance(r, Skipped)}
    assert reasons == {
        "missing": "download failed: HTTP 404",
        "slow": "download timed out",
        "big": "download exceeds 1000 bytes",
        "to-ftp": "download failed: redirect to unsupported url scheme ftp",
    }
    assert out[3].image_bytes == _png("blue")  # type: ignore[union-attr]
    assert server.hits["/missing"] == 1  # 4xx: never retried
    assert server.hits["/slow"] == 1  # time-outs: not retried


def test_drip_fed_download_times_out(server: _Server) -> None:
    start = time.monotonic()
    [out] = fetch_remote_images([_item("drip", _url(server, "/drip"))], timeout=0.3)
    assert out == Skipped("test", "drip", "download timed out")
    assert time.monotonic() - start < 2.5  # the server would take 5 s


def test_size_cap_stops_reading(server: _Server) -> None:
    start = time.monotonic()
    [out] = fetch_remote_images([_item("e", _url(server, "/endless?id=cap"))], max_bytes=10_000)
    assert out == Skipped("test", "e", "download exceeds 10000 bytes")
    assert time.monotonic() - start < 5
    time.sleep(0.2)
    # The client hung up: the server managed to send what socket buffers hold, not 200 MB.
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
            yield _item(f"k{i}", _url(server, f"/img/red.png?delay=0.05&n={i}"))

    stream = fetch_remote_images(records(), workers=4, **FAST)
    first = next(stream)
    assert first.key == "k0"
    assert pulled <= 2 * 4 + 1  # never the whole stream ahead of the consumer
    rest = list(stream)
    assert [r.key for r in rest] == [f"k{i}" for i in range(1, 40)]
    assert 1 < server.max_active <= 4


def test_stopping_early_does_not_hang(server: _Server) -> None:
    items = [_item(f"k{i}", _url(server, f"/img/red.png?delay=0.2&stop={i}")) for i in range(50)]
    start = time.monotonic()
    stream = fetch_remote_images(items, workers=4, **FAST)
    assert next(stream).key == "k0"
    stream.close()  # type: ignore[attr-defined]
    assert time.monotonic() - start < 2
    time.sleep(0.5)
    assert sum(1 for p in server.hits if "stop=" in p) < 50  # queued downloads were dropped


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        fetch_remote_images([], workers=0)
    with pytest.raises(ValueError):
        fetch_remote_images([], retries=-1)

"""The HTTP service (`jointspace serve`) over a real tiny collection: FastAPI's TestClient
against the real app, and one real `jointspace serve` process on a loopback port.

The collection: the six photos of conftest.py (a folder corpus, path images), an SVG, a JSONL
manifest with an inline image (a data: URI) and a text-only row, and a JSONL manifest whose
image is an http URL on a local http.server; embedded with the tiny random backbone and an
untrained gated encoder (seconds)."""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import CAPTIONS, cli_env, invoke, photo, run_cli
from fastapi.testclient import TestClient
from PIL import Image

import jointspace as js
from jointspace.serve import ServiceSettings, create_app

COLLECTION = "photos"
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
    b'<circle cx="10" cy="10" r="8" fill="red"/></svg>'
)


# -- the collection ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_server(corpus: Path) -> Iterator[str]:
    """The photo corpus over HTTP on a loopback port (for URL queries and URL images)."""
    handler = functools.partial(_QuietHandler, directory=str(corpus))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def sources(
    corpus: Path, image_server: str, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """The photos, an SVG, an inline image with a text-only row, and an image at a URL."""
    extras = tmp_path_factory.mktemp("serve-extras")
    shapes = extras / "shapes"
    (shapes / "round").mkdir(parents=True)
    (shapes / "round" / "circle.svg").write_bytes(SVG)
    (shapes / "round" / "circle.txt").write_text("A red circle.\n")
    jpeg = io.BytesIO()
    photo("rocket").save(jpeg, "JPEG")
    inline = extras / "inline.jsonl"
    rows = [
        {
            "image": "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode(),
            "text": "An inline rocket.",
            "label": "inline",
        },
        {"text": "Only words, no picture.", "label": "inline"},
    ]
    inline.write_text("".join(json.dumps(row) + "\n" for row in rows))
    remote = extras / "remote.jsonl"
    row = {"image": f"{image_server}/animals/astronaut.png", "text": "A fetched astronaut."}
    remote.write_text(json.dumps({**row, "label": "remote"}) + "\n")
    return [corpus, shapes, inline, remote]


POINTS = len(CAPTIONS) + 4  # the photos, the circle, two inline rows, the remote one


def _ingest(home: Path, sources: list[Path], model: Path) -> None:
    with js.connect(home=home) as space:
        report = space.ingest(sources, collection=COLLECTION, model=model)
    assert report.ingested == POINTS, report.to_dict()


@pytest.fixture(scope="module")
def home(sources: list[Path], tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The home the module's service holds."""
    home = tmp_path_factory.mktemp("serve-home")
    _ingest(home, sources, tiny_model)
    return home


@pytest.fixture(scope="module")
def other_home(
    sources: list[Path], tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A second home with the same collection, for services with other settings (one at a
    time: a service holds its embedded collections)."""
    home = tmp_path_factory.mktemp("serve-other-home")
    _ingest(home, sources, tiny_model)
    return home


@pytest.fixture(scope="module")
def client(home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServiceSettings(home=home, collections=(COLLECTION,)))) as client:
        yield client


@pytest.fixture(scope="module")
def ids(client: TestClient) -> dict[str, str]:
    """Point ids by caption."""
    body = client.post("/search", json={"text": "anything", "k": 50}).json()
    return {hit["text"]: hit["id"] for hit in body["results"]}


def _png(name: str) -> bytes:
    out = io.BytesIO()
    photo(name).save(out, "PNG")
    return out.getvalue()


def _assert_error(response: httpx.Response, status: int, kind: str, *words: str) -> str:
    """An error document, one sentence, no traceback."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"kind", "message"}, body
    assert body["error"]["kind"] == kind, body
    message = body["error"]["message"]
    assert message.endswith(".") and "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


# -- search --------------------------------------------------------------------------------------


def test_search_by_text(client: TestClient, home: Path, tiny_model: Path) -> None:
    response = client.post("/search", json={"collection": COLLECTION, "text": "coffee", "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"collection", "target", "k", "query", "model_id", "took_ms", "results"}
    assert (body["collection"], body["target"], body["k"]) == (COLLECTION, "unit", 3)
    assert body["query"] == {"text": "coffee", "image": None, "id": None}
    assert body["model_id"] == js.load_model(tiny_model).model_id
    assert body["took_ms"] >= 0
    results = body["results"]
    assert len(results) == 3
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    for hit in results:
        keys = {"id", "score", "text", "image", "labels", "source", "ref", "payload", "thumbnail"}
        assert set(hit) == keys
        if hit["image"]:
            assert hit["thumbnail"] == f"/items/{COLLECTION}/{hit['id']}/image"
    # the same hits as the Python API's (the service is a face over it)
    response = client.post("/search", json={"text": "coffee", "k": POINTS})
    assert len(response.json()["results"]) == POINTS


def test_search_as_curl_sends_it(client: TestClient) -> None:
    """`curl -d '{"text": "penguin", "k": 5}'`: JSON with a form's content type, no
    collection (the service serves one)."""
    response = client.post(
        "/search",
        content=b'{"text": "cat", "k": 5}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 5


def test_search_by_base64_image_and_data_uri(client: TestClient) -> None:
    encoded = base64.b64encode(_png("cat")).decode()
    for image in (encoded, f"data:image/png;base64,{encoded}"):
        response = client.post("/search", json={"image": image, "target": "image", "k": 1})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["query"]["image"] == "<upload>"
        assert body["results"][0]["payload"]["key"] == "animals/cat.png"


def test_search_by_multipart_upload(client: TestClient) -> None:
    response = client.post(
        "/search",
        data={"collection": COLLECTION, "target": "image", "k": "2", "text": ""},
        files={"image": ("cat.png", _png("cat"), "image/png")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == {"text": None, "image": "<upload>", "id": None}
    assert body["k"] == 2 and body["results"][0]["payload"]["key"] == "animals/cat.png"
    # text + image (a unit), with a where as JSON text
    response = client.post(
        "/search",
        data={"text": "a cat", "where": json.dumps({"labels": "animals"}), "k": "10"},
        files={"image": ("cat.png", _png("cat"), "image/png")},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results and all("animals" in hit["labels"] for hit in results)


def test_search_by_url(client: TestClient, image_server: str) -> None:
    url = f"{image_server}/animals/cat.png"
    response = client.post("/search", json={"image": url, "target": "image", "k": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"]["image"] == url
    assert body["results"][0]["payload"]["key"] == "animals/cat.png"


def test_search_by_id(client: TestClient, ids: dict[str, str]) -> None:
    cat = ids[CAPTIONS["animals/cat.png"]]
    response = client.post("/search", json={"id": cat, "k": 3, "target": "image"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == {"text": None, "image": None, "id": cat}
    assert len(body["results"]) == 3 and cat not in {hit["id"] for hit in body["results"]}


def test_search_with_where(client: TestClient) -> None:
    for where, label in (({"labels": "food"}, "food"), ({"labels": ["inline", "remote"]}, None)):
        response = client.post("/search", json={"text": "a cup", "k": 20, "where": where})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert results
        for hit in results:
            assert set(hit["labels"]) & ({label} if label else {"inline", "remote"})
    response = client.post("/search", json={"text": "x", "k": 20, "where": {"width": {"gte": 1}}})
    assert response.status_code == 200, response.text
    assert all(hit["payload"]["width"] >= 1 for hit in response.json()["results"])


def test_embed(client: TestClient, home: Path) -> None:
    response = client.post("/embed", json={"text": "a cat", "target": "text"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"using", "vector", "dim", "model_id"}
    assert body["using"] == "text" and body["dim"] == len(body["vector"]) == 16
    assert abs(sum(v * v for v in body["vector"]) - 1) < 1e-4
    image = base64.b64encode(_png("cat")).decode()
    response = client.post("/embed", json={"image": image, "text": "a cat"})
    assert response.status_code == 200 and response.json()["using"] == "unit"


# -- collections, images, health ---------------------------------------------------------------


def test_collections(client: TestClient, tiny_model: Path) -> None:
    response = client.get("/collections")
    assert response.status_code == 200, response.text
    [summary] = response.json()["collections"]
    assert (summary["name"], summary["points"], summary["state"]) == (COLLECTION, POINTS, "ready")
    assert summary["metadata"]["model_id"] == js.load_model(tiny_model).model_id
    assert "labels" in summary["filterable"]
    detail = client.get(f"/collections/{COLLECTION}").json()
    assert detail["name"] == COLLECTION and detail["points"] == POINTS
    labels = {entry["label"]: entry["count"] for entry in detail["labels"]}
    assert labels["animals"] == 2 and labels["inline"] == 2 and labels["food"] == 2
    counts = [entry["count"] for entry in detail["labels"]]
    assert counts == sorted(counts, reverse=True)


def test_item_image_of_a_path(client: TestClient, ids: dict[str, str], corpus: Path) -> None:
    cat = ids[CAPTIONS["animals/cat.png"]]
    thumb = client.get(f"/items/{COLLECTION}/{cat}/image")
    assert thumb.status_code == 200, thumb.text
    assert thumb.headers["content-type"] == "image/jpeg"
    assert thumb.headers["x-content-type-options"] == "nosniff"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert image.format == "JPEG" and max(image.size) <= 256
    full = client.get(f"/items/{COLLECTION}/{cat}/image", params={"size": "full"})
    assert full.status_code == 200 and full.headers["content-type"] == "image/png"
    assert full.content == (corpus / "animals" / "cat.png").read_bytes()
    assert client.get(f"/items/{COLLECTION}/{cat}/image").content == thumb.content  # cached


def test_item_image_of_an_inline_image(client: TestClient, ids: dict[str, str], home: Path):
    rocket = ids["An inline rocket."]
    stored = list((home / "thumbnails").rglob("*.jpg"))
    assert len(stored) == 1, stored  # ingest kept a thumbnail of the one inline image
    for size in ("thumb", "full"):
        response = client.get(f"/items/{COLLECTION}/{rocket}/image", params={"size": size})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/jpeg"
        assert response.content == stored[0].read_bytes()


def test_item_image_of_an_svg_and_a_url(client: TestClient, ids: dict[str, str]) -> None:
    circle = ids["A red circle."]
    full = client.get(f"/items/{COLLECTION}/{circle}/image", params={"size": "full"})
    assert full.status_code == 200 and full.headers["content-type"] == "image/png"  # rendered
    with Image.open(io.BytesIO(full.content)) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]
    astronaut = ids["A fetched astronaut."]
    thumb = client.get(f"/items/{COLLECTION}/{astronaut}/image")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


def test_healthz_metrics_docs_and_page(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health == {
        "status": "ok",
        "collections": [COLLECTION],
        "model_loaded": {COLLECTION: True},
    }
    client.post("/search", json={"text": "cat"})
    client.get("/collections/nope")
    text = client.get("/metrics").text
    assert 'jointspace_requests_total{method="POST",route="/search",status="200"}' in text
    assert 'jointspace_request_seconds_bucket{le="0.005",route="/search"}' in text
    assert 'jointspace_errors_total{kind="not_found"}' in text
    assert "jointspace_queue_depth 0.0" in text
    assert 'route="/collections/{name}"' in text  # templates, not paths
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = client.get("/openapi.json").json()
    assert {
        "/search",
        "/embed",
        "/collections",
        "/collections/{name}",
        "/items/{collection}/{id}/image",
        "/healthz",
        "/metrics",
    } <= set(schema["paths"])
    search_body = schema["paths"]["/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(search_body)
    index = Path(js.__file__).parent / "serve" / "static" / "index.html"
    if index.is_file():  # the page is another change's; it is served when installed
        page = client.get("/?q=cat")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_thumbnails_are_small_jpegs_and_skip_what_fails(tmp_path: Path) -> None:
    from jointspace.corpus.thumbnails import make_thumbnail, save_thumbnail, thumbnail_path

    big = io.BytesIO()
    photo("coffee").resize((1000, 600)).save(big, "JPEG")
    with Image.open(io.BytesIO(make_thumbnail(big.getvalue(), "coffee.jpg"))) as image:
        assert (image.format, image.size) == ("JPEG", (256, 154))
    with Image.open(io.BytesIO(make_thumbnail(SVG, "circle.svg"))) as image:
        assert image.format == "JPEG" and image.size[0] == 256  # rendered, then made small
    sha = "ab" + "0" * 62
    assert save_thumbnail(tmp_path, sha, big.getvalue(), "coffee.jpg")
    path = thumbnail_path(tmp_path, sha)
    assert path == tmp_path / "ab" / f"{sha}.jpg" and path.is_file()
    assert save_thumbnail(tmp_path, sha, b"changed", "x")  # there already: kept, not redone
    assert not save_thumbnail(tmp_path, "cd" + "0" * 62, b"not an image", "x.png")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ab", path.name]  # no debris


def test_the_listening_socket_says_tcp() -> None:
    """asyncio sets TCP_NODELAY only on sockets created with IPPROTO_TCP; without it every
    keep-alive answer waits for a delayed ACK (~40 ms)."""
    from jointspace.serve.app import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


# -- bad input -----------------------------------------------------------------------------------

NOT_A_UUID = "not-a-point"


@pytest.mark.parametrize(
    ("body", "status", "kind", "words"),
    [
        ({"collection": "nope", "text": "x"}, 404, "not_found", ("nope", COLLECTION)),
        ({"id": str(uuid.uuid4())}, 404, "not_found", ("no point",)),
        ({"id": NOT_A_UUID}, 404, "not_found", ()),
        ({"text": "x", "where": {"labels": {"near": 1}}}, 422, "invalid_query", ("operator",)),
        ({"text": "x", "where": {"colour": "red"}}, 422, "invalid_query", ("filterable",)),
        ({"text": "x", "where": "labels=food"}, 422, "invalid_query", ("where",)),
        ({"text": "x", "target": "video"}, 422, "invalid_query", ("target",)),
        ({"text": "x", "k": 0}, 422, "invalid_query", ("k",)),
        ({"text": "x", "k": 201}, 422, "invalid_query", ("k", "200")),
        ({"text": "   "}, 422, "invalid_query", ("empty",)),
        ({}, 422, "invalid_query", ("Give a query",)),
        ({"text": "x", "id": str(uuid.uuid4())}, 422, "invalid_query", ("not both",)),
        ({"text": "x", "query": "y"}, 422, "invalid_query", ("query",)),
        ({"image": "/etc/passwd"}, 422, "invalid_image", ()),
        ({"image": "bm90IGFuIGltYWdl"}, 422, "invalid_image", ("not an image",)),
        ({"image": "data:text/plain,hello"}, 422, "invalid_image", ("base64",)),
        ({"image": 12}, 422, "invalid_query", ("image",)),
    ],
)
def test_bad_searches_are_one_sentence(
    client: TestClient, body: dict, status: int, kind: str, words: tuple[str, ...]
) -> None:
    _assert_error(client.post("/search", json=body), status, kind, *words)


def test_bad_bodies_and_routes(client: TestClient, ids: dict[str, str]) -> None:
    _assert_error(client.post("/search", content=b"{nope"), 422, "invalid_query", "JSON")
    _assert_error(client.post("/search", content=b"[1, 2]"), 422, "invalid_query", "object")
    _assert_error(
        client.post("/search", data={"k": "3"}, files={"image": ("a.png", b"hello", "text/plain")}),
        422,
        "invalid_image",
        "not an image",
    )
    _assert_error(client.post("/embed", json={"text": ""}), 422, "invalid_query", "empty")
    _assert_error(client.get("/collections/nope"), 404, "not_found", "nope")
    _assert_error(client.get("/nowhere"), 404, "not_found")
    _assert_error(client.get("/search"), 405, "method_not_allowed")


def test_item_image_errors(client: TestClient, ids: dict[str, str]) -> None:
    words = ids["Only words, no picture."]
    base = f"/items/{COLLECTION}"
    _assert_error(client.get(f"{base}/{words}/image"), 404, "not_found", "no image")
    _assert_error(client.get(f"{base}/{uuid.uuid4()}/image"), 404, "not_found")
    _assert_error(client.get(f"{base}/{NOT_A_UUID}/image"), 404, "not_found")
    _assert_error(client.get(f"/items/nope/{words}/image"), 404, "not_found")
    cat = ids[CAPTIONS["animals/cat.png"]]
    _assert_error(client.get(f"{base}/{cat}/image?size=huge"), 422, "invalid_query", "size")
    # a path in the request is never read: ids are looked up, not opened
    response = client.get(f"{base}/..%2F..%2Fetc%2Fpasswd/image")
    assert response.status_code == 404 and "root:" not in response.text


def test_an_upload_over_the_cap_is_413(client: TestClient) -> None:
    big = b"\xff\xd8" + bytes(16 * 1024 * 1024)
    files = {"image": ("big.jpg", big, "image/jpeg")}
    _assert_error(client.post("/search", files=files), 413, "too_large", "16")
    _assert_error(
        client.post("/search", json={"image": base64.b64encode(big).decode()}), 413, "too_large"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body is counted as it comes
        yield b'{"image": "'
        for _ in range(24):
            yield b"A" * (1024 * 1024)
        yield b'"}'

    _assert_error(client.post("/search", content=chunks()), 413, "too_large")


# -- auth, overload, disconnects (a service with other settings, on the other home) --------------


def _service(home: Path, **settings: object) -> TestClient:
    app = create_app(ServiceSettings(home=home, collections=(COLLECTION,), **settings))
    return TestClient(app)


def test_api_key(other_home: Path, ids: dict[str, str]) -> None:
    with _service(other_home, api_key="s3cret") as client:
        assert client.get("/healthz").status_code == 200  # load balancers need no key
        response = client.get("/collections")
        _assert_error(response, 401, "missing_key", "X-API-Key")
        assert response.headers["www-authenticate"] == "Bearer"
        _assert_error(client.get("/collections", headers={"X-API-Key": "nope"}), 403, "wrong_key")
        _assert_error(client.post("/search", json={"text": "cat"}), 401, "missing_key")
        _assert_error(client.get("/metrics"), 401, "missing_key")
        for how in (
            {"headers": {"X-API-Key": "s3cret"}},
            {"headers": {"Authorization": "Bearer s3cret"}},
            {"params": {"api_key": "s3cret"}},
        ):
            assert client.get("/collections", **how).status_code == 200, how
        cat = ids[CAPTIONS["animals/cat.png"]]  # same corpus, same point ids
        image = client.get(f"/items/{COLLECTION}/{cat}/image", params={"api_key": "s3cret"})
        assert image.status_code == 200  # an <img> tag sends the key in its URL
        response = client.post("/search", json={"text": "cat"}, headers={"X-API-Key": "s3cret"})
        assert response.status_code == 200
        assert client.get("/docs").status_code == 200  # the docs and the page hold no data
        if (Path(js.__file__).parent / "serve" / "static" / "index.html").is_file():
            assert client.get("/").status_code == 200  # the page asks for the key itself
            assert client.get("/static/app.js").status_code == 200


def test_overloaded_is_503_with_retry_after(other_home: Path) -> None:
    with _service(other_home, queue_size=1) as client:
        service = client.app.state.service
        release = threading.Event()
        running = threading.Event()

        def hold() -> None:
            running.set()
            release.wait()

        held = [service.model_pool.submit(hold)]
        assert running.wait(60)
        held.append(service.model_pool.submit(release.wait))  # the one queue place taken
        try:
            response = client.post("/search", json={"text": "cat"})
            _assert_error(response, 503, "overloaded", "busy")
            assert response.headers["retry-after"] == "1"
            assert "jointspace_queue_depth 1.0" in client.get("/metrics").text
            assert client.get("/collections").status_code == 200  # reads do not queue
        finally:
            release.set()
        for future in held:
            future.result(timeout=60)
        assert client.post("/search", json={"text": "cat"}).status_code == 200


def test_a_client_that_disconnects_costs_nothing(other_home: Path) -> None:
    """A search still waiting for the model when its client goes away never runs."""
    with _service(other_home, queue_size=4) as client:
        service = client.app.state.service
        collection = service.collection(COLLECTION)
        calls: list[object] = []
        real_search = collection.search
        collection.search = lambda *a, **k: calls.append(k) or real_search(*a, **k)
        release, running = threading.Event(), threading.Event()

        def hold() -> None:
            running.set()
            release.wait()

        held = service.model_pool.submit(hold)
        try:
            assert running.wait(60)
            status = asyncio.run(_post_then_disconnect(client.app, b'{"text": "cat"}'))
            assert status == 499  # answered to nobody; the search was dropped
        finally:
            release.set()
        held.result(timeout=60)
        assert calls == [] and service.model_pool.waiting == 0
        assert client.post("/search", json={"text": "cat"}).status_code == 200
        assert len(calls) == 1
        del collection.search


async def _post_then_disconnect(app, body: bytes) -> int:
    """One POST /search through the ASGI app whose client hangs up after sending its body."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    hung_up = {"type": "http.disconnect"}
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else hung_up

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/search",
        "raw_path": b"/search",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


# -- the command ---------------------------------------------------------------------------------

# The tiny backbone's open_clip config exists only where it is registered: a CLI process that
# registers it first, then runs the console script's app.
_CLI = (
    "import sys, open_clip; open_clip.add_model_config(sys.argv.pop(1)); "
    "from jointspace.cli import main; main()"
)


def _cli(configs: Path, *args: object) -> list[str]:
    return [sys.executable, "-c", _CLI, str(configs), *map(str, args)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_holds_its_collection_against_an_ingest(
    other_home: Path, tiny_configs: Path, sources: list[Path]
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        _cli(tiny_configs, "serve", "--collection", COLLECTION, "--port", port, "--api-key", "k"),
        env=cli_env(other_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_for_health(server, url)
        headers = {"X-API-Key": "k"}
        assert httpx.post(f"{url}/search", json={"text": "cat"}).status_code == 401
        # the console script as a user runs it (refused before it needs the tiny backbone)
        ingest = run_cli(["ingest", sources[0], "--collection", COLLECTION], other_home, 300)
        assert ingest.returncode == 1, ingest.stderr
        assert "Traceback" not in ingest.stderr and ingest.stdout == ""
        error = ingest.stderr.strip()
        assert len(error.splitlines()) == 1, error
        for words in (f"pid {server.pid}", f"jointspace serve at {url}", "stop the service"):
            assert words in error, error
        assert "Qdrant server" in error and "side by side" in error
        # the service is unharmed
        response = httpx.post(f"{url}/search", json={"text": "cat", "k": 3}, headers=headers)
        assert response.status_code == 200 and len(response.json()["results"]) == 3
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert f"at {url}/" in out and "Traceback" not in err


def _wait_for_health(server: subprocess.Popen, url: str) -> None:
    """Until /healthz answers (the process loads its model first); the process must not die."""
    deadline = time.monotonic() + 300  # a bound for a stuck start, not a timing assertion
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"serve exited {server.returncode}: {server.stderr.read()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not answer /healthz")


def test_serve_refuses_what_it_cannot_do(other_home: Path) -> None:
    result = invoke(["serve", "--workers", "2"], other_home)
    assert result.exit_code == 1 and "needs a Qdrant server" in result.stderr
    result = invoke(["serve", "--collection", "nope", "--port", "0"], other_home)
    assert result.exit_code == 1 and "No collection 'nope'" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke(["serve", "--port", port], other_home)
    assert result.exit_code == 1 and "Cannot listen on 127.0.0.1" in result.stderr

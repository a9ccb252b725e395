"""Fast terminal search: exported towers (the same features as open_clip, loaded without it, only
the tower a query needs, a damaged export rebuilt), queries through a running service
(--server: a stand-in http.server answering the contract from a real tiny collection, and
jointspace's own service when it is installed), readable item references, and the --json
document that repeats the query. No timing thresholds: what is built and imported is asserted.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import CAPTIONS, STAMPS, assert_bad_run, cli_env, json_stdout, photo
from PIL import Image

import jointspace as js
from jointspace.errors import InvalidQuery, JointspaceError, NotFound
from jointspace.pipeline.backbone import Backbone
from jointspace.pipeline.compute import Compute
from jointspace.pipeline.towers import (
    EXPORT_TOLERANCE,
    ExportedTowers,
    export_towers,
    towers_dir,
)
from jointspace.query.hits import Hit, readable_ref

COLLECTION = "photos"
HEAVY = ("torch", "open_clip", "torchvision", "timm", "transformers")
# Runs the console script's main() and reports which heavy modules the process imported.
CLI_PROBE = textwrap.dedent(
    """
    import json, sys
    from jointspace.cli import main
    args, watched = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    sys.argv = ["jointspace", *args]
    code = 0
    try:
        main()
    except SystemExit as exit:
        code = exit.code
    heavy = sorted(m for m in watched if m in sys.modules)
    sys.stderr.write("IMPORTED " + json.dumps(heavy) + "\\n")
    sys.exit(code)
    """
)


def cli(args: list[str | Path], home: Path, **env: str) -> tuple[subprocess.CompletedProcess, list]:
    """The CLI in a fresh process; (the process with the IMPORTED line taken off stderr, the
    heavy modules it imported)."""
    proc = subprocess.run(
        [sys.executable, "-c", CLI_PROBE, json.dumps([str(a) for a in args]), json.dumps(HEAVY)],
        env={**cli_env(home), **env},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    lines = proc.stderr.splitlines(keepends=True)
    imported = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("IMPORTED")]
    proc.stderr = "".join(line for line in lines if not line.startswith("IMPORTED"))
    return proc, imported[0] if imported else None


def real_photos() -> list[Image.Image]:
    """scikit-image's real photos at their own sizes (portrait, landscape, greyscale), and the
    small versions the corpus holds."""
    import skimage.data

    full = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.camera()]
    small = [photo(name) for name in ("cat", "rocket", "grass")]
    return [Image.fromarray(a) for a in full] + small


def stamp_captions(limit: int) -> list[str]:
    """Real captions of the stamps: the English first lines and their translations."""
    lines: list[str] = []
    for txt in sorted(STAMPS.rglob("*.txt"))[:limit]:
        text = txt.read_text(encoding="utf-8", errors="replace").splitlines()
        lines += [line.split("=", 1)[-1] for line in text[:3] if line.strip()]
    return lines


def assert_same_features(towers: ExportedTowers, backbone: Backbone, texts, images) -> None:
    worst = 0.0
    for text in texts:  # one by one, as a query is embedded
        ours, reference = towers.encode_texts([text]), backbone.encode_texts([text])
        worst = max(worst, float(np.abs(ours - reference).max()))
    batch = list(texts[:8])  # and a padded batch
    worst = max(
        worst, float(np.abs(towers.encode_texts(batch) - backbone.encode_texts(batch)).max())
    )
    for image in images:
        pixels = towers.preprocess(image)
        assert torch.equal(pixels, backbone.preprocess(image)), "preprocessing differs"
        ours, reference = towers.encode_images(pixels[None]), backbone.encode_images(pixels[None])
        worst = max(worst, float(np.abs(ours - reference).max()))
    assert worst <= EXPORT_TOLERANCE, f"exported towers differ from open_clip by {worst}"


# -- exported towers: the same features -------------------------------------------------------


IMAGE_TOWER = {"torch": "torchscript", "openvino": "openvino"}


@pytest.mark.parametrize("engine", ["torch", "openvino"])
def test_tiny_exported_towers_give_open_clip_features(
    tiny: Backbone, tmp_path: Path, engine: str
) -> None:
    backbone = Backbone(tiny.spec, Compute.resolve("cpu", None, engine))
    towers = export_towers(backbone, towers_dir(tmp_path, backbone.features_key))
    assert towers.meta["text"]["tower"] == "torchscript"  # CLIP's own text transformer
    assert towers.meta["image"]["tower"] == IMAGE_TOWER[engine]
    assert towers.meta["proof"]["text"]["max_abs_diff"] <= EXPORT_TOLERANCE
    again = ExportedTowers.open(towers.folder, backbone.features_key)
    assert again is not None and again.loaded == set()
    texts = [*CAPTIONS.values(), "A penguin.", "  café &amp; crème  ", "x " * 100]
    assert_same_features(again, backbone, texts, real_photos())
    assert again.loaded == {"text", "image"}


def test_offline_exported_towers_give_open_clip_features(tmp_path: Path) -> None:
    """The real offline preset (MiniLM + EfficientNet-Lite0) on real stamp captions and
    pictures: the MiniLM tower runs as plain weights, the image tower as this machine's default
    engine runs it (OpenVINO IR on a CPU, TorchScript with the torch engine)."""
    if not STAMPS.is_dir():
        pytest.skip("the Tux Paint stamps are not installed")
    from jointspace.corpus.images import decode_image

    backbone = Backbone("offline")
    towers = export_towers(backbone, towers_dir(tmp_path, backbone.features_key))
    assert (towers.meta["text"]["tower"], towers.meta["image"]["tower"]) == (
        "bert_mean",
        IMAGE_TOWER[backbone.compute.engine],
    )
    pngs = sorted(STAMPS.rglob("*.png"))[::97][:8]
    images = [decode_image(p.read_bytes(), p.name) for p in pngs] + real_photos()[:2]
    loaded = ExportedTowers.open(towers.folder, backbone.features_key)
    assert loaded is not None
    assert_same_features(loaded, backbone, stamp_captions(25), images)


def test_plain_text_skips_ftfy_and_cleans_the_same() -> None:
    from jointspace.pipeline.towers import _clean_fn, _clean_whitespace

    reference = _clean_fn("whitespace")  # open_clip's own cleaner (ftfy, html, whitespace)
    texts = [*CAPTIONS.values(), "  a\tb\n c ", "A &amp; B", "caf\u00e9", "\x1b[31mred", "a\r\nb"]
    texts += [
        "x\x0cy",
        "\u201cquoted\u201d",
        "",
        " ",
        "a\x7fb",
        "&lt;b&gt;",
        "Ã©t\u00e9",
        "ｆｕｌｌ",
    ]
    if STAMPS.is_dir():
        texts += stamp_captions(300)
    assert [_clean_whitespace(t) for t in texts] == [reference(t) for t in texts]


def test_cleaning_text_never_loads_open_clips_tokenizer() -> None:
    """Its import builds CLIP's BPE vocabulary (0.2-1 s of CPU): not for a MiniLM caption."""
    code = (
        "import sys; from jointspace.pipeline.towers import _clean_whitespace, _TOKENIZER_MODULE; "
        "print(_clean_whitespace('Un caf\\u00e9 &amp; a \\u201cpenguin\\u201d'), "
        "_TOKENIZER_MODULE in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'Un caf\u00e9 & a "penguin" False'  # as ftfy uncurls them


# -- a tiny collection and its exported towers ------------------------------------------------


@dataclass(frozen=True)
class Tiny:
    home: Path
    model_id: str
    towers: Path


@pytest.fixture(scope="module")
def tiny_home(
    tiny: Backbone, tiny_model: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Tiny:
    """The photos corpus ingested with the tiny model, and the tiny backbone's towers exported
    into the same home. A fresh process cannot build the tiny backbone through open_clip (its
    config is only registered in this one), so a CLI query there works through the export
    alone."""
    home = tmp_path_factory.mktemp("cold-home")
    with js.connect(home=home) as space:
        space.ingest(corpus, collection=COLLECTION, model=tiny_model)
    towers = export_towers(tiny, towers_dir(home, tiny.features_key)).folder
    return Tiny(home, js.load_model(tiny_model).model_id, towers)


@pytest.fixture
def space(tiny_home: Tiny, monkeypatch: pytest.MonkeyPatch) -> Iterator[js.Space]:
    monkeypatch.setenv("JOINTSPACE_HOME", str(tiny_home.home))
    with js.connect(home=tiny_home.home) as space:
        yield space


def test_a_text_query_builds_no_image_tower(space: js.Space, tiny: Backbone) -> None:
    collection = space.collection(COLLECTION)
    hits = collection.search(text="A cat sitting on a chair.", target="text", k=3)
    assert hits[0].payload["key"] == "animals/cat.png"
    loaded = collection.model.loaded
    assert loaded.towers is not None and loaded.towers.loaded == {"text"}
    assert "backbone" not in loaded.__dict__, "the open_clip backbone was built"
    # the image tower is loaded when an image query needs it, still without open_clip
    [hit] = collection.search(image=photo("coffee"), target="image", k=1)
    assert hit.payload["key"] == "food/coffee.png"
    assert loaded.towers.loaded == {"text", "image"} and "backbone" not in loaded.__dict__
    # and the vectors are those of the open_clip path
    with torch.no_grad():
        reference = loaded.model.encode_text(torch.from_numpy(tiny.encode_texts(["a cat"])))[0]
    np.testing.assert_allclose(collection.embed(text="a cat", target="text"), reference, atol=1e-6)


def test_a_cold_cli_query_imports_neither_open_clip_nor_the_image_stack(tiny_home: Tiny) -> None:
    caption = CAPTIONS["food/coffee.png"]
    args = ["query", "--collection", COLLECTION, "--target", "text", "--text", caption, "-k", "2"]
    proc, imported = cli(args, tiny_home.home)
    assert proc.returncode == 0, proc.stderr
    assert "food/coffee.png" in proc.stdout
    assert imported == ["torch"], imported  # no open_clip, torchvision, timm, transformers
    image = Path(tiny_home.home).parent / "query.png"
    photo("rocket").save(image)
    image_args = ["query", "--collection", COLLECTION, "--target", "image", "--image", image]
    proc, imported = cli([*image_args, "-k", "1"], tiny_home.home)
    assert proc.returncode == 0, proc.stderr
    assert "food/rocket.png" in proc.stdout
    assert imported == ["torch"], imported


def test_without_an_export_the_first_query_makes_one(
    tiny_home: Tiny, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = js.load_model(tiny_model, home=tmp_path)
    vector = model.embed(text="a rocket")
    loaded = model.loaded
    assert "backbone" in loaded.__dict__  # the open_clip path answered ...
    meta = json.loads((tmp_path / "towers" / loaded.features_key / "meta.json").read_text())
    assert meta["text"] and meta["image"]  # ... and exported the towers for the next process
    again = js.load_model(tiny_model, home=tmp_path)
    np.testing.assert_allclose(again.embed(text="a rocket"), vector, atol=1e-6)
    assert "backbone" not in again.loaded.__dict__
    # JOINTSPACE_EXPORTED_TOWERS=0: the open_clip path, nothing exported
    monkeypatch.setenv("JOINTSPACE_EXPORTED_TOWERS", "0")
    plain = js.load_model(tiny_model, home=tmp_path / "other")
    np.testing.assert_allclose(plain.embed(text="a rocket"), vector, atol=1e-6)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("damage", ["weights changed", "file cut", "meta garbage", "file gone"])
def test_a_damaged_export_is_rebuilt_with_a_warning(
    damage: str, tiny_home: Tiny, space: js.Space, caplog: pytest.LogCaptureFixture
) -> None:
    meta = json.loads((tiny_home.towers / "meta.json").read_text())
    tower = tiny_home.towers / meta["text"]["files"]["tower"]
    if damage == "weights changed":  # same size, other bytes
        data = bytearray(tower.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
        tower.write_bytes(bytes(data))
    elif damage == "file cut":
        tower.write_bytes(tower.read_bytes()[:1000])
    elif damage == "meta garbage":
        (tiny_home.towers / "meta.json").write_text('{"format": 1, "fing')
    else:
        tower.unlink()
    collection = space.collection(COLLECTION)
    with caplog.at_level(logging.WARNING, logger="jointspace"):
        hits = collection.search(text="A cup of coffee on a saucer.", target="text", k=1)
    assert hits[0].payload["key"] == "food/coffee.png"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "damaged" in warnings[0], warnings
    assert str(tiny_home.towers) in warnings[0]
    # exported again, and used as it is by the next process
    rebuilt = ExportedTowers.open(tiny_home.towers, meta["fingerprint"])
    assert rebuilt is not None and rebuilt.encode_texts(["ok"]).shape[0] == 1
    caplog.clear()
    fresh = js.Model(collection.model.path, home=tiny_home.home)
    with caplog.at_level(logging.WARNING, logger="jointspace"):
        fresh.embed(text="coffee")
    assert not caplog.records and "backbone" not in fresh.loaded.__dict__


# -- readable references and --json ----------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "ref"),
    [
        (
            {"source": "/data/stamps", "key": "animals/birds/penguin.png",
             "image": "/data/stamps/animals/birds/penguin.png",
             "locator": "/data/stamps/animals/birds/penguin.png"},
            "animals/birds/penguin.png",
        ),
        (
            {"source": "/data/captions.csv", "key": "3fa2b1c0d9e8f7a6",
             "image": "/data/img/1.png", "locator": "row 12"},
            "captions.csv row 12",
        ),
        (
            {"source": "/data/pics.parquet", "key": "3fa2b1c0d9e8f7a6", "image": None,
             "sha256": "ab", "locator": "row 3"},
            "pics.parquet row 3",
        ),
        (
            {"source": "/data/shard-000.tar", "key": "000123", "image": None,
             "locator": "member 000123.jpg"},
            "shard-000.tar member 000123.jpg",
        ),
        (  # ingested before payloads carried the locator
            {"source": "/data/shard-000.tar", "key": "000123", "image_member": "000123.jpg"},
            "shard-000.tar member 000123.jpg",
        ),
        ({"source": "/data/captions.csv", "key": "k1", "image": "/data/img/1.png"}, "img/1.png"),
        ({"source": "/data/urls.csv", "image": "https://example.org/a.jpg"}, "https://example.org/a.jpg"),
        ({"source": "/data/texts.jsonl", "key": "k7", "image": None}, "texts.jsonl k7"),
        ({}, None),
    ],
)  # fmt: skip
def test_readable_ref(payload: dict[str, Any], ref: str | None) -> None:
    assert readable_ref(payload) == ref
    document = {"id": "x", "score": 0.5, "text": None, "image": None, "payload": payload}
    assert Hit.from_dict(document).ref == ref  # a service's hit without one gets it too


def test_a_manifest_row_is_shown_by_its_row_not_a_hash(
    tiny_home: Tiny, tiny_model: Path, corpus: Path
) -> None:
    manifest = tiny_home.home.parent / "photos.csv"
    rows = ["image,text"] + [f"{corpus / key},{caption}" for key, caption in CAPTIONS.items()]
    manifest.write_text("\n".join(rows) + "\n")
    with js.connect(home=tiny_home.home) as space:
        space.ingest(manifest, collection="manifest", model=tiny_model)
    args = [
        "query",
        "--collection",
        "manifest",
        "--target",
        "text",
        "--text",
        CAPTIONS["food/rocket.png"],
    ]
    proc, _ = cli([*args, "-k", "1"], tiny_home.home)
    assert proc.returncode == 0, proc.stderr
    assert "photos.csv row 4" in proc.stdout, proc.stdout
    proc, _ = cli([*args, "-k", "1", "--json"], tiny_home.home)
    [hit] = json_stdout(proc)["results"]
    assert hit["ref"] == "photos.csv row 4" and hit["payload"]["locator"] == "row 4"
    assert len(hit["payload"]["key"]) == 16  # the content hash the table no longer shows


def test_query_json_repeats_the_query(tiny_home: Tiny) -> None:
    args = ["query", "--collection", COLLECTION, "--text", "a cat", "-k", "3", "--target", "image"]
    proc, _ = cli([*args, "--where", "labels=animals", "--json"], tiny_home.home)
    assert proc.returncode == 0, proc.stderr
    document = json_stdout(proc)
    assert document["query"] == {
        "text": "a cat",
        "image": None,
        "id": None,
        "where": {"labels": "animals"},
    }
    assert (document["target"], document["collection"], document["k"]) == ("image", COLLECTION, 3)
    assert document["model_id"] == tiny_home.model_id
    assert {r["payload"]["key"] for r in document["results"]} <= {
        "animals/cat.png",
        "animals/astronaut.png",
    }
    assert document["results"][0]["ref"] == document["results"][0]["payload"]["key"]


# -- --server: a stand-in service answering the contract from the real tiny collection ---------


class StandIn(HTTPServer):
    """POST /search and /embed as jointspace's service answers them, from a real collection
    through the Python API; remembers what it was sent."""

    def __init__(self, space: js.Space, api_key: str | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.space, self.api_key = space, api_key
        self.received: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StandIn

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = self.headers.get("X-API-Key")
        self.server.received.append({"path": self.path, "body": body, "key": key})
        if self.server.api_key and key != self.server.api_key:
            return self._send(401, _error("missing_key", "This service needs an API key."))
        try:
            collection = self.server.space.collection(body["collection"])
            image = base64.b64decode(body["image"]) if body.get("image") else None
            if self.path == "/search":
                hits = collection.search(
                    text=body.get("text"),
                    image=image,
                    id=body.get("id"),
                    target=body["target"],
                    k=body["k"],
                    where=body.get("where"),
                )
                # as the real service: its hit model knows no "ref" (the client makes it)
                results = [{k: v for k, v in h.to_dict().items() if k != "ref"} for h in hits]
                query = {
                    "text": body.get("text"),
                    "image": image and "<upload>",
                    "id": body.get("id"),
                }
                document = {
                    "collection": collection.name,
                    "target": body["target"],
                    "k": body["k"],
                    "query": query,
                    "model_id": collection.model.model_id,
                    "took_ms": 1.0,
                    "results": results,
                }
            else:
                vector = collection.embed(body.get("text"), image, body["target"])
                document = {
                    "using": body["target"],
                    "vector": vector,
                    "dim": len(vector),
                    "model_id": collection.model.model_id,
                }
        except NotFound as error:
            return self._send(404, _error("not_found", str(error)))
        except InvalidQuery as error:
            return self._send(422, _error("invalid_query", str(error)))
        except JointspaceError as error:
            return self._send(500, _error("failed", str(error)))
        self._send(200, document)

    def _send(self, status: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": message}}


@pytest.fixture
def stand_in(space: js.Space) -> Iterator[StandIn]:
    server = StandIn(space, api_key="s3cret")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_query_via_a_service(stand_in: StandIn, space: js.Space, tmp_path: Path) -> None:
    image = tmp_path / "query.png"
    photo("cat").save(image)
    args = ["query", "--collection", COLLECTION, "--image", image, "--target", "image", "-k", "2"]
    env = {"JOINTSPACE_SERVER": stand_in.url, "JOINTSPACE_API_KEY": "s3cret"}
    proc, imported = cli(args, tmp_path / "empty-home", **env)
    assert proc.returncode == 0, proc.stderr
    assert imported == [], imported  # no torch (nor any model) on this path
    assert f"image results in '{COLLECTION}' (via {stand_in.url})" in proc.stdout
    assert "animals/cat.png" in proc.stdout  # the ref made from the payload
    [request] = stand_in.received
    assert request["path"] == "/search" and request["key"] == "s3cret"
    assert base64.b64decode(request["body"]["image"]) == image.read_bytes()
    assert request["body"] == {
        "collection": COLLECTION,
        "target": "image",
        "k": 2,
        "image": request["body"]["image"],
    }
    # --json: the same document as a local query, the same hits as the Python API's
    flags = ["--server", stand_in.url, "--server-key", "s3cret", "--json"]
    proc, _ = cli([*args[:3], "--text", "a cat", "--where", "labels=animals", *flags], tmp_path)
    document = json_stdout(proc)
    assert set(document) == {"query", "target", "collection", "model_id", "k", "results"}
    assert document["query"]["where"] == {"labels": "animals"}
    assert stand_in.received[-1]["body"]["where"] == {"labels": "animals"}
    local = space.collection(COLLECTION).search(text="a cat", where={"labels": "animals"})
    assert [r["id"] for r in document["results"]] == [h.id for h in local]
    assert [r["ref"] for r in document["results"]] == [h.ref for h in local]
    assert document["model_id"] == space.collection(COLLECTION).model.model_id


def test_embed_via_a_service(stand_in: StandIn, space: js.Space, tmp_path: Path) -> None:
    args = ["embed", "--collection", COLLECTION, "--text", "a rocket", "--target", "text"]
    flags = ["--server", stand_in.url, "--server-key", "s3cret", "--json"]
    proc, imported = cli([*args, *flags], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert imported == []
    document = json_stdout(proc)
    assert set(document) == {"using", "vector", "dim", "model_id"} and document["using"] == "text"
    local = space.collection(COLLECTION).embed(text="a rocket", target="text")
    np.testing.assert_allclose(document["vector"], local, atol=1e-6)
    proc, _ = cli([*args[:1], "--text", "x", *flags], tmp_path)  # no collection
    assert_bad_run(proc, "With --server, pass --collection NAME")


def test_a_service_error_is_its_message_in_one_sentence(
    stand_in: StandIn, space: js.Space, tmp_path: Path
) -> None:
    env = {"JOINTSPACE_SERVER": stand_in.url, "JOINTSPACE_API_KEY": "s3cret"}
    proc, _ = cli(["query", "--collection", "nope", "--text", "a cat"], tmp_path, **env)
    line = assert_bad_run(proc, "No collection 'nope'")
    with pytest.raises(NotFound) as sent:  # what the service answered
        space.collection("nope")
    assert line == f"Error: {sent.value}"
    proc, _ = cli(["query", "--collection", COLLECTION, "--text", "  "], tmp_path, **env)
    assert_bad_run(proc, "The text query is empty")
    proc, _ = cli(["query", "--collection", COLLECTION, "--text", "x"], tmp_path,
                  JOINTSPACE_SERVER=stand_in.url)  # fmt: skip
    assert_bad_run(proc, "This service needs an API key.")


def test_an_unreachable_service_is_one_sentence(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc, _ = cli(["query", "--collection", COLLECTION, "--text", "x", "--server", url], tmp_path)
    assert_bad_run(proc, f"Cannot reach the jointspace service at {url}", "jointspace serve")


def test_the_real_service_answers_the_cli(
    tiny_home: Tiny, tiny_model: Path, corpus: Path, tmp_path: Path
) -> None:
    """Against jointspace's own service (FastAPI + uvicorn) on a loopback port, when installed."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    try:
        from jointspace.serve import ServiceSettings, create_app
    except ImportError as error:
        pytest.skip(f"the service is not there yet ({error})")
    home = tmp_path / "home"
    with js.connect(home=home) as space:
        space.ingest(corpus, collection=COLLECTION, model=tiny_model)
    app = create_app(ServiceSettings(home=home, collections=(COLLECTION,), port=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        assert server.started, "the service did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        caption = CAPTIONS["food/coffee.png"]
        args = ["query", "--collection", COLLECTION, "--target", "text", "--text", caption]
        proc, imported = cli([*args, "-k", "1", "--server", url], tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert f"(via {url})" in proc.stdout and "food/coffee.png" in proc.stdout
        assert imported == []
        proc, _ = cli([*args, "--server", url, "--json"], tmp_path)
        document = json_stdout(proc)
        assert document["results"][0]["ref"] == "food/coffee.png"
        assert document["model_id"] == tiny_home.model_id
        proc, _ = cli(["query", "--collection", "nope", "--text", "x", "--server", url], tmp_path)
        assert_bad_run(proc, "nope")
    finally:
        server.should_exit = True
        thread.join(timeout=30)

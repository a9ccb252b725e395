"""Shared fixtures for the command-line tests: a small real corpus of Tux Paint stamps and one
model trained on it through the CLI, once per session, under a session JOINTSPACE_HOME (so the
feature cache is shared by every test that runs the real backbone). And the store tests'
backends: Qdrant Edge, qdrant-client's local mode, and a real server when QDRANT_URL is set."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jointspace.store.base import Point, Store

STAMPS = Path("/usr/share/tuxpaint/stamps")
NO_STAMPS = (
    f"the Tux Paint stamps corpus is not installed at {STAMPS} "
    "(apt-get install tuxpaint-stamps-default)"
)
# Three categories, ~80 PNGs: enough for a split, a filter and a few seconds of encoding.
SMALL_CORPUS_FOLDERS = ("animals/birds", "food/fruit", "town/roadsigns")
JOINTSPACE = Path(sys.executable).with_name("jointspace")
COLLECTION = "stamps"


def requires_stamps() -> None:
    if not STAMPS.is_dir():
        pytest.skip(NO_STAMPS)


@dataclass(frozen=True)
class Session:
    """What the CLI tests share: the home folder, the small corpus, its model and collection."""

    home: Path
    corpus: Path
    model: Path
    model_summary: dict
    items: int  # image files in the small corpus (all of them good)

    def env(self, home: Path | None = None) -> dict[str, str]:
        return cli_env(home or self.home)


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QDRANT_URL", "QDRANT_API_KEY")}
    env["JOINTSPACE_HOME"] = str(home)
    env["COLUMNS"] = "100"
    return env


def run_cli(
    args: Sequence[str | Path], home: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The console script as a user runs it: a real process, stdout and stderr apart."""
    return subprocess.run(
        [str(JOINTSPACE), *map(str, args)],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def invoke(args: Sequence[str | Path], home: Path, input: str | None = None):
    """The Typer app in this process (CliRunner), stdout and stderr kept apart."""
    from jointspace.cli import app

    return CliRunner().invoke(
        app,
        [str(a) for a in args],
        env=cli_env(home),
        input=input,
        catch_exceptions=False,
        prog_name="jointspace",
    )


def assert_bad_run(proc, *expected: str) -> str:
    """Exit 1, nothing on stdout, one line on stderr that says what went wrong."""
    err = proc.stderr
    assert "Traceback" not in err, err
    assert proc.returncode == 1, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {err}"
    assert proc.stdout == "", proc.stdout
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("Error: "), line
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    return line


def json_stdout(proc: subprocess.CompletedProcess[str] | object) -> dict:
    """stdout as exactly one JSON document (json.loads refuses anything around it)."""
    out = proc.stdout
    assert out.strip(), f"nothing on stdout; stderr: {proc.stderr}"
    try:
        return json.loads(out)
    except json.JSONDecodeError as e:
        raise AssertionError(f"stdout is not one JSON document ({e}):\n{out}") from None


def copy_small_corpus(dest: Path, folders: Sequence[str] = SMALL_CORPUS_FOLDERS) -> int:
    """Copy the PNGs (with their .txt captions) of a few stamp folders, keeping the
    category/subcategory folders; returns the number of images."""
    count = 0
    for folder in folders:
        target = dest / folder
        target.mkdir(parents=True, exist_ok=True)
        for png in sorted((STAMPS / folder).glob("*.png")):
            shutil.copy2(png, target / png.name)
            caption = png.with_suffix(".txt")
            if caption.is_file():
                shutil.copy2(caption, target / caption.name)
            count += 1
    return count


@pytest.fixture(scope="session")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """The small corpus and a model trained on it once, with the real offline backbone."""
    requires_stamps()
    root = tmp_path_factory.mktemp("cli")
    home, corpus, model = root / "home", root / "corpus", root / "model"
    items = copy_small_corpus(corpus)
    assert items >= 60, f"expected ~80 stamps in {SMALL_CORPUS_FOLDERS}, found {items}"
    proc = run_cli(["train", corpus, "--out", model, "--epochs", "8", "--json"], home)
    assert proc.returncode == 0, f"training the session model failed:\n{proc.stderr}"
    summary = json_stdout(proc)
    return Session(home, corpus, model, summary, items)


@pytest.fixture(scope="session")
def first_ingest(session: Session) -> subprocess.CompletedProcess[str]:
    """The small corpus ingested once into the shared collection (tests only read it)."""
    return run_cli(
        ["ingest", session.corpus, "--collection", COLLECTION, "--model", session.model, "--json"],
        session.home,
    )


@pytest.fixture(scope="session")
def collection(session: Session, first_ingest: subprocess.CompletedProcess[str]) -> str:
    assert first_ingest.returncode == 0, first_ingest.stderr
    return COLLECTION


@pytest.fixture(scope="session")
def other_model(session: Session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, valid checkpoint (the session model with perturbed weights): another
    model_id, same backbone."""
    import torch

    from jointspace.pipeline.checkpoint import load_model, save_model

    model, card = load_model(session.model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    directory = tmp_path_factory.mktemp("other-model")
    other = save_model(directory, model, card.backbone, card.training)
    assert other.model_id != card.model_id
    return directory


# -- a tiny random open_clip backbone (seconds, not minutes) --------------------------------

TINY = "jointspace-test-tiny-vit"
TINY_OTHER = "jointspace-test-tiny-vit-48"
EMBED_DIM = 32


def _tiny_config(image_size: int) -> dict:
    return {
        "embed_dim": EMBED_DIM,
        "vision_cfg": {"image_size": image_size, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 1,
        },
    }


@pytest.fixture(scope="session")
def tiny_configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Register two tiny open_clip model configs (32 px and 48 px images); returns their folder
    (a subprocess registers it with `open_clip.add_model_config(folder)`)."""
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY}.json").write_text(json.dumps(_tiny_config(32)))
    (folder / f"{TINY_OTHER}.json").write_text(json.dumps(_tiny_config(48)))
    import open_clip

    open_clip.add_model_config(folder)
    return folder


@pytest.fixture(scope="session")
def tiny(tiny_configs: Path):
    """A tiny random open_clip backbone (32-d image and text features)."""
    from jointspace.pipeline.backbone import Backbone

    return Backbone(f"{TINY}:random")


# -- store backends ------------------------------------------------------------------------------

QDRANT_URL = os.environ.get("QDRANT_URL")
QDRANT_API_KEY = os.environ.get("QDRANT_API_KEY")
DIMS = {"unit": 4, "image": 4, "text": 4}


@dataclass
class Backend:
    """How to (re)open one backend's store, and a collection name unique to this test."""

    kind: str
    open: Callable[[], Store]
    name: str


def server_store() -> Store:
    """A store on the real server at QDRANT_URL."""
    from jointspace.store import ServerOptions
    from jointspace.store.server import ServerStore

    return ServerStore.connect(QDRANT_URL, ServerOptions(api_key=QDRANT_API_KEY))


@pytest.fixture(
    params=[
        "edge",
        "local",
        pytest.param(
            "server",
            marks=pytest.mark.skipif(
                not QDRANT_URL, reason="set QDRANT_URL (and QDRANT_API_KEY) to test a real server"
            ),
        ),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store backend in turn: Edge on a temporary folder, qdrant-client's local mode as the
    server stand-in, and the server at QDRANT_URL when it is set."""
    from jointspace.store.edge import EdgeStore
    from jointspace.store.server import ServerStore

    kind = request.param
    if kind == "edge":
        yield Backend(kind, lambda: EdgeStore(tmp_path / "home"), "items")
    elif kind == "local":
        yield Backend(kind, lambda: ServerStore.local(tmp_path / "qdrant"), "items")
    else:
        # A shared server: a unique name, dropped afterwards whatever the test did.
        name = f"jointspace-test-{uuid.uuid4().hex[:12]}"
        yield Backend(kind, server_store, name)
        with server_store() as store:
            for leftover in store.list_collections():
                if leftover.startswith(name):
                    store.drop_collection(leftover)


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    """The backend's store, open for the test and closed after it."""
    s = backend.open()
    yield s
    s.close()


def pid(n: int) -> str:
    """A deterministic point id, as ingest makes them."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"point-{n}"))


def unit_vector(degrees: float) -> list[float]:
    """A 4-d unit vector at `degrees` from e0 in the (e0, e1) plane: its cosine to e0 is known."""
    rad = math.radians(degrees)
    return [math.cos(rad), math.sin(rad), 0.0, 0.0]


def point(n: int, degrees: float = 0.0, image: bool = True, **payload: object) -> Point:
    """Point n (payload {"n": n, ...}) with unit and text vectors, and an image vector unless
    `image` is false."""
    vectors = {"unit": unit_vector(degrees), "text": unit_vector(degrees)}
    if image:
        vectors["image"] = unit_vector(degrees)
    return Point(id=pid(n), vectors=vectors, payload={"n": n, **payload})


def create(store: Store, name: str, **metadata: object) -> None:
    """A collection of DIMS vectors that can filter on split and labels."""
    store.create_collection(name, DIMS, metadata or {"model": "m1"}, ["split", "labels"])


# -- six real photos with captions, and an untrained model over the tiny backbone --------------

CAPTIONS = {
    "animals/cat.png": "A cat sitting on a chair.",
    "animals/astronaut.png": "An astronaut in a white suit.",
    "food/coffee.png": "A cup of coffee on a saucer.",
    "food/rocket.png": "A rocket standing on its launch pad.",
    "plants/grass.png": "Green grass in the sun.",
    "plants/text.png": "A page of printed text.",
}


def photo(name: str):
    """One of scikit-image's sample photos (cat, astronaut, coffee, rocket, grass, text) as a
    small RGB PIL image."""
    import skimage.data
    from PIL import Image

    source = {
        "cat": skimage.data.chelsea,
        "astronaut": skimage.data.astronaut,
        "coffee": skimage.data.coffee,
        "rocket": skimage.data.rocket,
        "grass": skimage.data.grass,
        "text": skimage.data.text,
    }[name]
    return Image.fromarray(source()).convert("RGB").resize((64, 48))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six real photos with captions in three category folders, and one broken image (read
    only: a test that changes a corpus makes its own)."""
    root = tmp_path_factory.mktemp("api-corpus")
    for key, caption in CAPTIONS.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(path.stem).save(path)
        path.with_suffix(".txt").write_text(caption + "\n")
    (root / "food" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "food" / "broken.txt").write_text("A broken picture.\n")
    return root


@pytest.fixture(scope="session")
def tiny_model(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained gated encoder checkpoint over the tiny backbone's features."""
    import torch

    from jointspace.pipeline.checkpoint import save_model
    from jointspace.pipeline.model import EncoderConfig, GatedEncoder

    torch.manual_seed(0)
    model = GatedEncoder(EncoderConfig(tiny.image_dim, tiny.text_dim, dim=16))
    backbone = {
        "spec": tiny.spec,
        "fingerprint": tiny.fingerprint,
        "image_dim": tiny.image_dim,
        "text_dim": tiny.text_dim,
    }
    directory = tmp_path_factory.mktemp("tiny-model")
    save_model(directory, model, backbone, {"data": {}})
    return directory

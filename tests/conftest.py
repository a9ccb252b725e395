"""Shared fixtures for the command-line tests: a small real corpus of Tux Paint stamps and one
model trained on it through the CLI, once per session, under a session JOINTSPACE_HOME (so the
feature cache is shared by every test that runs the real backbone)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

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

"""Model checkpoints: the id is the weights' hash and is checked at load; a damaged, swapped or
missing weights file, card or folder is one sentence that names the file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jointspace.errors import JointspaceError
from jointspace.pipeline.checkpoint import CARD_FILE, WEIGHTS_FILE, load_model, save_model
from jointspace.pipeline.model import EncoderConfig, GatedEncoder

BACKBONE = {"spec": "offline", "fingerprint": "0123456789abcdef"}


def _model(seed: int = 0, dim: int = 16) -> GatedEncoder:
    torch.manual_seed(seed)
    return GatedEncoder(EncoderConfig(image_dim=12, text_dim=8, dim=dim, hidden=24)).eval()


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    save_model(directory, _model(), BACKBONE, {"epochs": 2})
    return directory


def _refused(directory: Path) -> str:
    with pytest.raises(JointspaceError) as caught:
        load_model(directory)
    message = str(caught.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_weights_id_is_the_sha256_of_the_file(model_dir: Path) -> None:
    from jointspace.pipeline.checkpoint import weights_id

    weights = model_dir / WEIGHTS_FILE
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    assert weights_id(weights) == expected
    # the same 16 hex digits the card has always carried, so existing models keep their ids
    assert json.loads((model_dir / CARD_FILE).read_text())["model_id"] == expected
    assert load_model(model_dir)[1].model_id == expected
    # streamed: a file larger than one read block hashes the same as in one piece
    big = model_dir.parent / "big.bin"
    big.write_bytes(os.urandom(3 * (1 << 20) + 17))
    assert weights_id(big) == hashlib.sha256(big.read_bytes()).hexdigest()[:16]


def test_swapped_weights_under_an_unchanged_card_are_refused(model_dir: Path) -> None:
    other = model_dir.parent / "other"
    save_model(other, _model(seed=1), BACKBONE, {"epochs": 2})  # same shape, other weights
    expected = load_model(model_dir)[1].model_id
    found = load_model(other)[1].model_id
    shutil.copyfile(other / WEIGHTS_FILE, model_dir / WEIGHTS_FILE)
    message = _refused(model_dir)
    assert message == (
        f"The weights in {model_dir / WEIGHTS_FILE} do not match the model card "
        f"{model_dir / CARD_FILE} (id {expected} expected, {found} found): the file was replaced "
        "or damaged; retrain or restore it."
    )


@pytest.mark.parametrize(
    "damage",
    ["truncated", "random bytes", "bad header", "empty", "one byte flipped"],
)
def test_damaged_weights_are_one_sentence_naming_the_file(model_dir: Path, damage: str) -> None:
    weights = model_dir / WEIGHTS_FILE
    good = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(good[: len(good) // 2])
    elif damage == "random bytes":
        weights.write_bytes(os.urandom(len(good)))
    elif damage == "bad header":  # a plausible header length, then no JSON
        weights.write_bytes((40).to_bytes(8, "little") + b"{this is not json" + good[25:])
    elif damage == "empty":
        weights.write_bytes(b"")
    else:  # still a valid safetensors file, but not the weights the card was written for
        flipped = bytearray(good)
        flipped[-3] ^= 0x40
        weights.write_bytes(bytes(flipped))
    message = _refused(model_dir)
    assert str(weights) in message
    if damage == "one byte flipped":
        assert "do not match the model card" in message
    else:
        assert message.startswith(f"The weights file {weights} is damaged or unreadable (")


@pytest.mark.parametrize(
    "damage",
    ["truncated", "not json", "no model_id", "no encoder", "unknown encoder field", "bad dims"],
)
def test_a_damaged_card_is_one_sentence_naming_it(model_dir: Path, damage: str) -> None:
    card_path = model_dir / CARD_FILE
    text = card_path.read_text()
    card = json.loads(text)
    if damage == "truncated":
        card_path.write_text(text[: len(text) // 2])
    elif damage == "not json":
        card_path.write_bytes(os.urandom(64))
    else:
        if damage == "no model_id":
            del card["model_id"]
        elif damage == "no encoder":
            del card["encoder"]
        elif damage == "unknown encoder field":
            card["encoder"]["layers"] = 3
        else:
            card["encoder"]["dim"] = -1
        card_path.write_text(json.dumps(card))
    message = _refused(model_dir)
    assert message.startswith(f"The model card {card_path} is damaged")


def test_a_card_whose_encoder_does_not_fit_the_weights_names_both(model_dir: Path) -> None:
    card_path = model_dir / CARD_FILE
    card = json.loads(card_path.read_text())
    card["encoder"]["dim"] = 4
    card_path.write_text(json.dumps(card))
    message = _refused(model_dir)
    assert str(model_dir / WEIGHTS_FILE) in message and str(card_path) in message
    assert "size mismatch" in message


def test_a_moved_or_deleted_model_folder_names_the_path(model_dir: Path) -> None:
    moved = model_dir.parent / "moved"
    model_dir.rename(moved)
    message = _refused(model_dir)
    assert "is not a jointspace model" in message and str(model_dir) in message
    assert "no such folder" in message
    load_model(moved)  # the model itself still loads where it went
    (moved / WEIGHTS_FILE).unlink()
    message = _refused(moved)
    assert "is not a jointspace model" in message and str(moved) in message
    shutil.rmtree(moved)
    moved.write_text("a file where the folder was")
    assert "is not a jointspace model" in _refused(moved)


def test_save_model_leaves_no_partial_files_and_refuses_an_unwritable_place(
    tmp_path: Path,
) -> None:
    card = save_model(tmp_path / "m", _model(), BACKBONE, {})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [CARD_FILE, WEIGHTS_FILE]
    assert load_model(tmp_path / "m")[1].model_id == card.model_id
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(JointspaceError, match="Cannot save the model in .*file"):
        save_model(tmp_path / "file" / "m", _model(), BACKBONE, {})


LOAD_THEN_EMPTY = """
import sys
from pathlib import Path
import torch
from jointspace.pipeline.checkpoint import load_model
model, _ = load_model(Path(sys.argv[1]))
before = [p.detach().clone() for p in model.parameters()]
(Path(sys.argv[1]) / "model.safetensors").write_bytes(b"")
assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
print("ok")
"""


def test_a_loaded_model_does_not_depend_on_its_file(model_dir: Path) -> None:
    """The weights are read into memory, not mapped: rewriting the file in place under a live
    model (a server) changes nothing (a mapped file would crash it with SIGBUS)."""
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_THEN_EMPTY, str(model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), proc.stderr[-2000:]

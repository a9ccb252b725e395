"""Model checkpoints: weights as safetensors plus a JSON card (backbone, dims, training).

A model's id is a hash of its weights file, written on the card at save time and checked at
load time: weights swapped or damaged under an unchanged card are refused, so a collection that
records the id it was embedded with can trust it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_weights
from safetensors.torch import save_file

from ..errors import JointspaceError
from .model import EncoderConfig, GatedEncoder

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "config.json"
CARD_FORMAT = "jointspace-model/1"
_TRAIN_HINT = "train one with `jointspace train SOURCE --out DIR`"


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint is: its id (hash of the weights), where it lives, the backbone it needs
    (spec and fingerprint), the encoder's shape and how it was trained."""

    model_id: str
    path: str
    backbone: dict[str, Any]
    encoder: EncoderConfig
    training: dict[str, Any]


def weights_id(path: Path) -> str:
    """A model's id: the first 16 hex digits of the sha256 of its weights file (streamed)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def save_model(
    directory: Path, model: GatedEncoder, backbone: dict[str, Any], training: dict[str, Any]
) -> ModelCard:
    """Write weights and card to `directory` (created if needed). Each file is written aside
    and moved into place, so an interrupted save never leaves a half-written file."""
    weights, card_path = directory / WEIGHTS_FILE, directory / CARD_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        _write_aside(weights, lambda part: save_file(tensors, str(part)))
        model_id = weights_id(weights)
        card = {
            "format": CARD_FORMAT,
            "model_id": model_id,
            "backbone": backbone,
            "encoder": model.config.to_dict(),
            "training": training,
        }
        text = json.dumps(card, indent=2, default=float)
        _write_aside(card_path, lambda part: part.write_text(text))
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise JointspaceError(
                f"No space left to save the model in {directory}; free some space and re-run."
            ) from None
        raise JointspaceError(
            f"Cannot save the model in {directory} ({_os_reason(error)}); choose a folder that "
            "can be written."
        ) from None
    return ModelCard(model_id, str(directory.resolve()), backbone, model.config, training)


def _write_aside(path: Path, write: Callable[[Path], object]) -> None:
    part = path.with_name(f".{path.name}.part")
    try:
        write(part)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def load_model(directory: Path) -> tuple[GatedEncoder, ModelCard]:
    """Load a checkpoint written by `save_model`. Anything else, a damaged card or weights, or
    weights that are not the ones the card was written for, is a `JointspaceError` whose one
    sentence names the file."""
    card_path, weights = directory / CARD_FILE, directory / WEIGHTS_FILE
    if not directory.is_dir():
        what = "no such folder" if not directory.exists() else "a file, not a model folder"
        raise JointspaceError(f"{directory} is not a jointspace model ({what}); {_TRAIN_HINT}.")
    if not card_path.is_file() or not weights.is_file():
        raise JointspaceError(
            f"{directory} is not a jointspace model (expected {CARD_FILE} and {WEIGHTS_FILE} in "
            f"it); {_TRAIN_HINT}."
        )
    card, model = _read_card(directory, card_path)
    try:
        # read once: hashed, then parsed into tensors that own their memory (not a mapping of
        # the file, which whoever rewrites the file in place would change under a live model)
        data = weights.read_bytes()
        found = hashlib.sha256(data).hexdigest()[:16]
        tensors = load_weights(data)
    except Exception as error:  # safetensors raises its own error type, or OSError
        raise JointspaceError(
            f"The weights file {weights} is damaged or unreadable ({_detail(error)}); "
            "restore it or retrain the model."
        ) from None
    if found != card["model_id"]:
        raise JointspaceError(
            f"The weights in {weights} do not match the model card {card_path} (id "
            f"{card['model_id']} expected, {found} found): the file was replaced or damaged; "
            "retrain or restore it."
        )
    try:
        model.load_state_dict(tensors, assign=True)
    except RuntimeError as error:
        raise JointspaceError(
            f"The weights in {weights} do not fit the encoder described by {card_path} "
            f"({_detail(error)}); restore the card or retrain the model."
        ) from None
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):  # not from the file
        raise JointspaceError(
            f"The weights in {weights} leave part of the encoder described by {card_path} "
            "unset; restore the card or retrain the model."
        )
    model.eval()
    loaded = ModelCard(
        card["model_id"], str(directory.resolve()), card["backbone"], model.config, card["training"]
    )
    return model, loaded


def _read_card(directory: Path, card_path: Path) -> tuple[dict[str, Any], GatedEncoder]:
    """The card's fields, checked, and an untrained encoder of the shape it describes."""
    try:
        card = json.loads(card_path.read_bytes())
    except (OSError, ValueError) as error:
        raise JointspaceError(
            f"The model card {card_path} is damaged or unreadable ({_detail(error)}); "
            "restore it or retrain the model."
        ) from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise JointspaceError(
            f"{directory} is not a jointspace model ({card_path} is not a {CARD_FORMAT} card); "
            f"{_TRAIN_HINT}."
        )
    try:
        for key, kind in (
            ("model_id", str),
            ("backbone", dict),
            ("encoder", dict),
            ("training", dict),
        ):
            if key not in card:
                raise ValueError(f"no {key!r}")
            if not isinstance(card[key], kind):
                raise ValueError(f"{key!r} is not a {kind.__name__}")
        # built on the meta device: no memory and no random init (which would cost as much as
        # hashing the weights); load_model then assigns every tensor from the weights file
        with torch.device("meta"):
            model = GatedEncoder(EncoderConfig(**card["encoder"]))
    except (ValueError, TypeError, RuntimeError) as error:
        raise JointspaceError(
            f"The model card {card_path} is damaged ({_detail(error)}); restore it or retrain "
            "the model."
        ) from None
    return card, model


def _detail(error: BaseException) -> str:
    """An exception as a short clause for a one-sentence message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # torch's load_state_dict error opens with a header line; the next line says what failed
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    text = lines[0].rstrip(":.") if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _os_reason(error: OSError) -> str:
    return error.strerror or _detail(error)

"""Model checkpoints: weights as safetensors plus a JSON card (backbone, dims, training)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from ..errors import JointspaceError
from .model import EncoderConfig, GatedEncoder

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "config.json"
CARD_FORMAT = "jointspace-model/1"


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint is: its id (hash of the weights), where it lives, the backbone it needs
    (spec and fingerprint), the encoder's shape and how it was trained."""

    model_id: str
    path: str
    backbone: dict[str, Any]
    encoder: EncoderConfig
    training: dict[str, Any]


def save_model(
    directory: Path, model: GatedEncoder, backbone: dict[str, Any], training: dict[str, Any]
) -> ModelCard:
    """Write weights and card to `directory` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    model_id = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    card = {
        "format": CARD_FORMAT,
        "model_id": model_id,
        "backbone": backbone,
        "encoder": model.config.to_dict(),
        "training": training,
    }
    (directory / CARD_FILE).write_text(json.dumps(card, indent=2, default=float))
    return ModelCard(model_id, str(directory.resolve()), backbone, model.config, training)


def load_model(directory: Path) -> tuple[GatedEncoder, ModelCard]:
    """Load a checkpoint written by `save_model`; a clear error if it is not one."""
    card_path, weights = directory / CARD_FILE, directory / WEIGHTS_FILE
    if not card_path.is_file() or not weights.is_file():
        raise JointspaceError(
            f"{directory} is not a jointspace model (expected {CARD_FILE} and {WEIGHTS_FILE}); "
            "train one with `jointspace train SOURCE --out DIR`."
        )
    try:
        card = json.loads(card_path.read_text())
        if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
            raise ValueError(f"{CARD_FILE} is not a {CARD_FORMAT} card")
        config = EncoderConfig(**card["encoder"])
        model = GatedEncoder(config)
        model.load_state_dict(load_file(str(weights)))
        loaded = ModelCard(
            card["model_id"], str(directory.resolve()), card["backbone"], config, card["training"]
        )
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(":")
        raise JointspaceError(
            f"{directory} is not a jointspace model or is damaged ({detail}); "
            "train one with `jointspace train SOURCE --out DIR`."
        ) from None
    model.eval()
    return model, loaded

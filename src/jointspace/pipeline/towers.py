"""A backbone's towers saved to load without open_clip: what a cold query needs, and no more.

Importing open_clip costs seconds (it pulls torchvision, timm and transformers) and building a
backbone builds both towers. So the first time a LoadedModel builds its backbone through
open_clip, it saves the two towers apart under `HOME/towers/<backbone fingerprint>/`:

- text: a BERT-family Hugging Face tower with mean pooling (the offline preset's MiniLM) as its
  plain weights (safetensors) run by `MeanPooledBert`, a few lines of torch; any other text
  tower (CLIP's own) traced to TorchScript. Its tokenizer goes along: a Hugging Face tokenizer
  as its `tokenizers` JSON, CLIP's BPE tokenizer by name (open_clip's tokenizer module is loaded
  on its own, without the package).
- image: the vision tower traced to TorchScript (engine torch), or the OpenVINO IR the
  backbone converted it to (engine openvino: image.xml + image.bin, compiled at load), and its
  preprocessing as parameters that `Preprocess` applies with PIL and torch alone (no
  torchvision).

Measured on this machine (2 cores): loading the MiniLM weights with `MeanPooledBert` and a
first forward take ~0.01 s of CPU against ~0.18 s for the same tower as TorchScript;
`torch.export` archives need ~1.9 s to load (they import torch._dynamo), so they are not used.

An export is proven before it is kept: texts and images (PROBE_TEXTS, probe_images()) go
through the saved towers and through open_clip, and a side whose features differ by more than
EXPORT_TOLERANCE is not exported (its queries keep the open_clip path). At load, each file's
size and CRC-32 and one probe's features are checked again; anything wrong raises
DamagedExport and the caller rebuilds the export with a warning. The cache is keyed by the
backbone's features key (fingerprint, precision, engine), so towers of one backbone, precision
or engine never serve another; an export made by another torch or OpenVINO is made again.
"""

from __future__ import annotations

import copy
import datetime
import html
import importlib.util
import json
import logging
import mmap
import os
import re
import shutil
import sys
import warnings
import zlib
from collections.abc import Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .compute import REFERENCE, REFERENCE_ENGINE, Compute
from .openvino_tower import OpenVinoImageTower, openvino_installed, openvino_version

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .backbone import Backbone

FORMAT = 1
META = "meta.json"
# An export is kept only where it reproduces open_clip's features this closely.
EXPORT_TOLERANCE = 1e-5
# At load, a probe's features are compared to the ones recorded at export: looser than the
# proof (thread counts may differ between processes), far below what damage does.
LOAD_TOLERANCE = 1e-4
# At bf16/fp16 both paths round at every layer, in kernels that differ: the tolerances are
# relative to the features' largest value (bf16 keeps 8 bits of mantissa, ~4e-3).
REDUCED_TOLERANCE = 2e-2
PROBE_TEXTS = (
    "A Magellanic penguin.",
    "a",
    "  Two   red\tapples &amp; a pear, on a   wooden table!  ",
    "Ein Fahrrad. Un vélo. 自転車. 🚲",
    "a caption long enough to be cut by the tokenizer's context length "
    + "with many words repeated over and over again " * 12,
)
_TOKENIZER_MODULE = "jointspace._open_clip_tokenizer"
_CLEAN_NAMES = {"_clean_lower": "lower", "_clean_whitespace": "whitespace"}
_CLEAN_NAMES["_clean_canonicalize"] = "canonicalize"
_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
_PLAIN = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")  # printable ASCII, tabs, newlines; no "&"

log = logging.getLogger("jointspace")


class DamagedExport(Exception):
    """An export that cannot be used as it is (unreadable, truncated, features that changed)."""


def towers_dir(home: Path, fingerprint: str) -> Path:
    """Where a backbone's exported towers live under a jointspace home."""
    return home / "towers" / fingerprint


def probe_images() -> list[Image.Image]:
    """Deterministic pictures of several sizes, shapes and modes that exercise preprocessing:
    portrait, landscape, already the model's size, tiny, greyscale, RGBA."""
    rng = np.random.default_rng(0)

    def picture(width: int, height: int) -> Image.Image:
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1)], -1)
        noise = rng.integers(0, 256, (height, width, 1))
        return Image.fromarray(np.concatenate([pixels, noise], -1).astype(np.uint8), "RGB")

    return [
        picture(97, 211),
        picture(300, 181),
        picture(224, 224),
        picture(13, 9),
        picture(150, 150).convert("L"),
        picture(64, 90).convert("RGBA"),
    ]


# --- the modules a query runs -------------------------------------------------------------------


class MeanPooledBert(torch.nn.Module):
    """A Hugging Face BertModel's forward (absolute positions, one token type, GELU, post-norm)
    and open_clip's mean pooler over the non-padding tokens, from the BertModel's state dict.
    The same operations as transformers' eager/SDPA code, so the same features."""

    def __init__(self, weights: dict[str, torch.Tensor], heads: int, eps: float, pad_id: int):
        super().__init__()
        self.w, self.heads, self.eps, self.pad_id = weights, heads, eps, pad_id
        self.layers = sum(1 for k in weights if k.endswith(".attention.self.query.weight"))

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        w = self.w
        return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], self.eps)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        w, (n, length) = self.w, tokens.shape
        mask = tokens != self.pad_id
        x = (
            w["embeddings.word_embeddings.weight"][tokens]
            + w["embeddings.token_type_embeddings.weight"][0]
            + w["embeddings.position_embeddings.weight"][:length]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        width = x.shape[-1]
        attend = mask[:, None, None, :]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, length, self.heads, width // self.heads).transpose(1, 2)

        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (
                heads(self._linear(x, f"{p}attention.self.{m}")) for m in ("query", "key", "value")
            )
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
            a = a.transpose(1, 2).reshape(n, length, width)
            x = self._norm(
                self._linear(a, f"{p}attention.output.dense") + x, f"{p}attention.output.LayerNorm"
            )
            h = self._linear(F.gelu(self._linear(x, f"{p}intermediate.dense")), f"{p}output.dense")
            x = self._norm(h + x, f"{p}output.LayerNorm")
        weights = mask.unsqueeze(-1).long()
        return (x * weights).sum(dim=1) / weights.sum(dim=1)


class Preprocess:
    """open_clip's inference preprocessing (torchvision Resize → CenterCrop → RGB → ToTensor →
    Normalize) with PIL and torch alone, for `resize_mode` "shortest" (square size) or
    "squash"."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str,
        resize_mode: str,
    ) -> None:
        self.size, self.resize_mode = size, resize_mode
        self.resample = _RESAMPLE[interpolation]
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Preprocess | None:
        """From a tower's preprocess_cfg; None for settings this class does not reproduce."""
        size = config.get("size")
        if isinstance(size, (list, tuple)):
            size = size[0] if len(size) == 2 and size[0] == size[1] else None
        mode = config.get("resize_mode") or "shortest"
        interpolation = config.get("interpolation") or "bicubic"
        if (
            not isinstance(size, int)
            or mode not in ("shortest", "squash")
            or interpolation not in _RESAMPLE
        ):
            return None
        return cls(size, config["mean"], config["std"], interpolation, mode)

    def to_dict(self) -> dict[str, Any]:
        interpolation = {v: k for k, v in _RESAMPLE.items()}[self.resample]
        return {
            "size": self.size,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "interpolation": interpolation,
            "resize_mode": self.resize_mode,
        }

    def __call__(self, image: Image.Image) -> torch.Tensor:
        size = self.size
        width, height = image.size
        if self.resize_mode == "squash":
            if (width, height) != (size, size):
                image = image.resize((size, size), self.resample)
        else:
            # torchvision: the short side to `size`, the long side truncated, then a centre crop
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(size * long / short)
            new_w, new_h = (size, new_long) if width <= height else (new_long, size)
            if (new_w, new_h) != (width, height):
                image = image.resize((new_w, new_h), self.resample)
            top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
            image = image.crop((left, top, left + size, top + size))
        image = image.convert("RGB")
        pixels = torch.from_numpy(np.array(image, np.uint8, copy=True))
        pixels = pixels.view(size, size, 3).permute(2, 0, 1).contiguous()
        return pixels.to(dtype=torch.float32).div(255).sub_(self.mean).div_(self.std)


class _HFTokenizer:
    """A Hugging Face fast tokenizer through `tokenizers` alone, padded and cut as open_clip's
    HFTokenizer asks transformers to (the settings travel in the saved JSON)."""

    def __init__(self, path: Path, clean: str) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.clean = _clean_whitespace if clean == "whitespace" else _clean_fn(clean)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        encodings = self.tokenizer.encode_batch([self.clean(t) for t in texts])
        return torch.tensor([e.ids for e in encodings], dtype=torch.long)


def _clean_fn(name: str) -> Any:
    return _open_clip_tokenizer().get_clean_fn(name)


def _clean_whitespace(text: str) -> str:
    """open_clip's "whitespace" cleaner: ftfy.fix_text, HTML entities unescaped (twice), runs of
    whitespace as one space. ftfy and html.unescape leave printable ASCII without "&" as it is,
    so such text (most queries) skips them and the import of ftfy. Written out rather than
    taken from open_clip's tokenizer module, whose import builds CLIP's BPE vocabulary (0.2-1 s
    of CPU in an ingest whose captions are not all ASCII) for a tokenizer this path never uses."""
    if _PLAIN.fullmatch(text) is None:
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip()


def _open_clip_tokenizer() -> Any:
    """open_clip's tokenizer module (CLIP's BPE tokenizer, the text cleaners) loaded by itself:
    it needs only torch, numpy, regex and ftfy, while `import open_clip` pulls torchvision, timm
    and transformers."""
    module = sys.modules.get(_TOKENIZER_MODULE)
    if module is not None:
        return module
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location(_TOKENIZER_MODULE, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[_TOKENIZER_MODULE] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_TOKENIZER_MODULE]
        raise
    return module


# --- loading an export ----------------------------------------------------------------------------


class ExportedTowers:
    """A backbone's exported towers, each loaded (and checked) on first use: a text query loads
    the tokenizer and the text tower, never the image tower. `loaded` names what was built."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder, self.meta = folder, meta
        self.fingerprint: str = meta["fingerprint"]
        engine = meta.get("engine", REFERENCE_ENGINE)
        self.compute = Compute("cpu", meta.get("precision", REFERENCE), engine=engine)
        self.loaded: set[str] = set()

    @classmethod
    def open(cls, folder: Path, fingerprint: str) -> ExportedTowers | None:
        """The export in `folder`; None when there is none (or it was made by another torch or
        format: it is to be made again); DamagedExport when it cannot be read."""
        path = folder / META
        if not folder.exists():
            return None
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            raise DamagedExport(f"{META} is missing") from None
        except (OSError, ValueError) as error:
            raise DamagedExport(f"{META} is unreadable: {error}") from None
        if meta.get("format") != FORMAT or meta.get("torch") != torch.__version__:
            return None
        if meta.get("engine") == "openvino" and (
            not openvino_installed() or meta.get("openvino") != openvino_version()
        ):
            return None
        if meta.get("fingerprint") != fingerprint:
            raise DamagedExport(f"{META} names backbone {meta.get('fingerprint')!r}")
        return cls(folder, meta)

    @property
    def has_text(self) -> bool:
        return bool(self.meta.get("text"))

    @property
    def has_image(self) -> bool:
        return bool(self.meta.get("image"))

    def _file(self, side: dict[str, Any], name: str) -> Path:
        path = self.folder / side["files"][name]
        try:
            size = path.stat().st_size
        except OSError as error:
            raise DamagedExport(f"{path.name} is unreadable ({error.strerror or error})") from None
        if size != side["bytes"][name]:
            raise DamagedExport(f"{path.name} has {size} bytes, not {side['bytes'][name]}")
        if _crc32(path) != side["crc32"][name]:
            raise DamagedExport(f"{path.name} does not hold what was written (its CRC differs)")
        return path

    # -- text ------------------------------------------------------------------------------------

    @cached_property
    def _text(self) -> tuple[Any, torch.nn.Module]:
        side = self.meta["text"]
        try:
            tokenizer = _load_tokenizer(side["tokenizer"], self._file_or_none(side, "tokenizer"))
            tower = _load_tower(
                side["tower"], self._file(side, "tower"), side.get("config"), self.compute
            )
            self.loaded.add("text")
            probe = self._run_text(tokenizer, tower, [side["probe"]["text"]])
        except DamagedExport:
            raise
        except Exception as error:  # any failure to read what was written
            raise DamagedExport(f"the text tower cannot be loaded ({_reason(error)})") from None
        self._check_probe("text", probe, side["probe"]["features"])
        return tokenizer, tower

    def _file_or_none(self, side: dict[str, Any], name: str) -> Path | None:
        return self._file(side, name) if name in side["files"] else None

    def _run_text(self, tokenizer: Any, tower: torch.nn.Module, texts: list[str]) -> np.ndarray:
        tokens = tokenizer(texts)
        pad_id = self.meta["text"].get("trim_pad_id")
        if pad_id is not None:
            tokens = _trim(tokens, pad_id)
        with torch.inference_mode(), _quiet(), self.autocast():
            return tower(tokens).float().cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Features of a list of texts, as the backbone's encode_texts gives them."""
        return self._run_text(*self._text, texts)

    # -- image -----------------------------------------------------------------------------------

    @cached_property
    def _preprocess(self) -> Preprocess:
        try:
            return Preprocess(**self.meta["image"]["preprocess"])
        except Exception as error:
            raise DamagedExport(
                f"the image preprocessing is unreadable ({_reason(error)})"
            ) from None

    @cached_property
    def _image(self) -> torch.nn.Module | OpenVinoImageTower:
        side = self.meta["image"]
        try:
            if "weights" in side["files"]:
                self._file(side, "weights")  # checked like the tower's file
            tower = _load_tower(
                side["tower"], self._file(side, "tower"), side.get("config"), self.compute
            )
            self.loaded.add("image")
            probe = self._run_image(tower, self._preprocess(probe_images()[0])[None])
        except DamagedExport:
            raise
        except Exception as error:
            raise DamagedExport(f"the image tower cannot be loaded ({_reason(error)})") from None
        self._check_probe("image", probe, side["probe"]["features"])
        return tower

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """A picture as the image tower's input (3, H, W), as the backbone's preprocess. Needs
        no tower: ingest's decoding workers start before the towers are loaded."""
        return self._preprocess(image)

    def encode_images(self, batch: torch.Tensor) -> np.ndarray:
        """Features of a batch of preprocessed images (N, 3, H, W)."""
        return self._run_image(self._image, batch)

    def _run_image(
        self, tower: torch.nn.Module | OpenVinoImageTower, batch: torch.Tensor
    ) -> np.ndarray:
        if isinstance(tower, OpenVinoImageTower):
            return tower(batch)
        batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), _quiet(), self.autocast():
            return tower(batch).float().cpu().numpy()

    def autocast(self) -> Any:
        """The towers run at the precision they were exported for (traced under it)."""
        from .backbone import autocast_for

        return autocast_for(self.compute)

    def _check_probe(self, side: str, features: np.ndarray, expected: list[float]) -> None:
        reference = np.asarray(expected, dtype=np.float32)
        if features.shape[1:] != reference.shape:
            raise DamagedExport(f"the {side} tower gives {features.shape[1]}-d features")
        diff = difference(features[0], reference, self.compute.precision)
        if not diff <= LOAD_TOLERANCE:
            raise DamagedExport(f"the {side} tower's features changed (max difference {diff:.2g})")


def difference(ours: np.ndarray, reference: np.ndarray, precision: str) -> float:
    """How far exported features are from the reference, on the scale of the tolerances: the
    largest absolute difference at fp32; at a reduced precision, that over the reference's
    largest value, scaled so that REDUCED_TOLERANCE maps onto EXPORT_TOLERANCE."""
    diff = float(np.abs(ours - reference).max()) if ours.size else 0.0
    if precision == REFERENCE:
        return diff
    scale = max(float(np.abs(reference).max()), 1e-6)
    return diff / scale * (EXPORT_TOLERANCE / REDUCED_TOLERANCE)


def _trim(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Backbone._trim_padding: drop the columns that are padding in every row."""
    used = (tokens != pad_id).any(dim=0).nonzero()
    return tokens[:, : int(used.max()) + 1] if len(used) else tokens[:, :1]


def _crc32(path: Path) -> int:
    """The file's CRC-32 (hardware-accelerated: ~0.015 s for the 90 MB MiniLM tower), so
    damage anywhere in it is seen, not only damage that changes a probe's features."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return zlib.crc32(view)


def _written(folder: Path, files: dict[str, str]) -> dict[str, dict[str, int]]:
    """What an export's meta records of its files, to check them at load."""
    return {
        "bytes": {name: (folder / file).stat().st_size for name, file in files.items()},
        "crc32": {name: _crc32(folder / file) for name, file in files.items()},
    }


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


@contextmanager
def _quiet() -> Iterator[None]:
    """torch.jit's deprecation notices and tracer warnings are not the user's business. And
    TorchScript's optimizing executor is off: it profiles and re-compiles a traced tower on its
    first calls (measured: 2-6 s for the bf16 image tower, against 0.3 s for a plain run), and
    gains nothing measurable after that on these towers."""
    with warnings.catch_warnings(), torch.jit.optimized_execution(False):
        warnings.simplefilter("ignore")
        yield


def _load_tokenizer(spec: dict[str, Any], path: Path | None) -> Any:
    if spec["kind"] == "hf" and path is not None:
        return _HFTokenizer(path, spec["clean"])
    if spec["kind"] == "open_clip_simple":
        module = _open_clip_tokenizer()
        return module.SimpleTokenizer(
            additional_special_tokens=spec["additional_special_tokens"] or None,
            context_length=spec["context_length"],
            clean=spec["clean"],
        )
    raise DamagedExport(f"unknown tokenizer {spec['kind']!r}")


def _load_tower(
    kind: str, path: Path, config: dict[str, Any] | None, compute: Compute
) -> torch.nn.Module | OpenVinoImageTower:
    if kind == "bert_mean" and config is not None:
        from safetensors.torch import load_file

        return MeanPooledBert(load_file(path), config["heads"], config["eps"], config["pad_id"])
    if kind == "torchscript":
        with _quiet():
            return torch.jit.load(str(path), map_location="cpu").eval()
    if kind == "openvino":
        return OpenVinoImageTower.read(path, compute.precision)
    raise DamagedExport(f"unknown tower kind {kind!r}")


# --- making an export -----------------------------------------------------------------------------


class _Encode(torch.nn.Module):
    """What TorchScript traces: one of the model's encode methods."""

    def __init__(self, model: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(x)


def image_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """A module whose forward is the model's encode_image, holding the vision tower alone."""
    return _Encode(_part_of(model, image=True), "encode_image")


def _part_of(model: torch.nn.Module, image: bool) -> torch.nn.Module:
    """A shallow copy of the model holding one side's weights only (they are shared, not
    copied): the vision tower for images, everything else for texts. A trace then saves only
    what that side runs."""
    part = copy.copy(model)
    modules = {k: m for k, m in model._modules.items() if (k == "visual") == image}
    object.__setattr__(part, "_modules", modules)
    if image:
        object.__setattr__(part, "_parameters", {})
        object.__setattr__(part, "_buffers", {})
    return part


def _tokenizer_spec(tokenizer: Any) -> tuple[dict[str, Any], str | None] | None:
    """How to rebuild open_clip's tokenizer without open_clip (and the tokenizers JSON to save),
    or None for a tokenizer this module does not rebuild."""
    kind = type(tokenizer).__name__
    clean = _CLEAN_NAMES.get(getattr(getattr(tokenizer, "clean_fn", None), "__name__", ""))
    if clean is None:
        return None
    if kind == "HFTokenizer":
        if getattr(tokenizer, "tokenizer_mode", "") or getattr(tokenizer, "strip_sep_token", False):
            return None
        backend = getattr(tokenizer.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        tokenizer(["set the padding and truncation"])  # so the saved JSON carries them
        spec = {"kind": "hf", "clean": clean, "context_length": tokenizer.context_length}
        return spec, backend.to_str()
    if kind == "SimpleTokenizer":
        if getattr(tokenizer, "reduction_fn", None) is not None:
            return None
        extra = [tokenizer.decoder[i] for i in tokenizer.all_special_ids[2:]]
        spec = {
            "kind": "open_clip_simple",
            "clean": clean,
            "context_length": tokenizer.context_length,
            "additional_special_tokens": extra,
        }
        return spec, None
    return None


def _bert_config(text_tower: torch.nn.Module) -> dict[str, Any] | None:
    """MeanPooledBert's settings for an open_clip HF text tower it reproduces, else None."""
    config = getattr(text_tower, "config", None)
    transformer = getattr(text_tower, "transformer", None)
    if (
        config is None
        or transformer is None
        or getattr(config, "model_type", None) != "bert"
        or type(getattr(text_tower, "pooler", None)).__name__ != "MeanPooler"
        or not isinstance(getattr(text_tower, "proj", None), torch.nn.Identity)
        or getattr(text_tower, "output_tokens", True)
        or getattr(config, "position_embedding_type", "absolute") != "absolute"
        or getattr(config, "hidden_act", None) != "gelu"
        or getattr(config, "pad_token_id", None) is None
    ):
        return None
    return {
        "heads": int(config.num_attention_heads),
        "eps": float(config.layer_norm_eps),
        "pad_id": int(config.pad_token_id),
    }


def _trace(backbone: Backbone, module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace on the CPU at the backbone's precision (under autocast, the casts are recorded)."""
    with _quiet(), torch.no_grad(), backbone.autocast():
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
        torch.jit.save(traced, str(path))


def _export_text(backbone: Backbone, folder: Path) -> dict[str, Any] | None:
    tokenizer = _tokenizer_spec(backbone.tokenizer)
    if tokenizer is None:
        return None
    spec, tokenizer_json = tokenizer
    files: dict[str, str] = {}
    if tokenizer_json is not None:
        (folder / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        files["tokenizer"] = "tokenizer.json"
    text_tower = getattr(backbone.model, "text", None)
    pad_id = getattr(getattr(text_tower, "config", None), "pad_token_id", None)
    trim = pad_id is not None and hasattr(text_tower, "pooler")  # as Backbone._trim_padding
    bert = _bert_config(text_tower) if text_tower is not None else None
    if bert is not None:
        from safetensors.torch import save_file

        assert text_tower is not None
        weights = {
            k: v.detach().contiguous()
            for k, v in text_tower.transformer.state_dict().items()
            if k.startswith(("embeddings.", "encoder."))
        }
        save_file(weights, str(folder / "text.safetensors"))
        files["tower"], kind = "text.safetensors", "bert_mean"
    else:
        example = backbone.tokenizer(list(PROBE_TEXTS[:2]))
        example = _trim(example, pad_id) if trim else example
        _trace(
            backbone,
            _Encode(_part_of(backbone.model, image=False), "encode_text"),
            example,
            folder / "text.ts",
        )
        files["tower"], kind = "text.ts", "torchscript"
    probe = PROBE_TEXTS[0]
    return {
        "tower": kind,
        "config": bert,
        "tokenizer": spec,
        "trim_pad_id": int(pad_id) if trim else None,
        "files": files,
        **_written(folder, files),
        "probe": {"text": probe, "features": backbone.encode_texts([probe])[0].tolist()},
    }


def _export_image(backbone: Backbone, folder: Path) -> dict[str, Any] | None:
    preprocess = Preprocess.from_config(dict(backbone.model.visual.preprocess_cfg))
    if preprocess is None:
        return None
    probes = probe_images()
    example = torch.stack([backbone.preprocess(p) for p in probes[:2]])
    example = example.contiguous(memory_format=torch.channels_last)
    if backbone.compute.engine == "openvino":
        from .openvino_tower import save

        save(backbone.openvino_image_model, folder / "image.xml")
        files, kind = {"tower": "image.xml", "weights": "image.bin"}, "openvino"
    else:
        _trace(backbone, image_encoder(backbone.model), example, folder / "image.ts")
        files, kind = {"tower": "image.ts"}, "torchscript"
    reference = backbone.encode_images(backbone.preprocess(probes[0])[None])[0]
    return {
        "tower": kind,
        "config": None,
        "preprocess": preprocess.to_dict(),
        "files": files,
        **_written(folder, files),
        "probe": {"features": reference.tolist()},
    }


def _prove_text(backbone: Backbone, towers: ExportedTowers, texts: Sequence[str]) -> float:
    """The largest difference between exported and open_clip text features (tokens first:
    any token that differs fails the proof)."""
    side = towers.meta["text"]
    tokenizer = _load_tokenizer(side["tokenizer"], towers._file_or_none(side, "tokenizer"))
    for text in texts:
        if not torch.equal(tokenizer([text]), backbone.tokenizer([text])):
            return float("inf")
    diff = 0.0
    for batch in ([t] for t in texts):  # one by one, as queries are embedded
        ours, reference = towers.encode_texts(batch), backbone.encode_texts(batch)
        diff = max(diff, difference(ours, reference, towers.compute.precision))
    both = list(texts[:3])  # and a padded batch
    ours, reference = towers.encode_texts(both), backbone.encode_texts(both)
    return max(diff, difference(ours, reference, towers.compute.precision))


def _prove_image(
    backbone: Backbone, towers: ExportedTowers, images: Sequence[Image.Image]
) -> float:
    diff = 0.0
    for image in images:
        ours, reference = towers.preprocess(image), backbone.preprocess(image)
        if ours.shape != reference.shape:
            return float("inf")
        diff = max(diff, float((ours - reference).abs().max()))
        features = towers.encode_images(ours[None])
        reference_features = backbone.encode_images(reference[None])
        diff = max(diff, difference(features, reference_features, towers.compute.precision))
    return diff


def export_towers(
    backbone: Backbone,
    folder: Path,
    texts: Sequence[str] = (),
    images: Sequence[Image.Image] = (),
) -> ExportedTowers:
    """Save the backbone's towers to `folder` (replacing what is there), each side proven on
    PROBE_TEXTS / probe_images() (and `texts`, `images`) against open_clip first; a side that
    cannot be saved or reproduced is left out (meta.json says null), so its queries keep the
    open_clip path. Written to a temporary folder and renamed, so a reader never sees half an
    export. OSError when the folder cannot be written."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        meta: dict[str, Any] = {
            "format": FORMAT,
            "fingerprint": backbone.features_key,
            "precision": backbone.compute.precision,
            "engine": backbone.compute.engine,
            "spec": backbone.spec,
            "torch": torch.__version__,
            **({"openvino": openvino_version()} if backbone.compute.engine == "openvino" else {}),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "text": _try_side("text", _export_text, backbone, work),
            "image": _try_side("image", _export_image, backbone, work),
            "proof": {},
        }
        towers = ExportedTowers(work, meta)
        checks = (
            ("text", _prove_text, [*PROBE_TEXTS, *texts]),
            ("image", _prove_image, [*probe_images(), *images]),
        )
        for side, prove, inputs in checks:
            if not meta[side]:
                continue
            try:
                diff = prove(backbone, towers, inputs)
            except Exception as error:  # noqa: BLE001 - a side that fails its proof is left out
                log.debug("exported %s tower failed its check: %s", side, _reason(error))
                diff = float("inf")
            if diff <= EXPORT_TOLERANCE:
                meta["proof"][side] = {"max_abs_diff": diff, "inputs": len(inputs)}
            else:
                log.debug("the exported %s tower differs from open_clip by %s", side, diff)
                for name in meta[side]["files"].values():
                    (work / name).unlink(missing_ok=True)
                meta[side] = None
        (work / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(work, folder)
        except OSError:
            if not (folder / META).is_file():  # not another process's export in the way
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # what is there now: ours, or an equal export another process renamed into place first
    return ExportedTowers(folder, json.loads((folder / META).read_text(encoding="utf-8")))


def _try_side(side: str, export: Any, backbone: Backbone, folder: Path) -> dict[str, Any] | None:
    try:
        return export(backbone, folder)
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 - a tower that cannot be traced keeps open_clip
        log.debug("cannot export the %s tower: %s", side, _reason(error))
        return None

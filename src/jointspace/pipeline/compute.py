"""Where, at what precision and by what engine the backbone runs: `--device auto|cpu|cuda[:N]`,
`--precision auto|fp32|bf16|fp16`, `--engine auto|torch|openvino`.

`auto` device: CUDA when torch sees a GPU, else the CPU. `auto` precision: on a GPU, bf16 where
it has bf16 (fp16 elsewhere); on a CPU, bf16 where the CPU does bf16 natively (the avx512_bf16
or AMX flags; measured here: torch's image tower at 1.5-1.8x the fp32 images/s, features at
cosine >= 0.998 of fp32) and fp32 elsewhere (emulated bf16 is slower than fp32). fp32 is the
reference.

Precision changes the features a little, so it is part of the backbone's identity for its
feature cache and its exported towers (`features_key`): fp32 features and bf16 features are
never mixed in one cache. A model trained with one setting runs with another's features:
measured on the six tasks (benchmarks/precision.py, RESULTS.md issue 11), a model trained on
fp32 features read with the default bf16 OpenVINO features stays within 0.005 R@10 / MAP of
its own reading, and any two settings differ by at most 0.017 (four queries of 232), with no
direction. The device is not part of that identity (fp32 on a GPU and on a CPU agree to ~1e-6).

The engine runs the image tower: `torch` (the reference, and the only one on a GPU) or
`openvino` (pipeline/openvino_tower.py; measured here at 1.8x torch's images/s at bf16, 1.6x at
fp32). `auto` is openvino on a CPU where it is installed (a dependency), torch elsewhere. Texts
always run on torch. The engine is part of the features' identity too: OpenVINO's bf16 features
are not torch's bf16 features, so they are cached and exported apart.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from ..errors import JointspaceError

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "JOINTSPACE_DEVICE"
PRECISION_ENV = "JOINTSPACE_PRECISION"
ENGINE_ENV = "JOINTSPACE_ENGINE"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENGINES = ("auto", "torch", "openvino")
REFERENCE = "fp32"
REFERENCE_ENGINE = "torch"
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_BATCH = 32  # measured on 2 cores: 16-64 within the noise, 64 slower in some runs
GPU_MAX_BATCH = 512
GPU_BYTES_PER_IMAGE = 32 << 20  # a generous bound on a 224 px image's activations at fp16


@dataclass(frozen=True)
class Compute:
    """A resolved device, precision and engine, and why they were chosen (for logs and
    reports)."""

    device: str
    precision: str
    reason: str = ""
    engine: str = REFERENCE_ENGINE

    @classmethod
    def resolve(
        cls, device: str | None = None, precision: str | None = None, engine: str | None = None
    ) -> Compute:
        """Resolve `auto` (or None: the environment's JOINTSPACE_DEVICE / JOINTSPACE_PRECISION /
        JOINTSPACE_ENGINE, then auto) to what this machine has. Raises JointspaceError for an
        unusable value."""
        device = _resolve_device((device or os.environ.get(DEVICE_ENV) or "auto").strip())
        wanted = (precision or os.environ.get(PRECISION_ENV) or "auto").strip().lower()
        if wanted not in PRECISIONS:
            raise JointspaceError(
                f"Unknown precision {wanted!r}: use one of {', '.join(PRECISIONS)}."
            )
        chosen_engine = _resolve_engine(device, engine or os.environ.get(ENGINE_ENV) or "auto")
        if wanted != "auto":
            if wanted == "fp16" and not device.startswith("cuda"):
                raise JointspaceError(
                    "fp16 runs on a GPU only; on the CPU use --precision bf16 or fp32."
                )
            return cls(device, wanted, "as asked", chosen_engine)
        chosen, reason = _auto_precision(device)
        return cls(device, chosen, reason, chosen_engine)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype the towers run in under autocast (None: fp32, no autocast)."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def default_batch_size(self) -> int:
        """Images per tower batch: CPU_BATCH on a CPU; on a GPU as many as its free memory
        takes at GPU_BYTES_PER_IMAGE each (at least 32, at most GPU_MAX_BATCH)."""
        if not self.on_gpu:
            return CPU_BATCH
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        return int(min(GPU_MAX_BATCH, max(CPU_BATCH, free // GPU_BYTES_PER_IMAGE)))

    def default_workers(self) -> int:
        """Decoding worker processes: one on a CPU (the towers need the cores); on a GPU every
        core but one, to keep it fed."""
        if not self.on_gpu:
            return 1
        return max(1, (os.cpu_count() or 2) - 1)

    def describe(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.device}, {self.precision}{reason}, {self.engine}"

    def features_key(self, fingerprint: str) -> str:
        """The identity of a backbone's features made with this precision and engine."""
        return features_key(fingerprint, self.precision, self.engine)


def features_key(fingerprint: str, precision: str, engine: str = REFERENCE_ENGINE) -> str:
    """The identity of a backbone's features at a precision and engine: its fingerprint for
    torch fp32 (so caches and exports made before precision was an option stay valid), else a
    hash of them (torch's key leaves the engine out, as before engines existed)."""
    if precision == REFERENCE and engine == REFERENCE_ENGINE:
        return fingerprint
    identity = f"{fingerprint}:{precision}"
    if engine != REFERENCE_ENGINE:
        identity += f":{engine}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _resolve_engine(device: str, engine: str) -> str:
    from .openvino_tower import openvino_installed

    engine = engine.strip().lower()
    if engine not in ENGINES:
        raise JointspaceError(f"Unknown engine {engine!r}: use one of {', '.join(ENGINES)}.")
    if engine == "auto":
        on_cpu = not device.startswith("cuda")
        return "openvino" if on_cpu and openvino_installed() else REFERENCE_ENGINE
    if engine == "openvino":
        if device.startswith("cuda"):
            raise JointspaceError(
                "--engine openvino runs on the CPU; on a GPU use --engine torch (or auto)."
            )
        if not openvino_installed():
            raise JointspaceError(
                "--engine openvino needs OpenVINO: `pip install openvino`, or use --engine torch."
            )
    return engine


def _resolve_device(device: str) -> str:
    import torch  # here: resolving is the first thing that needs it

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise JointspaceError(f"Unknown device {device!r}: use auto, cpu, cuda or cuda:N.")
    if not torch.cuda.is_available():
        raise JointspaceError(
            f"--device {device}: torch sees no CUDA GPU on this machine; use --device cpu "
            "(or auto)."
        )
    if index and int(index) >= torch.cuda.device_count():
        raise JointspaceError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
            f"numbered from 0."
        )
    return device


def _auto_precision(device: str) -> tuple[str, str]:
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_bf16_supported():
            return "bf16", "the GPU supports bf16"
        return "fp16", "the GPU has no bf16"
    flags = cpu_flags()
    native = [flag for flag in _NATIVE_BF16_FLAGS if flag in flags]
    if native:
        return "bf16", f"the CPU has {'/'.join(native)}"
    return REFERENCE, "the CPU has no native bf16"


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()

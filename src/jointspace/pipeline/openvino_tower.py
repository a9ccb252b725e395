"""The image tower run by OpenVINO (`--engine openvino`, the default on a CPU): the same
fp32 TorchScript trace the exported towers hold, converted once with `openvino.convert_model`
and compiled for the CPU at the run's precision (INFERENCE_PRECISION_HINT f32 or bf16).

Measured on this machine (2 cores, avx512_bf16, no AMX; benchmarks/engines.py, RESULTS.md issue
11): the EfficientNet-Lite0 tower at 591 images/s (bf16) and 336 (f32) against torch's 332 /
220; its f32 features agree with torch's fp32 to ~3e-6 of their scale, its bf16 features with
torch's fp32 at cosine >= 0.998 on real stamps (torch's own bf16: 0.998; 0.993 and 0.991 on the
synthetic probe pictures). Its outputs do not depend on the batch size or on the call (a batch
of one and the same image in a batch of six give the same bits), so a query and an ingest embed
a picture alike. Converting costs ~2.5 s (traced once per process that needs it, or read from
an export in 0.2-0.3 s).
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

_HINTS = {"fp32": "f32", "bf16": "bf16"}


def openvino_installed() -> bool:
    """Whether OpenVINO can be imported (looked up without importing it)."""
    return importlib.util.find_spec("openvino") is not None


@cache
def core() -> Any:
    """The process's one OpenVINO Core, kept for its lifetime. Each Core loads its own CPU
    plugin, and the plugin points the thread's alternate signal stack at a buffer of its own,
    handing back the previous one when it is destroyed: two Cores destroyed in the order they
    were made leave the thread on a freed stack, and the next Python signal handler (they run
    on that stack, e.g. the SVG render time limit's SIGALRM) kills the process with SIGSEGV
    (seen in the test suite with OpenVINO 2026.4)."""
    import openvino

    return openvino.Core()


def openvino_version() -> str:
    import openvino

    return str(openvino.__version__)


def convert(module: torch.nn.Module, example: torch.Tensor) -> Any:
    """An OpenVINO model of `module` (an image tower taking (N, 3, H, W) pixels), traced at
    fp32 on `example`; the batch size stays free."""
    import openvino

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notices are not the user's business
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
        model = openvino.convert_model(traced, example_input=example)
    model.reshape([-1, *example.shape[1:]])
    return model


def save(model: Any, path: Path) -> None:
    """Write `model` as OpenVINO IR: `path` (.xml) and its weights beside it (.bin), at full
    precision (the compile step decides the precision)."""
    import openvino

    openvino.save_model(model, str(path), compress_to_fp16=False)


class OpenVinoImageTower:
    """An OpenVINO image model compiled for the CPU at a precision: pixels in, features out.
    Safe to call from several threads (the service's): each thread has its own request."""

    def __init__(self, model: Any, precision: str) -> None:

        if precision not in _HINTS:
            raise ValueError(f"OpenVINO runs the towers at fp32 or bf16, not {precision}")
        config = {
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, every thread on it
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),  # as many as torch would take
        }
        self.compiled = core().compile_model(model, "CPU", config)
        self._local = threading.local()

    @classmethod
    def read(cls, path: Path, precision: str) -> OpenVinoImageTower:
        """Compile the IR saved at `path` (.xml, with its .bin beside it)."""
        return cls(core().read_model(str(path)), precision)

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """Features (N, D) float32 of a batch of preprocessed images (N, 3, H, W)."""
        pixels = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer([pixels])
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy

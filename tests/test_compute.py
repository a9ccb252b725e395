"""Device and precision: `--device auto|cpu|cuda[:N]`, `--precision auto|fp32|bf16|fp16`.

The CPU paths run for real here (the tiny random backbone at fp32 and bf16, the session model
ingested and searched at both); the CUDA choices are checked as far as a machine without a GPU
can: what `auto` picks and the sentence an impossible choice gets.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import COLLECTION, assert_bad_run, json_stdout, run_cli

from jointspace.errors import JointspaceError
from jointspace.pipeline import compute as compute_module
from jointspace.pipeline.backbone import Backbone
from jointspace.pipeline.compute import Compute, features_key
from jointspace.pipeline.features import FeatureCache
from jointspace.pipeline.loaded import LoadedModel
from jointspace.pipeline.towers import export_towers, towers_dir


def test_auto_takes_bf16_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOINTSPACE_DEVICE", raising=False)
    monkeypatch.delenv("JOINTSPACE_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(compute_module, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    chosen = Compute.resolve()
    assert (chosen.device, chosen.precision) == ("cpu", "bf16")
    assert "avx512_bf16" in chosen.describe()
    monkeypatch.setattr(compute_module, "cpu_flags", lambda: frozenset({"avx2"}))
    chosen = Compute.resolve("auto", "auto")
    assert (chosen.device, chosen.precision) == ("cpu", "fp32")
    assert "no native bf16" in chosen.reason


def test_auto_on_a_gpu_takes_bf16_or_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert Compute.resolve("auto", "auto") == Compute("cuda", "fp16", "the GPU has no bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert Compute.resolve("cuda", None).precision == "bf16"


def test_the_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOINTSPACE_DEVICE", "cpu")
    monkeypatch.setenv("JOINTSPACE_PRECISION", "fp32")
    assert Compute.resolve() == Compute("cpu", "fp32", "as asked")
    assert Compute.resolve(precision="bf16").precision == "bf16"  # an argument wins


@pytest.mark.parametrize(
    ("device", "precision", "expected"),
    [
        ("cpu", "fp8", "Unknown precision 'fp8'"),
        ("tpu", "auto", "Unknown device 'tpu'"),
        ("cuda:x", "auto", "Unknown device 'cuda:x'"),
        ("cpu", "fp16", "fp16 runs on a GPU only"),
    ],
)
def test_a_bad_choice_is_one_sentence(device: str, precision: str, expected: str) -> None:
    with pytest.raises(JointspaceError, match=expected):
        Compute.resolve(device, precision)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(JointspaceError, match="torch sees no CUDA GPU.*--device cpu"):
        Compute.resolve("cuda", "auto")


def test_precision_is_part_of_the_features_identity_not_of_the_model() -> None:
    assert features_key("abc", "fp32") == "abc"  # caches made before precision existed stay
    assert features_key("abc", "bf16") != "abc"
    assert features_key("abc", "bf16") != features_key("abc", "fp16")
    assert features_key("abc", "bf16") != features_key("abd", "bf16")


def test_bf16_features_are_close_to_fp32_but_cached_apart(tiny, tmp_path) -> None:
    fp32 = Backbone(tiny.spec, Compute("cpu", "fp32"))
    bf16 = Backbone(tiny.spec, Compute("cpu", "bf16"))
    assert fp32.fingerprint == bf16.fingerprint  # the same model and weights
    assert fp32.features_key != bf16.features_key
    pixels = torch.rand(4, 3, 32, 32)
    a, b = fp32.encode_images(pixels), bf16.encode_images(pixels)
    assert a.dtype == b.dtype == np.float32
    assert not np.array_equal(a, b)  # bf16 really ran
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.98
    texts = fp32.encode_texts(["a penguin"]), bf16.encode_texts(["a penguin"])
    assert texts[0].shape == texts[1].shape
    paths = {FeatureCache.for_backbone(tmp_path, b.features_key).path for b in (fp32, bf16)}
    assert len(paths) == 2


def test_bf16_towers_are_exported_and_run_at_bf16(tiny, tmp_path) -> None:
    bf16 = Backbone(tiny.spec, Compute("cpu", "bf16"))
    towers = export_towers(bf16, towers_dir(tmp_path, bf16.features_key))
    assert towers.meta["precision"] == "bf16"
    assert towers.has_text and towers.has_image, towers.meta["proof"]
    pixels = torch.rand(2, 3, 32, 32)
    ours, reference = towers.encode_images(pixels), bf16.encode_images(pixels)
    assert np.abs(ours - reference).max() <= 0.02 * np.abs(reference).max()
    fp32 = Backbone(tiny.spec, Compute("cpu", "fp32"))
    assert not np.array_equal(ours, fp32.encode_images(pixels))


def test_a_model_runs_at_another_precision_than_it_was_trained_at(tiny_model, tmp_path) -> None:
    loaded = LoadedModel.load(tiny_model, tmp_path, Compute("cpu", "bf16"))
    assert loaded.features_key == features_key(loaded.backbone_fingerprint, "bf16")
    vector = loaded.embed(text="a penguin")
    reference = LoadedModel.load(tiny_model, None, Compute("cpu", "fp32")).embed(text="a penguin")
    cosine = float(vector @ reference / np.linalg.norm(vector) / np.linalg.norm(reference))
    assert cosine > 0.98


def test_cli_ingest_and_query_at_each_precision(session, collection, tmp_path) -> None:
    home = tmp_path / "home"
    for precision in ("fp32", "bf16"):
        name = f"{COLLECTION}-{precision}"
        args = ["--precision", precision, "ingest", session.corpus, "--collection", name]
        proc = run_cli([*args, "--model", session.model, "--json"], home)
        assert proc.returncode == 0, proc.stderr
        assert json_stdout(proc)["ingested"] == session.items
        query = ["query", "--collection", name, "--text", "penguin", "--json"]
        proc = run_cli(["--precision", precision, *query], home)
        assert proc.returncode == 0, proc.stderr
        assert json_stdout(proc)["results"]
    assert len(list((home / "features").glob("*.sqlite"))) == 2  # one cache per precision


def test_cli_bad_device_or_precision_is_a_bad_run(session, tmp_path) -> None:
    proc = run_cli(["--precision", "fp8", "collections", "list"], tmp_path)
    assert_bad_run(proc, "Unknown precision 'fp8'")
    if not torch.cuda.is_available():
        query = ["query", "--collection", COLLECTION, "--text", "x", "--device", "cuda"]
        assert_bad_run(run_cli(query, session.home), "no CUDA GPU")


def test_a_gpu_batches_by_its_memory_and_decodes_on_all_cores_but_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 << 30, 16 << 30))
    gpu = Compute("cuda", "bf16")
    assert (gpu.default_batch_size(), gpu.default_workers()) == (256, 15)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 << 30, 140 << 30))
    assert gpu.default_batch_size() == 512
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 30, 140 << 30))
    assert gpu.default_batch_size() == 32
    cpu = Compute("cpu", "fp32")
    assert (cpu.default_batch_size(), cpu.default_workers()) == (32, 1)

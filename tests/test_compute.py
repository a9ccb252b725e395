"""Device, precision and engine: `--device auto|cpu|cuda[:N]`, `--precision
auto|fp32|bf16|fp16`, `--engine auto|torch|openvino`.

The CPU paths run for real here (the tiny random backbone at fp32 and bf16 on torch and on
OpenVINO, the session model ingested and searched with each); the CUDA choices are checked as
far as a machine without a GPU can: what `auto` picks and the sentence an impossible choice gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

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
from jointspace.pipeline.openvino_tower import OpenVinoImageTower
from jointspace.pipeline.towers import DamagedExport, ExportedTowers, export_towers, towers_dir


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
    monkeypatch.setenv("JOINTSPACE_ENGINE", "torch")
    assert Compute.resolve() == Compute("cpu", "fp32", "as asked", "torch")
    assert Compute.resolve(precision="bf16").precision == "bf16"  # an argument wins
    assert Compute.resolve(engine="openvino").engine == "openvino"


def test_auto_engine_is_openvino_on_a_cpu_and_torch_on_a_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JOINTSPACE_ENGINE", raising=False)
    assert Compute.resolve("cpu", "fp32").engine == "openvino"  # installed with jointspace
    assert "openvino" in Compute.resolve("cpu", "fp32").describe()
    from jointspace.pipeline import openvino_tower

    monkeypatch.setattr(openvino_tower, "openvino_installed", lambda: False)
    assert Compute.resolve("cpu", "fp32").engine == "torch"
    with pytest.raises(JointspaceError, match="needs OpenVINO: `pip install openvino`"):
        Compute.resolve("cpu", "fp32", "openvino")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert Compute.resolve("cuda", "auto").engine == "torch"


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
    with pytest.raises(JointspaceError, match="Unknown engine 'tensorrt': use one of auto"):
        Compute.resolve("cpu", "fp32", "tensorrt")


def test_openvino_is_refused_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(JointspaceError, match="runs on the CPU; on a GPU use --engine torch"):
        Compute.resolve("cuda", "bf16", "openvino")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(JointspaceError, match="torch sees no CUDA GPU.*--device cpu"):
        Compute.resolve("cuda", "auto")


def test_precision_is_part_of_the_features_identity_not_of_the_model() -> None:
    assert features_key("abc", "fp32") == "abc"  # caches made before precision existed stay
    assert features_key("abc", "bf16") != "abc"
    assert features_key("abc", "bf16") != features_key("abc", "fp16")
    assert features_key("abc", "bf16") != features_key("abd", "bf16")
    assert features_key("abc", "bf16", "torch") == features_key("abc", "bf16")  # as before
    keys = {features_key("abc", p, e) for p in ("fp32", "bf16") for e in ("torch", "openvino")}
    assert len(keys) == 4  # the engine's features are never mixed with torch's


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
    settings = [("fp32", "torch"), ("bf16", "torch"), ("bf16", "openvino")]
    for precision, engine in settings:
        name = f"{COLLECTION}-{precision}-{engine}"
        compute = ["--precision", precision, "--engine", engine]
        args = [*compute, "ingest", session.corpus, "--collection", name]
        proc = run_cli([*args, "--model", session.model, "--json"], home)
        assert proc.returncode == 0, proc.stderr
        assert json_stdout(proc)["ingested"] == session.items
        image = session.corpus / "food/fruit/banana.png"
        query = ["query", "--collection", name, "--image", image, "--target", "image", "--json"]
        proc = run_cli([*query, *compute], home)  # global options after the command, too
        assert proc.returncode == 0, proc.stderr
        best = json_stdout(proc)["results"][0]  # a query embeds a picture as ingest did
        assert best["payload"]["key"] == "food/fruit/banana.png"
        assert best["score"] == pytest.approx(1.0, abs=1e-3)
    assert len(list((home / "features").glob("*.sqlite"))) == 3  # one cache per setting
    assert len(list((home / "towers").iterdir())) == 3  # and one export


def test_cli_bad_device_or_precision_is_a_bad_run(session, tmp_path) -> None:
    proc = run_cli(["--precision", "fp8", "collections", "list"], tmp_path)
    assert_bad_run(proc, "Unknown precision 'fp8'")
    proc = run_cli(["--engine", "tensorrt", "collections", "list"], tmp_path)
    assert_bad_run(proc, "Unknown engine 'tensorrt'")
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


def test_openvino_features_match_torch_and_are_cached_apart(tiny, tmp_path) -> None:
    torch_fp32 = Backbone(tiny.spec, Compute("cpu", "fp32", engine="torch"))
    openvino_fp32 = Backbone(tiny.spec, Compute("cpu", "fp32", engine="openvino"))
    openvino_bf16 = Backbone(tiny.spec, Compute("cpu", "bf16", engine="openvino"))
    keys = {b.features_key for b in (torch_fp32, openvino_fp32, openvino_bf16)}
    assert len(keys) == 3
    pixels = torch.rand(5, 3, 32, 32)
    reference = torch_fp32.encode_images(pixels)
    f32, bf16 = openvino_fp32.encode_images(pixels), openvino_bf16.encode_images(pixels)
    assert f32.dtype == bf16.dtype == np.float32 and f32.shape == reference.shape
    assert np.abs(f32 - reference).max() <= 1e-4 * np.abs(reference).max()
    assert not np.array_equal(bf16, f32)  # bf16 really ran
    cosine = (bf16 * reference).sum(1) / np.linalg.norm(bf16, axis=1)
    assert (cosine / np.linalg.norm(reference, axis=1)).min() > 0.98
    # a picture gives the same bits alone and in a batch: a query embeds it as ingest did
    assert np.array_equal(openvino_bf16.encode_images(pixels[2:3])[0], bf16[2])
    # texts stay on torch: the same features whatever the engine at one precision
    text = "a penguin"
    assert np.array_equal(openvino_fp32.encode_texts([text]), torch_fp32.encode_texts([text]))


def test_openvino_tower_answers_several_threads_at_once(tiny) -> None:
    backbone = Backbone(tiny.spec, Compute("cpu", "fp32", engine="openvino"))
    tower = OpenVinoImageTower(backbone.openvino_image_model, "fp32")
    batches = [torch.rand(3, 3, 32, 32) for _ in range(4)]
    expected = [tower(b) for b in batches]
    results: dict[int, list[np.ndarray]] = {}

    def run(index: int) -> None:
        results[index] = [tower(batches[index]) for _ in range(20)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, outputs in results.items():
        assert all(np.array_equal(out, expected[index]) for out in outputs)


def test_openvino_towers_are_exported_as_ir_checked_and_reloaded(tiny, tmp_path) -> None:
    backbone = Backbone(tiny.spec, Compute("cpu", "bf16", engine="openvino"))
    towers = export_towers(backbone, towers_dir(tmp_path, backbone.features_key))
    assert (towers.meta["engine"], towers.meta["image"]["tower"]) == ("openvino", "openvino")
    assert set(towers.meta["image"]["files"].values()) == {"image.xml", "image.bin"}
    assert towers.meta["proof"]["image"]["max_abs_diff"] == 0.0  # the same compiled model
    again = ExportedTowers.open(towers.folder, backbone.features_key)
    assert again is not None and again.compute.engine == "openvino"
    pixels = torch.rand(3, 3, 32, 32)
    assert np.array_equal(again.encode_images(pixels), backbone.encode_images(pixels))
    # damaged weights are seen before OpenVINO reads them
    weights = towers.folder / "image.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    damaged = ExportedTowers.open(towers.folder, backbone.features_key)
    assert damaged is not None
    with pytest.raises(DamagedExport, match="image.bin does not hold what was written"):
        damaged.encode_images(pixels)
    # an export made by another OpenVINO is made again, like one made by another torch
    meta_path = towers.folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "openvino": "1999.0"}))
    assert ExportedTowers.open(towers.folder, backbone.features_key) is None


_SIGNAL_AFTER_TOWERS = """
import gc, signal, time
import torch
from jointspace.pipeline.openvino_tower import OpenVinoImageTower, convert
module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1))
model = convert(module, torch.rand(2, 3, 16, 16))
first, second = OpenVinoImageTower(model, "bf16"), OpenVinoImageTower(model, "fp32")
first(torch.rand(1, 3, 16, 16)), second(torch.rand(1, 3, 16, 16))
del first  # towers released in the order they were made in (not the reverse)
gc.collect()
del second
gc.collect()
fired = []
signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
signal.setitimer(signal.ITIMER_REAL, 0.01)
time.sleep(0.1)
print("handled", fired == [signal.SIGALRM])
"""


def test_a_signal_handler_still_runs_after_openvino_towers_come_and_go() -> None:
    """Each OpenVINO Core's CPU plugin moves the thread's alternate signal stack and hands it
    back when destroyed; towers on separate Cores released out of order left a freed stack, and
    the next Python signal handler (the SVG render time limit) crashed the process."""
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AFTER_TOWERS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip().endswith("handled True")

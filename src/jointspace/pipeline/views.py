"""Another view of an image (crop, flip, colour jitter), so an image query is never the very
image stored in its target unit."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from ..corpus.images import decode_image, read_image_bytes
from ..corpus.item import Item, bytes_hash
from ..errors import BadItem
from .backbone import Backbone
from .features import FeatureCache

VIEW_VERSION = "view2"  # view2: seeded by the image bytes, not the item key
_AUGMENT = transforms.Compose(
    [
        transforms.RandomResizedCrop(256, scale=(0.5, 1.0), ratio=(0.75, 1.33)),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3),
    ]
)


def augmented_view(image: Image.Image, key: str) -> Image.Image:
    """A random crop/flip/colour-jitter of `image`, the same for the same key on every run."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % (2**63)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _AUGMENT(image)


def view_features(
    items: Sequence[Item], backbone: Backbone, cache: FeatureCache, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features of one augmented view per item (cached), and a mask of items that
    have one (an item without a readable image has none)."""
    features = np.zeros((len(items), backbone.image_dim), dtype=np.float32)
    mask = np.zeros(len(items), dtype=bool)
    pending: list[tuple[int, str, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        vectors = backbone.encode_images(torch.stack([p for _, _, p in pending]))
        vectors = vectors.astype(np.float16).astype(np.float32)
        cache.put_many(
            "view", [(k, v, None, None) for (_, k, _), v in zip(pending, vectors, strict=True)]
        )
        for (row, _, _), vector in zip(pending, vectors, strict=True):
            features[row], mask[row] = vector, True
        pending.clear()

    for row, item in enumerate(items):
        if item.image is None and item.image_bytes is None:
            continue
        try:
            data = read_image_bytes(item)
        except BadItem:
            continue
        key = f"{bytes_hash(data)}:{VIEW_VERSION}"
        hit = cache.get_many("view", [key]).get(key)
        if hit is not None:
            features[row], mask[row] = hit[0], True
            continue
        try:
            image = decode_image(data, item.image or item.key)
        except BadItem:
            continue
        # seeded by content, like the cache key: one picture has one view, whatever its item
        pending.append((row, key, backbone.preprocess(augmented_view(image, key))))
        if len(pending) == batch_size:
            flush()
    flush()
    return features, mask

"""Modality corruption: the junk real corpora have, applied to units on purpose.

A corrupted unit has exactly one modality spoiled: its caption swapped for another unit's
("a caption about something else") or dropped, or its image swapped for another unit's or
blanked (the features of a blank placeholder image). Training with it teaches the gate to route;
evaluating with it (the corrupted-units protocol) measures whether it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .backbone import Backbone

CLEAN, TEXT_SWAPPED, TEXT_DROPPED, IMAGE_SWAPPED, IMAGE_BLANKED = range(5)
KIND_NAMES = {
    CLEAN: "clean",
    TEXT_SWAPPED: "caption swapped",
    TEXT_DROPPED: "caption dropped",
    IMAGE_SWAPPED: "image swapped",
    IMAGE_BLANKED: "image blanked",
}


@dataclass
class Units:
    """Feature rows of units; a False mask marks a missing modality."""

    image: np.ndarray
    text: np.ndarray
    image_mask: np.ndarray
    text_mask: np.ndarray


def corrupt_units(
    units: Units, probability: float, rng: np.random.Generator, blank_image: np.ndarray
) -> tuple[Units, np.ndarray]:
    """Corrupt one modality of each complete unit with `probability` (kind drawn uniformly);
    returns the corrupted copy and each row's kind (CLEAN for untouched rows)."""
    n = len(units.image)
    complete = units.image_mask & units.text_mask
    hit = (rng.random(n) < probability) & complete
    kinds = np.where(hit, rng.integers(TEXT_SWAPPED, IMAGE_BLANKED + 1, n), CLEAN)
    donors = _donors(n, rng)
    image, text = units.image.copy(), units.text.copy()
    image_mask, text_mask = units.image_mask.copy(), units.text_mask.copy()
    rows = kinds == TEXT_SWAPPED
    text[rows] = units.text[donors[rows]]
    text_mask[rows] = units.text_mask[donors[rows]]
    rows = kinds == TEXT_DROPPED
    text[rows], text_mask[rows] = 0.0, False
    rows = kinds == IMAGE_SWAPPED
    image[rows] = units.image[donors[rows]]
    image_mask[rows] = units.image_mask[donors[rows]]
    image[kinds == IMAGE_BLANKED] = blank_image
    return Units(image, text, image_mask, text_mask), kinds


def _donors(n: int, rng: np.random.Generator) -> np.ndarray:
    """For each row another row (never itself) to take a swapped modality from."""
    if n < 2:
        return np.zeros(n, dtype=int)
    offsets = rng.integers(1, n, n)
    return (np.arange(n) + offsets) % n


def blank_image_features(backbone: Backbone) -> np.ndarray:
    """Backbone features of a blank white placeholder image."""
    pixels = backbone.preprocess(Image.new("RGB", (224, 224), "white"))[None]
    return backbone.encode_images(pixels)[0].astype(np.float16).astype(np.float32)

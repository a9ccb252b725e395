"""Modality corruption: the junk real corpora have, applied to units on purpose.

A corrupted unit has exactly one modality spoiled: its caption swapped for another unit's
("a caption about something else") or replaced by boilerplate ("IMG_0042", "click to
enlarge"), or its image swapped for another unit's or blanked (a blank placeholder). Training
with it teaches the gate to route; evaluating with it (the corrupted-units protocol) measures
whether it does. Training and evaluation draw junk captions from disjoint lists, so the gate
must recognise boilerplate it has never seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .backbone import Backbone

CLEAN, TEXT_SWAPPED, TEXT_JUNK, IMAGE_SWAPPED, IMAGE_BLANKED = range(5)
KIND_NAMES = {
    CLEAN: "clean",
    TEXT_SWAPPED: "caption swapped",
    TEXT_JUNK: "caption junk",
    IMAGE_SWAPPED: "image swapped",
    IMAGE_BLANKED: "image blanked",
}
JUNK_CAPTIONS = {
    "train": (
        "IMG_0042",
        "DSC01234.JPG",
        "image",
        "untitled",
        "click to enlarge",
        "no description available",
        "placeholder",
        "photo 17 of 40",
        "stock photo",
        "screenshot 2019-03-02",
        "copyright all rights reserved",
        "download",
    ),
    "eval": (
        "P1000713.jpg",
        "picture",
        "unnamed file",
        "see caption below",
        "thumbnail",
        "image not available",
        "banner",
        "gallery item 5",
        "scan0003",
        "default",
        "photo credit: staff",
        "view larger",
    ),
}


@dataclass
class Junk:
    """What corruption puts in: features of a blank placeholder image and of junk captions."""

    blank_image: np.ndarray
    captions: np.ndarray


@dataclass
class Units:
    """Feature rows of units; a False mask marks a missing modality."""

    image: np.ndarray
    text: np.ndarray
    image_mask: np.ndarray
    text_mask: np.ndarray


@dataclass
class Plan:
    """What corruption does to each row: its kind, the row a swapped modality comes from
    (`donors`), and the junk caption a TEXT_JUNK row gets (`junk_caption`, -1 elsewhere)."""

    kinds: np.ndarray
    donors: np.ndarray
    junk_caption: np.ndarray


def plan_corruption(
    image_mask: np.ndarray,
    text_mask: np.ndarray,
    probability: float,
    rng: np.random.Generator,
    junk: Junk | None,
) -> Plan:
    """Which complete units get one modality corrupted, and how (see `corrupt_units`)."""
    n = len(image_mask)
    complete = image_mask & text_mask
    hit = (rng.random(n) < probability) & complete
    choices = np.array([TEXT_SWAPPED, IMAGE_SWAPPED] if junk is None else list(KIND_NAMES)[1:])
    kinds = np.where(hit, choices[rng.integers(0, len(choices), n)], CLEAN)
    donors = _donors(n, rng)
    junk_caption = np.full(n, -1)
    if junk is not None:
        rows = kinds == TEXT_JUNK
        junk_caption[rows] = rng.integers(0, len(junk.captions), rows.sum())
    return Plan(kinds, donors, junk_caption)


def corrupt_units(
    units: Units, probability: float, rng: np.random.Generator, junk: Junk | None
) -> tuple[Units, np.ndarray]:
    """Corrupt one modality of each complete unit with `probability` (kind drawn uniformly;
    only swaps without `junk`); returns the corrupted copy and each row's kind (CLEAN for
    untouched rows)."""
    plan = plan_corruption(units.image_mask, units.text_mask, probability, rng, junk)
    return apply_plan(units, plan, junk), plan.kinds


def apply_plan(units: Units, plan: Plan, junk: Junk | None) -> Units:
    """The units with `plan`'s corruption applied (a copy)."""
    kinds, donors = plan.kinds, plan.donors
    image, text = units.image.copy(), units.text.copy()
    image_mask, text_mask = units.image_mask.copy(), units.text_mask.copy()
    rows = kinds == TEXT_SWAPPED
    text[rows] = units.text[donors[rows]]
    text_mask[rows] = units.text_mask[donors[rows]]
    if junk is not None:
        rows = kinds == TEXT_JUNK
        text[rows] = junk.captions[plan.junk_caption[rows]]
        image[kinds == IMAGE_BLANKED] = junk.blank_image
    rows = kinds == IMAGE_SWAPPED
    image[rows] = units.image[donors[rows]]
    image_mask[rows] = units.image_mask[donors[rows]]
    return Units(image, text, image_mask, text_mask)


def _donors(n: int, rng: np.random.Generator) -> np.ndarray:
    """For each row another row (never itself) to take a swapped modality from."""
    if n < 2:
        return np.zeros(n, dtype=int)
    offsets = rng.integers(1, n, n)
    return (np.arange(n) + offsets) % n


def junk_features(backbone: Backbone, part: str) -> Junk:
    """Backbone features of a blank white placeholder and of the `part` ("train" or "eval")
    list of junk captions."""
    pixels = backbone.preprocess(Image.new("RGB", (224, 224), "white"))[None]
    blank = backbone.encode_images(pixels)[0]
    captions = backbone.encode_texts(list(JUNK_CAPTIONS[part]))
    return Junk(_as_stored(blank), _as_stored(captions))


def _as_stored(features: np.ndarray) -> np.ndarray:
    """Rounded like cached features, so junk is indistinguishable by precision alone."""
    return features.astype(np.float16).astype(np.float32)

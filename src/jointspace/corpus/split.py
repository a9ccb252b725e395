"""Deterministic train/validation/test assignment by item key."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def split_of(key: str, val_percent: int = 10, test_percent: int = 20) -> str:
    """`train`, `val` or `test`, from a hash of the key: stable across runs, machines and corpus
    order, so held-out items never leak into training."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big") % 100
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + val_percent:
        return "val"
    return "train"

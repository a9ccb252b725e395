"""What a model has seen: a compact digest of its training and validation items' content keys.

Stored on the model card (`training["seen"]`), checked by evaluation, so that a model is not
measured on the data it was trained or early-stopped on — whatever packaging (folder, CSV,
Parquet) the evaluation reads it through, since content keys (corpus/split.py) do not depend
on it.

The digest is a set of hashes: each key's sha256 (domain-separated from the split's hash) cut to
`b = ceil(log2(n)) + 32` bits, sorted, deduplicated and stored Elias–Fano style: the low 32
bits of each as a little-endian uint32 array, the high bits as a unary bitmap (one 1 per hash,
one 0 per high-bit bucket). That is 4.25–4.4 bytes per item (5.7–5.9 in base64, about 5.7 MB
for a million items), within a few percent of the least any set with this error rate needs.
An unseen key is reported seen with probability n / 2^b <= 2^-32 (2.3e-10): a million
held-out items are all reported unseen with probability > 99.97 %. (A Bloom filter at 1 %
would be 4x smaller but flag ~1 % of any held-out set, so every evaluation would be refused.)
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DIGEST_FORMAT = "jointspace-seen/1"
LOW_BITS = 32
_SALT = b"jointspace-seen\x00"


def _hashes(keys: Iterable[str]) -> np.ndarray:
    """The first 64 bits of each key's salted sha256, as uint64."""
    data = b"".join(hashlib.sha256(_SALT + k.encode("utf-8")).digest()[:8] for k in keys)
    return np.frombuffer(data, dtype=">u8").astype(np.uint64)


def _high_bits(count: int) -> int:
    return max(0, math.ceil(math.log2(count))) if count > 1 else 0


@dataclass(frozen=True)
class SeenDigest:
    """The sorted distinct hashes (of `bits` bits) of the content keys a model has seen."""

    values: np.ndarray  # uint64, sorted, distinct, each < 2**bits
    bits: int

    @classmethod
    def of(cls, keys: Iterable[str]) -> SeenDigest:
        """The digest of `keys` (duplicates count once)."""
        full = np.unique(_hashes(keys))
        bits = _high_bits(len(full)) + LOW_BITS
        return cls(np.unique(full >> np.uint64(64 - bits)), bits)

    def __len__(self) -> int:
        return len(self.values)

    def contains(self, keys: Sequence[str]) -> np.ndarray:
        """A bool per key: True where the key was (almost certainly) seen."""
        if not len(keys) or not len(self.values):
            return np.zeros(len(keys), dtype=bool)
        probe = _hashes(keys) >> np.uint64(64 - self.bits)
        at = np.searchsorted(self.values, probe).clip(max=len(self.values) - 1)
        return self.values[at] == probe

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: format, item count, hash bits and the encoded hashes (base64)."""
        high_bits = self.bits - LOW_BITS
        low = (self.values & np.uint64(0xFFFFFFFF)).astype("<u4")
        high = (self.values >> np.uint64(LOW_BITS)).astype(np.int64)
        unary = np.zeros(len(self.values) + (1 << high_bits), dtype=np.uint8)
        unary[high + np.arange(len(high))] = 1
        blob = low.tobytes() + np.packbits(unary).tobytes()
        return {
            "format": DIGEST_FORMAT,
            "items": len(self.values),
            "bits": self.bits,
            "data": base64.b64encode(blob).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, card: dict[str, Any]) -> SeenDigest:
        """The digest `to_dict` wrote; ValueError when it is not one."""
        if not isinstance(card, dict) or card.get("format") != DIGEST_FORMAT:
            raise ValueError(f"not a {DIGEST_FORMAT} digest")
        count, bits = card.get("items"), card.get("bits")
        if not isinstance(count, int) or not isinstance(bits, int) or count < 0:
            raise ValueError("bad item count or hash width")
        if not LOW_BITS <= bits <= 64:
            raise ValueError("bad hash width")
        try:
            blob = base64.b64decode(card.get("data", ""), validate=True)
        except (ValueError, TypeError):
            raise ValueError("data is not base64") from None
        unary_bits = count + (1 << (bits - LOW_BITS))
        if len(blob) != 4 * count + (unary_bits + 7) // 8:
            raise ValueError("data has the wrong length")
        low = np.frombuffer(blob[: 4 * count], dtype="<u4").astype(np.uint64)
        unary = np.unpackbits(np.frombuffer(blob[4 * count :], dtype=np.uint8))[:unary_bits]
        ones = np.flatnonzero(unary)
        if len(ones) != count:
            raise ValueError("data is damaged")
        high = (ones - np.arange(count)).astype(np.uint64)
        values = (high << np.uint64(LOW_BITS)) | low
        if count and np.any(np.diff(values) == 0):
            raise ValueError("data is damaged")
        return cls(values, bits)

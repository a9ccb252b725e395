"""Search results as users see them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..store.base import Hit as StoredHit


@dataclass(frozen=True)
class Hit:
    """One search result, best first: the point's id and score, its text, a resolvable reference
    to its image (a path, a URL, or `item:<id>` when the image was stored inline), its labels,
    source and whole payload."""

    id: str
    score: float
    text: str | None
    image: str | None
    labels: list[str] = field(default_factory=list)
    source: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_stored(cls, hit: StoredHit) -> Hit:
        payload = dict(hit.payload)
        image = payload.get("image")
        if image is None and payload.get("sha256"):
            image = f"item:{hit.id}"  # inline bytes: the service resolves it by id
        return cls(
            id=hit.id,
            score=float(hit.score),
            text=payload.get("text"),
            image=image,
            labels=list(payload.get("labels") or []),
            source=payload.get("source"),
            payload=payload,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`query --json`'s results entries)."""
        return {
            "id": self.id,
            "score": round(self.score, 6),
            "text": self.text,
            "image": self.image,
            "labels": self.labels,
            "source": self.source,
            "payload": self.payload,
        }

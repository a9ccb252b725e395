"""What the workflows return: dataclasses whose `to_dict()` is the CLI's `--json` document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainReport:
    """A finished training run: the saved model, its data split and validation metrics.
    `data["per_source"]` counts each source's train/val/test/skipped items; `val_metrics` is
    the mean over sources of `val_per_source` (one source: its own)."""

    model_id: str
    path: str
    data: dict[str, Any]
    best_epoch: int
    epochs_run: int
    val_metrics: dict[str, dict[str, float]]
    seconds: float
    device: str = "cpu"  # where the backbone ran
    precision: str = "fp32"  # and at what precision (the card records it)
    engine: str = "torch"  # and by what engine its image tower ran
    val_per_source: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class EvalReport:
    """One model on one split: the six tasks' metrics and the protocols they follow.
    `per_source`: source → {"queries", "tasks"}, each source's queries ranked against its own
    gallery; `tasks` pools every source's queries (one source: its own)."""

    model_id: str
    split: str
    corrupt_units: float
    queries: int
    tasks: dict[str, dict[str, float]]
    protocol: dict[str, str]
    overlap: int | None = None  # evaluated items seen in training (None: model records none)
    precision: str = "fp32"  # the backbone's precision for this evaluation
    engine: str = "torch"  # and the engine that ran its image tower
    per_source: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ComparisonReport:
    """Every variant over seeds and corruption levels (`runs`: one entry per level, each with
    `variants` → `tasks` → metric → {mean, std}, and `per_source` → source → `variants` ...);
    `report_dir` when files were written."""

    document: dict[str, Any]
    report_dir: str | None = None

    @property
    def runs(self) -> list[dict[str, Any]]:
        return self.document["runs"]

    def to_dict(self) -> dict[str, Any]:
        return self.document


@dataclass(frozen=True)
class CopyReport:
    """A collection copied between the embedded store and a server (publish or pull)."""

    collection: str
    copied: int
    points: int
    direction: str
    server: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CollectionSummary:
    """A collection as listed: points (None when it cannot be read now), vectors, the card it
    records, its aliases and its state: "ready", "busy" (another process holds it) or "broken"
    (`detail` says why)."""

    name: str
    points: int | None
    vectors: dict[str, int]
    metadata: dict[str, Any]
    aliases: list[str] = field(default_factory=list)
    state: str = "ready"
    detail: str = ""
    indexed: bool = False  # searched through an HNSW index (else exactly)
    quantize: str | None = None  # "int8" when it keeps int8 copies of its vectors

    @classmethod
    def from_info(cls, info: Any, aliases: dict[str, str]) -> CollectionSummary:
        """From the store's CollectionInfo and the store's alias map."""
        return cls(
            name=info.name,
            points=info.points,
            vectors=dict(info.vectors),
            metadata=dict(info.metadata),
            aliases=sorted(a for a, target in aliases.items() if target == info.name),
            state=info.state,
            detail=info.detail,
            indexed=info.indexed,
            quantize=info.quantize,
        )

    @property
    def model_id(self) -> str | None:
        return self.metadata.get("model_id")

    @property
    def filterable(self) -> list[str]:
        """Payload keys a `where` may name."""
        return sorted(self.metadata.get("filterable", {}))

    def to_dict(self) -> dict[str, Any]:
        document = dict(self.__dict__)
        document["filterable"] = self.filterable
        return document

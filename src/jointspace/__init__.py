"""jointspace: search image-text collections in one joint embedding space.

The Python API (the CLI and the HTTP service are thin faces over exactly this)::

    import jointspace as js
    space = js.connect(home="./jointspace-data")        # or js.connect(url=..., api_key=...)
    report = space.ingest("corpus/", collection="stamps", model="models/stamps")
    coll = space.collection("stamps")
    hits = coll.search(text="penguin", k=5, where={"labels": "animals"})
    hits = coll.search(image="photo.jpg", target="image")
    vec = coll.embed(text="penguin")
    more = coll.similar(hits[0].id, k=10)
    js.train(["corpus/"], out="models/x"); js.evaluate("corpus/", model="models/x")

Importing it is cheap: torch, open_clip and Qdrant load when a model or store is first used.
"""

from .api.collection import Collection
from .api.model import Model, load_model
from .api.reports import (
    CollectionSummary,
    ComparisonReport,
    CopyReport,
    EvalReport,
    TrainReport,
)
from .api.space import Space, connect
from .api.workflows import compare, evaluate, train
from .corpus.select import SourceOptions
from .corpus.split import SPLITS
from .errors import InvalidQuery, JointspaceError, NotFound, Overloaded, TooLarge, UnusableImage
from .pipeline.names import FUSIONS, LOSSES, SAMPLINGS
from .progress import Progress
from .query.hits import Hit
from .query.remote import ServiceClient
from .query.search import TARGETS, parse_where

__version__ = "0.1.0"


def __getattr__(name: str):  # IngestReport's module imports torch: load it when asked for
    if name == "IngestReport":
        from .ingest.run import IngestReport

        return IngestReport
    raise AttributeError(f"module 'jointspace' has no attribute {name!r}")


__all__ = [
    "FUSIONS",
    "LOSSES",
    "SAMPLINGS",
    "SPLITS",
    "TARGETS",
    "Collection",
    "CollectionSummary",
    "ComparisonReport",
    "CopyReport",
    "EvalReport",
    "Hit",
    "IngestReport",
    "InvalidQuery",
    "JointspaceError",
    "Model",
    "NotFound",
    "Overloaded",
    "Progress",
    "SourceOptions",
    "ServiceClient",
    "Space",
    "TooLarge",
    "TrainReport",
    "UnusableImage",
    "__version__",
    "compare",
    "connect",
    "evaluate",
    "load_model",
    "parse_where",
    "train",
]

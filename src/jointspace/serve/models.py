"""The service's requests and responses: these models are the contract (/docs shows them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Target = Literal["unit", "image", "text"]
MAX_K = 200

_IMAGE = (
    "A query image: base64 bytes, a data: URI (data:image/png;base64,...) or an http(s) URL "
    "that the service fetches. With multipart/form-data, send it as a file field instead."
)
_COLLECTION = "The collection to search; may be left out when the service serves only one."
_WHERE = (
    'A payload filter, the same as the Python API\'s: {"labels": "animals"}, '
    '{"labels": ["birds", "fish"]} (any of), {"width": {"gte": 200}}; every key must '
    "hold."
)


class SearchRequest(BaseModel):
    """A search by text, image, both (a unit query), or a stored point's id ("more like
    this", by its stored vector, no re-embedding)."""

    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description=_COLLECTION)
    text: str | None = Field(None, description="A text (keyword) query.")
    image: str | None = Field(None, description=_IMAGE)
    id: str | None = Field(None, description="A stored point's id: the points nearest to it.")
    target: Target = Field("unit", description="Which vectors to search: unit, image or text.")
    k: int = Field(10, ge=1, le=MAX_K, description="How many results.")
    where: dict[str, Any] | None = Field(None, description=_WHERE)


class EmbedRequest(BaseModel):
    """A query to turn into a vector, to search the collection's `target` vectors with (from
    plain qdrant-client or curl: `using` = the named vector)."""

    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description=_COLLECTION)
    text: str | None = Field(None, description="A text (keyword) query.")
    image: str | None = Field(None, description=_IMAGE)
    target: Target = Field("unit", description="The named vector the vector is for.")


class QueryEcho(BaseModel):
    """The query as the service understood it."""

    text: str | None
    image: str | None = Field(description='"<upload>" for image bytes, the URL for a URL.')
    id: str | None


class SearchHit(BaseModel):
    """One result, best first (`jointspace query --json`'s entries, plus a thumbnail URL)."""

    id: str
    score: float
    text: str | None
    image: str | None = Field(description="A path, a URL, or item:<id> for an inline image.")
    labels: list[str]
    source: str | None
    ref: str | None = Field(
        description="A short readable reference: the path below the source, or the source "
        "file and its row, line or member."
    )
    payload: dict[str, Any]
    thumbnail: str | None = Field(
        description="This service's URL of the point's image (a thumbnail; ?size=full for the "
        "original); null for a point without an image."
    )


class SearchResponse(BaseModel):
    collection: str
    target: Target
    k: int
    query: QueryEcho
    model_id: str | None
    took_ms: float
    results: list[SearchHit]


class EmbedResponse(BaseModel):
    """The same document as `jointspace embed --json`."""

    using: Target
    vector: list[float]
    dim: int
    model_id: str | None


class CollectionOut(BaseModel):
    """A collection as `jointspace collections list --json` shows it."""

    name: str
    points: int | None
    vectors: dict[str, int]
    metadata: dict[str, Any]
    aliases: list[str]
    state: str
    detail: str
    filterable: list[str]


class CollectionsResponse(BaseModel):
    collections: list[CollectionOut]


class LabelCount(BaseModel):
    label: str
    count: int


class CollectionDetail(CollectionOut):
    """A collection and its most common labels (from a sample of its points)."""

    labels: list[LabelCount]


class Health(BaseModel):
    status: Literal["ok"]
    collections: list[str]
    model_loaded: dict[str, bool]


class ErrorBody(BaseModel):
    kind: str = Field(description="not_found, invalid_query, invalid_image, too_large, ...")
    message: str = Field(description="One sentence that says what to do.")


class ErrorResponse(BaseModel):
    error: ErrorBody

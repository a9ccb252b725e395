"""POST /search and POST /embed: a query's hits, or its vector."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request

import jointspace as js

from ..auth import require_key
from ..bodies import read_query
from ..models import (
    EmbedRequest,
    EmbedResponse,
    QueryEcho,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from ..state import Service
from ..workers import answer
from . import ERRORS

router = APIRouter(tags=["search"], dependencies=[Depends(require_key)])


def _bodies(model: type, form_fields: dict[str, Any]) -> dict[str, Any]:
    """The request body's two forms for /docs: JSON, or a multipart form with a file."""
    form = {
        "type": "object",
        "properties": {**form_fields, "image": {"type": "string", "format": "binary"}},
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": model.model_json_schema()},
                "multipart/form-data": {"schema": form},
            },
        }
    }


_TEXT = {"type": "string"}
_FORM = {"collection": _TEXT, "text": _TEXT, "target": {"enum": ["unit", "image", "text"]}}
_SEARCH_FORM = {
    **_FORM,
    "id": _TEXT,
    "k": {"type": "integer", "minimum": 1, "maximum": 200},
    "where": {"type": "string", "description": "The where object as JSON text."},
}


@router.post(
    "/search",
    response_model=SearchResponse,
    responses=ERRORS | {413: {"description": "The upload is over the size cap"}},
    openapi_extra=_bodies(SearchRequest, _SEARCH_FORM),
)
async def search(request: Request) -> dict[str, Any]:
    """The k best `target` points for a text, an image (upload, base64, data: URI or http(s)
    URL), both (a unit query, fused through the gate), or a stored point's `id`."""
    service: Service = request.app.state.service
    query, image, shown = await read_query(
        request, SearchRequest, service.settings.max_upload_bytes
    )
    collection = service.collection(query.collection)
    started = time.perf_counter()
    by_id = query.id is not None and query.text is None and image is None
    run = service.run_search if by_id else service.run_model
    hits: list[js.Hit] = await answer(
        request,
        run(
            collection.search,
            text=query.text,
            image=image,
            id=query.id,
            target=query.target,
            k=query.k,
            where=query.where,
        ),
    )
    took_ms = (time.perf_counter() - started) * 1000
    items = f"/items/{quote(collection.name, safe='')}/"
    return SearchResponse(
        collection=collection.name,
        target=query.target,
        k=query.k,
        query=QueryEcho(text=query.text, image=shown, id=query.id),
        model_id=collection.model.model_id,
        took_ms=round(took_ms, 2),
        results=[
            SearchHit(
                **hit.to_dict(),
                thumbnail=f"{items}{quote(hit.id, safe='')}/image" if hit.image else None,
            )
            for hit in hits
        ],
    ).model_dump()


@router.post(
    "/embed",
    response_model=EmbedResponse,
    responses=ERRORS | {413: {"description": "The upload is over the size cap"}},
    openapi_extra=_bodies(EmbedRequest, _FORM),
)
async def embed(request: Request) -> dict[str, Any]:
    """The query vector of a text, an image, or both, for the collection's `target` vectors
    (the same document as `jointspace embed --json`)."""
    service: Service = request.app.state.service
    query, image, _ = await read_query(request, EmbedRequest, service.settings.max_upload_bytes)
    collection = service.collection(query.collection)
    vector: list[float] = await answer(
        request,
        service.run_model(collection.embed, text=query.text, image=image, target=query.target),
    )
    return {
        "using": query.target,
        "vector": [round(float(v), 7) for v in vector],
        "dim": len(vector),
        "model_id": collection.model.model_id,
    }

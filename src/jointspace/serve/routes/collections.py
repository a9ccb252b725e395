"""GET /collections and GET /collections/{name}: what the service serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from ..auth import require_key
from ..models import CollectionDetail, CollectionsResponse
from ..state import Service
from ..workers import answer
from . import ERRORS

router = APIRouter(tags=["collections"], dependencies=[Depends(require_key)])


@router.get("/collections", response_model=CollectionsResponse, responses=ERRORS)
async def list_collections(request: Request) -> dict[str, Any]:
    """Every collection this service serves: points, vectors, the card it records (model,
    backbone, filterable fields), aliases and state."""
    service: Service = request.app.state.service
    summaries = await answer(request, service.run_read(service.summaries))
    return {"collections": [summary.to_dict() for summary in summaries]}


@router.get("/collections/{name}", response_model=CollectionDetail, responses=ERRORS)
async def describe_collection(request: Request, name: str) -> dict[str, Any]:
    """One served collection, with its most common labels (from a sample of up to 10,000
    points; kept for a few minutes) for filter chips."""
    service: Service = request.app.state.service
    collection = service.collection(name)
    summary, labels = await answer(request, service.run_read(service.describe, collection))
    return {
        **summary.to_dict(),
        "labels": [{"label": label, "count": count} for label, count in labels],
    }

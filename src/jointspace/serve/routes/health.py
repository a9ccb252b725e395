"""GET /healthz (no key needed: load balancers ask) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..auth import require_key
from ..models import Health
from ..state import Service
from . import ERRORS

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health)
async def healthz(request: Request) -> dict[str, Any]:
    """The service answers; which collections it serves and whether their models are loaded."""
    service: Service = request.app.state.service
    return {
        "status": "ok",
        "collections": list(service.collections),
        "model_loaded": dict(service.loaded),
    }


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require_key)],
    responses=ERRORS | {200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
)
async def metrics(request: Request) -> Response:
    """Requests by route and status, latency, errors by kind, model queue depth."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

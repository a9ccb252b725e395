"""GET /items/{collection}/{id}/image: a point's own image (never a path a request names)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request, Response

from ..auth import require_key
from ..state import Service
from ..workers import answer
from . import ERRORS

router = APIRouter(tags=["items"], dependencies=[Depends(require_key)])

# An image answer is an image: a browser must never run it as a page of this site (an SVG).
_IMAGE_HEADERS = {
    "Cache-Control": "private, max-age=3600",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


@router.get(
    "/items/{collection}/{id}/image",
    response_class=Response,
    responses=ERRORS
    | {200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "The image"}},
)
async def item_image(
    request: Request, collection: str, id: str, size: Literal["thumb", "full"] = "thumb"
) -> Response:
    """The point's image from its own payload (its path or URL, or for an inline image the
    thumbnail ingest kept): a JPEG thumbnail, longest side 256 px, by default; `size=full`
    for the original bytes with their media type (an SVG rendered to PNG)."""
    service: Service = request.app.state.service
    served = service.collection(collection)
    image = service.thumbnails.get((served.name, id, size))
    if image is None:
        image = await answer(request, service.run_read(served.image, id, size))
        if size == "thumb":
            service.thumbnails.put((served.name, id, size), image)
    return Response(image.data, media_type=image.content_type, headers=_IMAGE_HEADERS)

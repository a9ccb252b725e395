"""Reading a query from a request: a JSON body, or a form (multipart with a file upload, or
urlencoded), never more than the upload cap; the image as bytes or an http(s) URL."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..errors import InvalidQuery, TooLarge, UnusableImage

M = TypeVar("M", bound=BaseModel)
QueryImage = bytes | str  # bytes, or an http(s) URL for the API to fetch

UPLOADED = "<upload>"
_FORM_OVERHEAD = 64 * 1024  # the other fields and multipart boundaries
_SPACE = re.compile(rb"\s+")


async def read_query(
    request: Request, model: type[M], max_bytes: int
) -> tuple[M, QueryImage | None, str | None]:
    """The request's query as `model`, its image (bytes, or an http(s) URL; never a path) and
    how to show that image in a response ("<upload>", the URL, or None). The body is read up
    to a cap that fits an image of `max_bytes` (TooLarge beyond it, before more is read)."""
    content_type = request.headers.get("content-type", "").lower()
    multipart = content_type.startswith("multipart/form-data")
    cap = max_bytes + _FORM_OVERHEAD if multipart else _base64_size(max_bytes) + _FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(max_bytes)
    capped = Request(request.scope, _capped(request.receive, cap, max_bytes))
    if multipart:
        fields = await _multipart(capped, cap)
    else:
        body = await capped.body()
        fields = _json_or_form(body, content_type)
    image = fields.pop("image", None)
    query = model.model_validate(fields)
    if isinstance(image, bytes):
        if len(image) > max_bytes:
            raise _too_large(max_bytes)
        return query, image, UPLOADED
    if isinstance(image, str):
        return query, *parse_image(image, max_bytes)
    if image is not None:
        raise InvalidQuery("image: give text (base64, a data: URI or an http(s) URL).")
    return query, None, None


def parse_image(value: str, max_bytes: int) -> tuple[QueryImage, str]:
    """An image given as text: an http(s) URL (fetched by the API, with ingest's limits), a
    data: URI or base64 (decoded here). Never a path: text that is neither is not an image."""
    text = value.strip()
    if text.lower().startswith(("http://", "https://")):
        return text, text
    if text.lower().startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or ";base64" not in header.lower():
            raise UnusableImage("A data: URI image must be base64 (data:image/png;base64,...).")
    data = _SPACE.sub(b"", text.encode("ascii", "replace"))
    if len(data) > _base64_size(max_bytes):
        raise _too_large(max_bytes)
    if b"-" in data or b"_" in data:  # the URL-safe alphabet
        data = data.translate(bytes.maketrans(b"-_", b"+/"))
    try:
        decoded = base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise UnusableImage(
            "The image is neither an http(s) URL, a data: URI nor base64 bytes; send the file "
            "as a multipart upload, or its bytes in base64."
        ) from None
    if not decoded:
        raise UnusableImage("The image is empty.")
    if len(decoded) > max_bytes:
        raise _too_large(max_bytes)
    return decoded, UPLOADED


async def _multipart(request: Request, cap: int) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=32, max_part_size=cap)
    fields: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                if data or value.filename:  # a form without a chosen file sends an empty one
                    fields[name] = data
            elif value.strip():  # an empty form field is a field left out
                fields[name] = value
    finally:
        await form.close()
    return _typed_form(fields)


def _json_or_form(body: bytes, content_type: str) -> dict[str, Any]:
    """A JSON object; an urlencoded form when the body says so (curl -d sends JSON with a form's
    content type, so JSON is tried first)."""
    if not body.strip():
        raise InvalidQuery('The request has no body; send a JSON object such as {"text": ...}.')
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        if content_type.startswith("application/x-www-form-urlencoded"):
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=False)
            return _typed_form({k: v for k, v in pairs if v.strip()})
        raise InvalidQuery("The body is not valid JSON; send a JSON object.") from None
    if not isinstance(document, dict):
        raise InvalidQuery('The body must be a JSON object, such as {"text": "penguin"}.')
    return document


def _typed_form(fields: dict[str, Any]) -> dict[str, Any]:
    """Form fields are text: `where` is a JSON object in text."""
    where = fields.get("where")
    if isinstance(where, str):
        try:
            fields["where"] = json.loads(where)
        except ValueError:
            raise InvalidQuery(
                'The where field is not valid JSON; send an object such as {"labels": "animals"}.'
            ) from None
    return fields


def _capped(receive: Any, cap: int, max_bytes: int) -> Any:
    """`receive`, raising TooLarge once more than `cap` body bytes have come."""
    seen = 0

    async def capped_receive() -> dict:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise _too_large(max_bytes)
        return message

    return capped_receive


def _base64_size(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _too_large(max_bytes: int) -> TooLarge:
    return TooLarge(
        f"The image is larger than this service accepts ({max_bytes / 1_000_000:g} MB); send a "
        "smaller one."
    )

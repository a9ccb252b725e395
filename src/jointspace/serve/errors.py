"""Every failure as `{"error": {"kind", "message"}}` with its status, decided by its type in
one place; never a traceback in a response."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ..errors import (
    InvalidQuery,
    JointspaceError,
    NotFound,
    Overloaded,
    TooLarge,
    UnusableImage,
)
from ..store.lock import CollectionBusy
from .workers import ClientGone

log = logging.getLogger("jointspace.serve")


class MissingKey(JointspaceError):
    """The service wants an API key and the request carries none."""


class WrongKey(JointspaceError):
    """The request carries an API key that is not the service's."""


# The first type an error is an instance of decides its status and kind (subclasses first).
STATUSES: tuple[tuple[type[JointspaceError], int, str], ...] = (
    (MissingKey, 401, "missing_key"),
    (WrongKey, 403, "wrong_key"),
    (NotFound, 404, "not_found"),
    (TooLarge, 413, "too_large"),
    (UnusableImage, 422, "invalid_image"),
    (InvalidQuery, 422, "invalid_query"),
    (Overloaded, 503, "overloaded"),
    (CollectionBusy, 503, "busy"),
    (JointspaceError, 500, "failed"),  # a bad run on the service's side (e.g. store gone)
)
RETRY_AFTER_S = 1
_HTTP_KINDS = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def status_of(error: JointspaceError) -> tuple[int, str]:
    """The HTTP status and error kind of a JointspaceError."""
    for kind_type, status, kind in STATUSES:
        if isinstance(error, kind_type):
            return status, kind
    return 500, "failed"  # unreachable: JointspaceError is the last entry


def error_response(
    request: Request, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The error document; counted by kind in /metrics."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(kind=kind).inc()
    return JSONResponse(
        {"error": {"kind": kind, "message": message}}, status_code=status, headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to an error document: JointspaceError by type (STATUSES), request
    validation to 422, HTTP errors (unknown route, method) to theirs, anything else to 500."""

    @app.exception_handler(JointspaceError)
    async def _jointspace(request: Request, error: JointspaceError) -> JSONResponse:
        status, kind = status_of(error)
        headers: dict[str, str] = {}
        if status == 503:
            headers["Retry-After"] = str(RETRY_AFTER_S)
        elif status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        elif status == 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, error)
        return error_response(request, status, kind, str(error), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, "invalid_query", validation_sentence(error.errors()))

    @app.exception_handler(ValidationError)
    async def _invalid_body(request: Request, error: ValidationError) -> JSONResponse:
        return error_response(request, 422, "invalid_query", validation_sentence(error.errors()))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        kind = _HTTP_KINDS.get(error.status_code, "http_error")
        message = _sentence(str(error.detail))
        if error.status_code == 404:
            message = f"There is no {request.url.path} here; see /docs for the API."
        return error_response(request, error.status_code, kind, message, error.headers)

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, error: ClientGone) -> JSONResponse:
        # Nobody reads this; it only keeps the books (status 499, as nginx logs it).
        return error_response(request, 499, "client_gone", "The client went away.")

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s raised", request.method, request.url.path, exc_info=error)
        return error_response(
            request,
            500,
            "internal",
            "The service failed on this request (a bug); its log has the details.",
        )


def validation_sentence(errors: Iterable[Mapping[str, Any]]) -> str:
    """One sentence for pydantic's validation errors: the first, with where it is."""
    for error in errors:
        loc = list(error.get("loc", ()))
        if len(loc) > 1 and loc[0] in ("body", "query", "path", "header"):  # FastAPI's prefix
            loc = loc[1:]
        where = ".".join(str(part) for part in loc)
        message = str(error.get("msg", "is not valid"))
        if error.get("type") == "missing":
            message = "is required"
        elif error.get("type") == "extra_forbidden":
            message = "is not a field of this request"
        return _sentence(f"{where}: {message}" if where else message)
    return "The request is not valid."


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith((".", "?", "!")) else text + "."

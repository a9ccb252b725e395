"""The service's routes, one module per resource: each parses, calls one function of the
public API (on the pool it belongs to), and renders."""

from typing import Any

from ..models import ErrorResponse

# The error documents a data route may answer with (for /docs).
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (401, "No API key (the service has one)"),
        (403, "Wrong API key"),
        (404, "No such collection or point"),
        (422, "A query that cannot be run as given"),
        (503, "Overloaded: retry after the Retry-After seconds"),
    )
}

"""The API key: when the service has one, every data route wants it, as the header
`X-API-Key`, as `Authorization: Bearer KEY`, or as the query parameter `api_key` (an <img> tag
cannot send headers). Compared in constant time."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from .errors import MissingKey, WrongKey

_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service's API key.")
_BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY.")
_QUERY = APIKeyQuery(name="api_key", auto_error=False, description="For <img> tags.")


def require_key(
    request: Request,
    header: Annotated[str | None, Security(_HEADER)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
    query: Annotated[str | None, Security(_QUERY)] = None,
) -> None:
    """Refuse a request without the service's key (MissingKey: 401) or with another one
    (WrongKey: 403); nothing to check when the service has no key."""
    expected = request.app.state.service.settings.api_key
    if not expected:
        return
    given = header or (bearer.credentials if bearer else None) or query
    if not given:
        raise MissingKey(
            "This service needs an API key: send it as the X-API-Key header, as "
            "Authorization: Bearer KEY, or as ?api_key=KEY."
        )
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise WrongKey("The API key is not this service's; check the key you were given.")

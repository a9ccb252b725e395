"""A client of a running `jointspace serve`: search and embed over HTTP, with no model, no torch.

The service's contract (see serve/): `POST /search` with JSON `{"collection", "text"?,
"image"? (base64 of the file, or an http(s) URL), "id"?, "target", "k", "where"?}` answers
`{"collection", "target", "k", "query", "model_id", "took_ms", "results": [hit, ...]}`;
`POST /embed` with `{"collection", "text"?, "image"?, "target"}` answers `{"using", "vector",
"dim", "model_id"}`; a failure answers `{"error": {"kind", "message"}}` with its status. The
API key goes in the `X-API-Key` header. Only the standard library is used (urllib), so a
terminal query through a service starts in a fraction of a second.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import JointspaceError
from .hits import Hit

SERVER_ENV = "JOINTSPACE_SERVER"
KEY_ENV = "JOINTSPACE_API_KEY"
DEFAULT_TIMEOUT_S = 60.0


class ServiceError(JointspaceError):
    """The service refused or failed a request: its message, its error `kind` and the HTTP
    `status` (0 when it could not be reached)."""

    def __init__(self, message: str, kind: str = "failed", status: int = 0) -> None:
        super().__init__(message)
        self.kind, self.status = kind, status


@dataclass(frozen=True)
class RemoteSearch:
    """A service's answer to a search: the hits and what it searched with."""

    server: str
    collection: str
    target: str
    k: int
    model_id: str | None
    took_ms: float | None
    hits: list[Hit]
    query: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteVector:
    """A service's answer to an embed: the vector for the `using` named vector."""

    server: str
    using: str
    vector: list[float]
    model_id: str | None

    @property
    def dim(self) -> int:
        return len(self.vector)


class ServiceClient:
    """Talks to one `jointspace serve` at `url` (http://host:port; a bare host:port means
    http), sending `api_key` when it has one."""

    def __init__(
        self, url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        url = url.strip()
        if not url:
            raise JointspaceError("The service URL is empty; pass --server http://HOST:PORT.")
        self.url = (url if "://" in url else f"http://{url}").rstrip("/")
        self.api_key, self.timeout = api_key or None, timeout

    def __repr__(self) -> str:
        return f"ServiceClient({self.url!r})"

    def search(
        self,
        collection: str,
        text: str | None = None,
        image: str | Path | bytes | None = None,
        id: str | None = None,
        target: str = "unit",
        k: int = 10,
        where: Mapping[str, Any] | None = None,
    ) -> RemoteSearch:
        """The service's k best `target` points of `collection` for a text, an image (a file
        path, bytes, or an http(s) URL the service fetches), both, or a stored point's id."""
        body: dict[str, Any] = {"collection": collection, "target": target, "k": k}
        if text is not None:
            body["text"] = text
        if image is not None:
            body["image"] = _image_field(image)
        if id is not None:
            body["id"] = id
        if where:
            body["where"] = dict(where)
        answer = self._post("/search", body)
        try:
            hits = [Hit.from_dict(h) for h in answer["results"]]
            return RemoteSearch(
                server=self.url,
                collection=str(answer.get("collection", collection)),
                target=str(answer.get("target", target)),
                k=int(answer.get("k", k)),
                model_id=answer.get("model_id"),
                took_ms=answer.get("took_ms"),
                hits=hits,
                query=dict(answer.get("query") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._not_ours() from None

    def embed(
        self,
        collection: str,
        text: str | None = None,
        image: str | Path | bytes | None = None,
        target: str = "unit",
    ) -> RemoteVector:
        """The service's query vector for a text, an image, or both, for `collection`'s
        `target` vectors."""
        body: dict[str, Any] = {"collection": collection, "target": target}
        if text is not None:
            body["text"] = text
        if image is not None:
            body["image"] = _image_field(image)
        answer = self._post("/embed", body)
        try:
            vector = [float(v) for v in answer["vector"]]
            return RemoteVector(
                self.url, str(answer.get("using", target)), vector, answer.get("model_id")
            )
        except (KeyError, TypeError, ValueError):
            raise self._not_ours() from None

    # -- HTTP ------------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read()
        except urllib.error.HTTPError as error:
            raise self._refusal(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise ServiceError(
                    f"The jointspace service at {self.url} did not answer within "
                    f"{self.timeout:g} s; try again, or check that it is not overloaded.",
                    "unreachable",
                ) from None
            raise ServiceError(
                f"Cannot reach the jointspace service at {self.url} ({_reason(reason)}); start "
                "it with `jointspace serve`, or check --server / JOINTSPACE_SERVER.",
                "unreachable",
            ) from None
        try:
            document = json.loads(data)
        except ValueError:
            raise self._not_ours() from None
        if not isinstance(document, dict):
            raise self._not_ours()
        return document

    def _refusal(self, error: urllib.error.HTTPError) -> ServiceError:
        """The service's own error message, else one sentence about the status."""
        try:
            document = json.loads(error.read() or b"null")
            problem = document["error"]
            message, kind = " ".join(str(problem["message"]).split()), str(problem["kind"])
        except (ValueError, KeyError, TypeError, OSError):
            message, kind = "", "failed"
        if not message:
            message = (
                f"The service at {self.url} answered {error.code} {error.reason or ''}".rstrip()
                + "; is it a jointspace service?"
            )
        return ServiceError(message, kind, error.code)

    def _not_ours(self) -> ServiceError:
        return ServiceError(
            f"The server at {self.url} did not answer as a jointspace service does; check "
            "--server (it should be the URL `jointspace serve` prints).",
            "bad_response",
        )


def _image_field(image: str | Path | bytes) -> str:
    """The request's image: an http(s) URL as it is (the service fetches it), else the bytes
    of the file (or the bytes given) in base64."""
    if isinstance(image, (bytes, bytearray)):
        return base64.b64encode(bytes(image)).decode("ascii")
    text = str(image)
    if text.lower().startswith(("http://", "https://")):
        return text
    try:
        data = Path(text).read_bytes()
    except OSError as error:
        raise JointspaceError(
            f"Cannot read the query image {text} ({error.strerror or error})."
        ) from None
    return base64.b64encode(data).decode("ascii")


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__

"""The shared backend: a Qdrant server or cluster through `qdrant-client` (1.20).

The same class serves qdrant-client's local mode (`QdrantClient(path=...)`), a pure-Python
implementation of the same API that the tests use as a stand-in for a server.

Collection metadata (which model embedded a collection, etc.) lives in the collection's own
`metadata` field, which qdrant-client 1.20 accepts on create_collection and update_collection
(Qdrant server 1.16 or later keeps it; local mode does too). No side collection is needed.
An update *merges* top-level keys and deletes keys whose value is None, so set_metadata sends
None for every key it drops, and None values are never stored (the Edge backend does the same).

Connections prefer gRPC when the URL uses Qdrant's default REST port 6333 (gRPC is then on 6334,
Qdrant's default pairing) and fall back to REST when gRPC does not answer. On any other port
REST alone is used, so a non-default port mapping never sends gRPC to an unrelated service.

The API key is never put into a message, a log line or an exception's text.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from jointspace.errors import JointspaceError
from jointspace.store._common import (
    as_floats,
    canonical_ids,
    check_dims,
    check_name,
    clean_metadata,
)
from jointspace.store.base import CollectionInfo, Hit, Point, Store

_RETRIEVE_CHUNK = 1000
_DEFAULT_REST_PORT = 6333
_UNREACHABLE_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_REFUSED_GRPC = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


class ServerStore(Store):
    """Collections on a Qdrant server (or in qdrant-client's local mode). The store owns
    `client` and closes it in close(); `where` names the server in error messages."""

    def __init__(self, client: QdrantClient, where: str = "the Qdrant server") -> None:
        self.client = client
        self.where = where
        self._api_key: str | None = None  # only to scrub it from messages, never shown
        self._dims: dict[str, dict[str, int]] = {}  # vector dims, cached per collection

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        api_key: str | None = None,
        *,
        path: Path | str | None = None,
        prefer_grpc: bool = True,
        timeout: int | None = None,
    ) -> ServerStore:
        """A store on the server at `url`, checked to answer and accept `api_key`; or, with
        `path`, on qdrant-client's local mode in that folder (the tests' server stand-in)."""
        if path is not None:
            return cls._local(Path(path))
        if not url:
            raise JointspaceError("No Qdrant server URL given; set QDRANT_URL or --qdrant-url.")
        where = _safe_url(url)
        if prefer_grpc and _rest_port(url) == _DEFAULT_REST_PORT:
            with contextlib.suppress(Exception):
                return cls._open_checked(url, api_key, where, prefer_grpc=True, timeout=timeout)
            # gRPC did not answer (or the key was refused there): REST gives the final word.
        return cls._open_checked(url, api_key, where, prefer_grpc=False, timeout=timeout)

    @classmethod
    def _open_checked(
        cls, url: str, api_key: str | None, where: str, *, prefer_grpc: bool, timeout: int | None
    ) -> ServerStore:
        store = cls._open_remote(url, api_key, where, prefer_grpc=prefer_grpc, timeout=timeout)
        try:
            store._probe()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def _open_remote(
        cls, url: str, api_key: str | None, where: str, *, prefer_grpc: bool, timeout: int | None
    ) -> ServerStore:
        try:
            with warnings.catch_warnings():
                # A key over plain http is the user's choice (a local docker compose) and the
                # warning would repeat on every run. The version check is off because it warns
                # on every unreachable start; _probe reports that as one clear error instead.
                warnings.filterwarnings("ignore", message="Api key is used with an insecure")
                client = QdrantClient(
                    url=url,
                    api_key=api_key,
                    prefer_grpc=prefer_grpc,
                    timeout=timeout,
                    check_compatibility=False,
                )
        except ValueError:
            raise JointspaceError(
                f"The Qdrant URL {where!r} is not valid; set QDRANT_URL to an http(s) URL such "
                "as http://localhost:6333."
            ) from None
        store = cls(client, where=f"the Qdrant server at {where}")
        store._api_key = api_key
        return store

    @classmethod
    def _local(cls, path: Path) -> ServerStore:
        try:
            client = QdrantClient(path=str(path))
        except RuntimeError as exc:
            if "already accessed" not in str(exc):
                raise
            raise JointspaceError(
                f"The Qdrant data in {path} is in use by another process; wait for it to "
                "finish or stop it, then try again."
            ) from None
        return cls(client, where=f"the local Qdrant folder {path}")

    def _probe(self) -> None:
        """One cheap authenticated request, so connection and key problems show up at once."""
        with self._errors(probing=True):
            self.client.get_collections()

    # -- error translation ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, name: str | None = None, probing: bool = False) -> Iterator[None]:
        """Turn client exceptions into one-sentence JointspaceErrors (never with the key);
        anything that is not a client or server error (a bug) passes through unchanged."""
        try:
            yield
        except JointspaceError:
            raise
        except Exception as exc:
            translated = self._translate(exc, name, probing)
            if translated is None:
                raise
            raise translated from None

    def _translate(self, exc: Exception, name: str | None, probing: bool) -> JointspaceError | None:
        kind, reason = _classify(exc)
        reason = self._scrub(reason)
        if kind == "unreachable":
            return JointspaceError(
                f"Cannot reach {self.where} ({reason}); start it (docker compose up -d) or set "
                "QDRANT_URL to the right address."
            )
        if kind == "refused":
            hint = "check QDRANT_API_KEY" if self._api_key else "set QDRANT_API_KEY"
            return JointspaceError(
                f"{_capitalise(self.where)} refused the API key ({reason}); {hint} or --api-key."
            )
        if probing:  # it answered, but not like a Qdrant server
            return JointspaceError(
                f"{_capitalise(self.where)} did not answer like a Qdrant server ({reason}); "
                "check QDRANT_URL."
            )
        if kind == "not_found" and name is not None:
            return _no_such_collection(name, self.where)
        if kind == "exists" and name is not None:
            return _already_exists(name, self.where)
        if isinstance(exc, (UnexpectedResponse, grpc.RpcError)):
            about = f" on collection '{name}'" if name else ""
            return JointspaceError(
                f"{_capitalise(self.where)} rejected a request{about} ({reason}); see the "
                "server's log if the cause is not clear from this."
            )
        return None

    def _scrub(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    # -- collections ---------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        vectors: Mapping[str, int],
        metadata: Mapping[str, Any],
        keyword_fields: Sequence[str] = (),
    ) -> None:
        """Create the collection; raises JointspaceError if it already exists."""
        if self.has_collection(name):
            raise _already_exists(name, self.where)
        stored = clean_metadata(metadata)
        params = {
            vname: qm.VectorParams(size=int(size), distance=qm.Distance.COSINE)
            for vname, size in vectors.items()
        }
        with self._errors(name):
            self.client.create_collection(name, vectors_config=params, metadata=stored)
            for field_name in keyword_fields:
                self._create_keyword_index(name, field_name)
        self._dims[name] = {vname: int(size) for vname, size in vectors.items()}
        if stored and not self._metadata(name):
            self.client.delete_collection(name)
            raise JointspaceError(
                f"{_capitalise(self.where)} does not keep collection metadata; upgrade it to "
                "Qdrant 1.16 or later."
            )

    def _create_keyword_index(self, name: str, field_name: str) -> None:
        with warnings.catch_warnings():
            # Local mode warns that indexes do nothing there; true, and irrelevant to a test.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            self.client.create_payload_index(
                name, field_name, field_schema=qm.PayloadSchemaType.KEYWORD, wait=True
            )

    def has_collection(self, name: str) -> bool:
        """Whether the collection exists."""
        check_name(name)
        with self._errors():
            return bool(self.client.collection_exists(name))

    def list_collections(self) -> list[str]:
        """Names of all collections on the server, sorted (other tools' collections too)."""
        with self._errors():
            return sorted(c.name for c in self.client.get_collections().collections)

    def info(self, name: str) -> CollectionInfo:
        """Point count, vector dims and metadata; raises JointspaceError if there is no such
        collection."""
        self._require(name)
        with self._errors(name):
            config = self.client.get_collection(name).config
        return CollectionInfo(
            name=name,
            points=self.count(name),
            vectors=_dims_of(config.params.vectors),
            metadata=dict(config.metadata or {}),
        )

    def _metadata(self, name: str) -> dict[str, Any]:
        with self._errors(name):
            return dict(self.client.get_collection(name).config.metadata or {})

    def set_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Replace the collection's jointspace metadata."""
        self._require(name)
        new = clean_metadata(metadata)
        # An update merges; sending None for the keys to drop makes it a replacement.
        update: dict[str, Any] = {key: None for key in self._metadata(name) if key not in new}
        update.update(new)
        if not update:
            return
        with self._errors(name):
            self.client.update_collection(name, metadata=update)

    def drop_collection(self, name: str) -> None:
        """Delete the collection and its points; raises JointspaceError if it does not exist."""
        self._require(name)
        with self._errors(name):
            self.client.delete_collection(name)
        self._dims.pop(name, None)

    def _require(self, name: str) -> None:
        if not self.has_collection(name):
            raise _no_such_collection(name, self.where)

    def _vector_dims(self, name: str) -> dict[str, int]:
        if name not in self._dims:
            with self._errors(name):
                config = self.client.get_collection(name).config
            self._dims[name] = _dims_of(config.params.vectors)
        return self._dims[name]

    # -- points --------------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or replace points by id; durable when it returns (wait=True)."""
        if not points:
            return
        structs = [
            qm.PointStruct(
                id=str(p.id),
                vector={vname: as_floats(vec) for vname, vec in p.vectors.items()},
                payload=dict(p.payload),
            )
            for p in points
        ]
        with self._errors(name):
            self.client.upsert(name, points=structs, wait=True)

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` already stored."""
        wanted = canonical_ids(ids)
        keys = list(wanted)
        found: set[str] = set()
        for start in range(0, len(keys), _RETRIEVE_CHUNK):
            with self._errors(name):
                records = self.client.retrieve(
                    name,
                    ids=keys[start : start + _RETRIEVE_CHUNK],
                    with_payload=False,
                    with_vectors=False,
                )
            found.update(wanted[str(r.id)] for r in records if str(r.id) in wanted)
        return found

    def count(self, name: str) -> int:
        """Exact number of points."""
        with self._errors(name):
            return int(self.client.count(name, exact=True).count)

    def search(
        self,
        name: str,
        vector_name: str,
        vector: Sequence[float],
        k: int,
        where: Mapping[str, str] | None = None,
    ) -> list[Hit]:
        """The k nearest points by cosine similarity on one named vector, best first; points
        without that vector are never returned."""
        query = as_floats(vector)
        check_dims(name, vector_name, self._vector_dims(name), query)
        if k <= 0:
            return []
        with self._errors(name):
            response = self.client.query_points(
                name,
                query=query,
                using=vector_name,
                limit=int(k),
                query_filter=_server_filter(where),
                with_payload=True,
                with_vectors=False,
            )
        return [
            Hit(id=str(p.id), score=float(p.score), payload=p.payload or {})
            for p in response.points
        ]

    def scroll(self, name: str, batch_size: int = 256) -> Iterator[Point]:
        """Every point with its vectors and payload, in id order."""
        offset: Any = None
        while True:
            with self._errors(name):
                records, offset = self.client.scroll(
                    name,
                    limit=int(batch_size),
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                )
            for r in records:
                yield Point(id=str(r.id), vectors=_vectors_of(r.vector), payload=r.payload or {})
            if offset is None:
                return

    def close(self) -> None:
        """Close the client's connections (and, in local mode, release its folder)."""
        self.client.close()


# -- module helpers ------------------------------------------------------------------------------


def _classify(exc: BaseException) -> tuple[str, str]:
    """('unreachable' | 'refused' | 'not_found' | 'exists' | 'other', short reason)."""
    if isinstance(exc, ResponseHandlingException):
        source = exc.source
        if isinstance(source, httpx.TransportError):
            return "unreachable", _short(source) or type(source).__name__
        return "other", _short(source)
    if isinstance(exc, httpx.TransportError):
        return "unreachable", _short(exc) or type(exc).__name__
    if isinstance(exc, UnexpectedResponse):
        return _classify_status(exc.status_code, _server_error(exc))
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return _classify_grpc(exc)
    if isinstance(exc, ValueError):  # local mode's wording
        text = str(exc)
        if "not found" in text:
            return "not_found", text
        if "already exists" in text:
            return "exists", text
    return "other", _short(exc)


def _classify_status(status: int | None, error: str) -> tuple[str, str]:
    if status == 401:
        return "refused", "HTTP 401"
    if status == 403:
        return "refused", "HTTP 403: a read-only key, or no access to this collection?"
    if status == 404:
        return "not_found", f"HTTP {status}"
    if status == 409 or "already exists" in error:
        return "exists", f"HTTP {status}"
    return "other", f"HTTP {status}: {error}" if error else f"HTTP {status}"


def _server_error(exc: UnexpectedResponse) -> str:
    """The server's own error text (Qdrant answers {"status": {"error": ...}}), shortened."""
    try:
        error = exc.structured()["status"]["error"]
    except Exception:
        error = exc.content.decode("utf-8", "replace")
    return _short(str(error))


def _classify_grpc(exc: Any) -> tuple[str, str]:
    code = exc.code()
    details = exc.details() if hasattr(exc, "details") else ""
    reason = f"gRPC {code.name}: {_short(str(details))}" if details else f"gRPC {code.name}"
    if code in _UNREACHABLE_GRPC:
        return "unreachable", reason
    if code in _REFUSED_GRPC:
        return "refused", reason
    if code == grpc.StatusCode.NOT_FOUND:
        return "not_found", reason
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return "exists", reason
    return "other", reason


def _short(exc: BaseException, limit: int = 120) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _no_such_collection(name: str, where: str) -> JointspaceError:
    return JointspaceError(
        f"There is no collection '{name}' on {where}; list them with `jointspace collections list`."
    )


def _already_exists(name: str, where: str) -> JointspaceError:
    return JointspaceError(
        f"A collection named '{name}' already exists on {where}; choose another name or drop "
        f"it first (`jointspace collections drop {name}`)."
    )


def _server_filter(where: Mapping[str, str] | None) -> qm.Filter | None:
    """A filter requiring each payload key to equal its value (any element, for lists)."""
    if not where:
        return None
    return qm.Filter(
        must=[
            qm.FieldCondition(key=key, match=qm.MatchValue(value=value))
            for key, value in where.items()
        ]
    )


def _dims_of(vectors: Any) -> dict[str, int]:
    if isinstance(vectors, Mapping):
        return {vname: int(params.size) for vname, params in vectors.items()}
    return {"": int(vectors.size)}  # a single unnamed vector; jointspace never creates those


def _vectors_of(vector: Any) -> dict[str, list[float]]:
    if not vector:
        return {}
    if isinstance(vector, Mapping):
        return {vname: list(vec) for vname, vec in vector.items()}
    return {"": list(vector)}


def _safe_url(url: str) -> str:
    """The URL without any user:password part, fit for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def _rest_port(url: str) -> int | None:
    """The port qdrant-client will use for REST: the URL's, else its default 6333."""
    try:
        parts = urlsplit(url if "//" in url else f"//{url}")
        return parts.port or _DEFAULT_REST_PORT
    except ValueError:
        return None


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]

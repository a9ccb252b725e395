"""The connection under the server backend: a `QdrantClient` opened, checked and called safely.

- Opening. `ServerConnection.open` prefers gRPC when the URL uses Qdrant's default REST port
  6333 (gRPC is then on 6334, Qdrant's default pairing) and falls back to REST when gRPC does
  not answer. On any other port REST alone is used, so a non-default port mapping never sends
  gRPC to an unrelated service. `ServerConnection.local` opens qdrant-client's local mode in a
  folder (the tests' server stand-in).
- Versions. On open the server's version (`client.info()`: REST `GET /` or gRPC HealthCheck)
  is compared with the installed qdrant-client's, by qdrant-client's own rule (same major,
  minors at most one apart). A different major version is an error (requests would fail in
  confusing ways); a minor gap above one is a logged warning (`server_version_warning`), since
  most of the API still works. qdrant-client's own check is off: it warns from a background
  thread, also when the server is merely unreachable.
- Retries. `call` retries what the caller says is safe to repeat, with capped exponential
  backoff and jitter (`RetryPolicy`, 5 tries by default), when the failure is transient: a
  timeout or a dropped or refused connection (qdrant-client wraps httpx's TimeoutException,
  NetworkError and RemoteProtocolError in `ResponseHandlingException`), an HTTP 5xx or 429
  (`UnexpectedResponse`, `ResourceExhaustedResponse` whose Retry-After is honoured), or a gRPC
  UNAVAILABLE or DEADLINE_EXCEEDED. The connection probe is never retried: a server that is
  down at start is reported at once.
- Messages. A wrong key (HTTP 401/403, gRPC UNAUTHENTICATED/PERMISSION_DENIED), an unreachable
  server and a failure that outlasted the retries each get their own one-sentence
  JointspaceError. The API key is never put into a message, a log line or an exception's text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import httpx
from qdrant_client import QdrantClient
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from jointspace.errors import JointspaceError, NotFound
from jointspace.store.options import ServerOptions
from jointspace.store.retry import NO_RETRIES, GaveUp, call_with_retries

T = TypeVar("T")

log = logging.getLogger("jointspace.store")

_DEFAULT_REST_PORT = 6333
_MAX_RETRY_AFTER_S = 60.0  # a server asking for longer than this is better reported than waited on
_UNREACHABLE_GRPC = {grpc.StatusCode.UNAVAILABLE}
_TIMEOUT_GRPC = {grpc.StatusCode.DEADLINE_EXCEEDED}
_REFUSED_GRPC = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
# What httpx raises for a lost or refused connection or a timeout; qdrant-client wraps these in
# ResponseHandlingException. Other TransportErrors (a bad proxy, an unsupported scheme) are
# configuration errors that no retry fixes.
_TRANSIENT_HTTPX = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class ServerConnection:
    """A QdrantClient (owned: close() closes it), the words that name its server in messages
    (`where`), and the options it was opened with (the API key only to scrub it from text)."""

    def __init__(
        self,
        client: QdrantClient,
        where: str = "the Qdrant server",
        options: ServerOptions | None = None,
    ) -> None:
        self.client = client
        self.where = where
        self.options = options or ServerOptions()
        self.server_version: str | None = None  # known after open() checked it
        self.server_version_warning: str | None = None

    @classmethod
    def open(cls, url: str, options: ServerOptions | None = None) -> ServerConnection:
        """A connection to the server at `url`, checked to answer, to accept the API key and
        to run a compatible version."""
        options = options or ServerOptions()
        if not url:
            raise JointspaceError("No Qdrant server URL given; set QDRANT_URL or --qdrant-url.")
        if options.prefer_grpc and _rest_port(url) == _DEFAULT_REST_PORT:
            with contextlib.suppress(Exception):
                return cls._open_checked(url, options, prefer_grpc=True)
            # gRPC did not answer (or the key was refused there): REST gives the final word.
        return cls._open_checked(url, options, prefer_grpc=False)

    @classmethod
    def local(cls, path: Path | str, options: ServerOptions | None = None) -> ServerConnection:
        """qdrant-client's local mode in the folder `path`; uploads are never parallel there
        (its SQLite connection is bound to one thread)."""
        path = Path(path)
        try:
            client = QdrantClient(path=str(path))
        except RuntimeError as exc:
            if "already accessed" not in str(exc):
                raise
            raise JointspaceError(
                f"The Qdrant data in {path} is in use by another process; wait for it to "
                "finish or stop it, then try again."
            ) from None
        serial = dataclasses.replace(options or ServerOptions(), parallel=1)
        return cls(client, where=f"the local Qdrant folder {path}", options=serial)

    @classmethod
    def _open_checked(cls, url: str, options: ServerOptions, prefer_grpc: bool) -> ServerConnection:
        where = safe_url(url)
        try:
            with warnings.catch_warnings():
                # A key over plain http is the user's choice (a local docker compose) and the
                # warning would repeat on every run. The version check is off because it warns
                # on every unreachable start; _check_version does it in the foreground instead.
                warnings.filterwarnings("ignore", message="Api key is used with an insecure")
                client = QdrantClient(
                    url=url,
                    api_key=options.api_key,
                    prefer_grpc=prefer_grpc,
                    timeout=options.timeout,
                    check_compatibility=False,
                )
        except ValueError:
            raise JointspaceError(
                f"The Qdrant URL {where!r} is not valid; set QDRANT_URL to an http(s) URL such "
                "as http://localhost:6333."
            ) from None
        connection = cls(client, where=f"the Qdrant server at {where}", options=options)
        try:
            connection._probe()
            connection._check_version()
        except BaseException:
            connection.close()
            raise
        return connection

    def close(self) -> None:
        """Close the client's connections (and, in local mode, release its folder)."""
        self.client.close()

    def _probe(self) -> None:
        """One cheap authenticated request, so connection and key problems show up at once."""
        self.call(
            self.client.get_collections, what="listing collections", retry=False, probing=True
        )

    def _check_version(self) -> None:
        """Compare the server's version with qdrant-client's (see the module docstring)."""
        try:
            server = str(self.client.info().version)
        except Exception as exc:  # an old server or a proxy hiding `/`: not worth failing
            log.debug("Could not read the version of %s: %s", self.where, self._reason(exc))
            return
        self.server_version = server
        client = importlib.metadata.version("qdrant-client")
        gap = version_gap(client, server)
        if gap is None:
            return
        major, minor = gap
        if major:
            raise JointspaceError(
                f"{capitalise(self.where)} runs Qdrant {server}, but qdrant-client {client} is "
                f"installed; their major versions differ, so requests would fail in confusing "
                f"ways: run a Qdrant {_major_minor(client)}.x server (docker-compose.yml pins "
                "one) or install a qdrant-client matching the server."
            )
        if minor > 1:
            self.server_version_warning = (
                f"{capitalise(self.where)} runs Qdrant {server} and qdrant-client {client} is "
                f"installed: {minor} minor versions apart (more than the one qdrant-client "
                "supports), so some calls may fail; align the two versions."
            )
            log.warning("%s", self.server_version_warning)

    # -- calling the client --------------------------------------------------------------------

    def call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        name: str | None = None,
        retry: bool = True,
        probing: bool = False,
    ) -> T:
        """fn(), retried when `retry` and the failure is transient, with client exceptions
        turned into one-sentence JointspaceErrors (never with the key); `what` says what the
        call does and `name` which collection it is about, for those messages. Anything that
        is not a client or server error (a bug) passes through unchanged."""
        policy = self.options.retry if retry else NO_RETRIES
        try:
            return call_with_retries(
                fn,
                policy,
                is_transient,
                describe=self._reason,
                wait_hint=_retry_after,
                what=f"{capitalise(what)} on {self.where}",
            )
        except JointspaceError:
            raise
        except GaveUp as gave_up:
            raise self._gave_up(gave_up, what) from None
        except Exception as exc:
            translated = self._translate(exc, name, probing)
            if translated is None:
                raise
            raise translated from None

    def scrub(self, text: str) -> str:
        """`text` with the API key replaced by ***."""
        if self.options.api_key:
            text = text.replace(self.options.api_key, "***")
        return text

    def _reason(self, exc: BaseException) -> str:
        return self.scrub(_classify(exc)[1])

    def _gave_up(self, gave_up: GaveUp, what: str) -> JointspaceError:
        kind, reason = _classify(gave_up.cause)
        reason = self.scrub(reason)
        tries = f"tried {gave_up.attempts} times over {gave_up.seconds:.1f} s while {what}"
        if kind == "unreachable":
            return JointspaceError(
                f"Cannot reach {self.where} ({reason}; {tries}); check that it is running "
                "(docker compose ps) and that QDRANT_URL is right, then re-run."
            )
        if kind == "timeout":
            return JointspaceError(
                f"{capitalise(self.where)} did not answer in time ({reason}; {tries}); it may "
                "be overloaded: check its log and load, or use smaller batches, then re-run."
            )
        return JointspaceError(
            f"{capitalise(self.where)} kept failing ({reason}; {tries}); see the server's log, "
            "then re-run."
        )

    def _translate(
        self, exc: BaseException, name: str | None, probing: bool
    ) -> JointspaceError | None:
        kind, reason = _classify(exc)
        reason = self.scrub(reason)
        if kind in ("unreachable", "timeout"):
            return JointspaceError(
                f"Cannot reach {self.where} ({reason}); start it (docker compose up -d) or set "
                "QDRANT_URL to the right address."
            )
        if kind == "refused":
            return self._refused(reason, probing)
        if probing:  # it answered, but not like a Qdrant server
            return JointspaceError(
                f"{capitalise(self.where)} did not answer like a Qdrant server ({reason}); "
                "check QDRANT_URL."
            )
        if kind == "not_found" and name is not None:
            return no_such_collection(name, self.where)
        if kind == "exists" and name is not None:
            return already_exists(name, self.where)
        if isinstance(exc, (UnexpectedResponse, grpc.RpcError, ResourceExhaustedResponse)):
            about = f" on collection '{name}'" if name else ""
            return JointspaceError(
                f"{capitalise(self.where)} rejected a request{about} ({reason}); see the "
                "server's log if the cause is not clear from this."
            )
        return None

    def _refused(self, reason: str, probing: bool) -> JointspaceError:
        forbidden = "403" in reason or "PERMISSION_DENIED" in reason
        if forbidden and not probing:
            # The key passed the probe (a read) but not this call: typically a read-only key
            # used to write. At the probe, 403 is just how some versions refuse a wrong key.
            return JointspaceError(
                f"{capitalise(self.where)} refused the API key for this request ({reason}); "
                "a read-only key can search but not write: use the read-write key in "
                "QDRANT_API_KEY or --api-key."
            )
        hint = "check QDRANT_API_KEY" if self.options.api_key else "set QDRANT_API_KEY"
        return JointspaceError(
            f"{capitalise(self.where)} refused the API key ({reason}); {hint} or --api-key."
        )


# -- transient failures --------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Whether `exc`, raised by qdrant-client, is worth retrying: a timeout, a dropped or
    refused connection, an HTTP 5xx or 429, or a gRPC UNAVAILABLE or DEADLINE_EXCEEDED."""
    if isinstance(exc, ResponseHandlingException):
        return isinstance(exc.source, _TRANSIENT_HTTPX)
    if isinstance(exc, (*_TRANSIENT_HTTPX, ResourceExhaustedResponse)):
        return True
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is not None and (exc.status_code >= 500 or exc.status_code == 429)
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return exc.code() in _UNREACHABLE_GRPC | _TIMEOUT_GRPC
    return False


def _retry_after(exc: BaseException) -> float | None:
    """The wait a rate-limiting server asked for (capped), if any."""
    if isinstance(exc, ResourceExhaustedResponse):
        return min(float(exc.retry_after_s), _MAX_RETRY_AFTER_S)
    return None


# -- versions ------------------------------------------------------------------------------------

_VERSION = re.compile(r"v?(\d+)\.(\d+)")


def version_gap(client_version: str, server_version: str) -> tuple[int, int] | None:
    """(major difference, minor difference) between two "X.Y[.Z...]" versions, or None if
    either does not parse (then nothing can be said)."""
    client = _VERSION.match(client_version.strip())
    server = _VERSION.match(server_version.strip())
    if client is None or server is None:
        return None
    major = abs(int(client[1]) - int(server[1]))
    return major, (abs(int(client[2]) - int(server[2])) if major == 0 else 0)


def _major_minor(version: str) -> str:
    found = _VERSION.match(version)
    return f"{found[1]}.{found[2]}" if found else version


# -- classifying client exceptions -----------------------------------------------------------------


def _classify(exc: BaseException) -> tuple[str, str]:
    """('unreachable' | 'timeout' | 'refused' | 'not_found' | 'exists' | 'other', reason)."""
    if isinstance(exc, ResponseHandlingException):
        source = exc.source
        if isinstance(source, httpx.TransportError):
            return _classify_transport(source)
        return "other", _short(source)
    if isinstance(exc, httpx.TransportError):
        return _classify_transport(exc)
    if isinstance(exc, UnexpectedResponse):
        return _classify_status(exc.status_code, _server_error(exc))
    if isinstance(exc, ResourceExhaustedResponse):
        return "other", f"HTTP 429 rate limited: {_short(exc)}"
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return _classify_grpc(exc)
    if isinstance(exc, ValueError):  # local mode's wording
        text = str(exc)
        if "not found" in text:
            return "not_found", text
        if "already exists" in text:
            return "exists", text
    return "other", _short(exc)


def _classify_transport(exc: httpx.TransportError) -> tuple[str, str]:
    reason = f"{type(exc).__name__}: {_short(exc)}" if str(exc) else type(exc).__name__
    # A connect timeout means nothing answered at that address, like a refused connection.
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return "timeout", reason
    return "unreachable", reason


def _classify_status(status: int | None, error: str) -> tuple[str, str]:
    if status == 401:
        return "refused", "HTTP 401"
    if status == 403:
        return "refused", "HTTP 403"
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
    details = exc.details() if callable(getattr(exc, "details", None)) else ""
    reason = f"gRPC {code.name}: {_short(str(details))}" if details else f"gRPC {code.name}"
    if code in _UNREACHABLE_GRPC:
        return "unreachable", reason
    if code in _TIMEOUT_GRPC:
        return "timeout", reason
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


# -- messages and URLs ---------------------------------------------------------------------------


def no_such_collection(name: str, where: str) -> NotFound:
    return NotFound(
        f"There is no collection '{name}' on {where}; list them with `jointspace collections list`."
    )


def already_exists(name: str, where: str) -> JointspaceError:
    return JointspaceError(
        f"A collection named '{name}' already exists on {where}; choose another name or drop "
        f"it first (`jointspace collections drop {name}`)."
    )


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def safe_url(url: str) -> str:
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

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

Robustness:
- Retries. Calls that are safe to repeat (reads, upserts by id, payload-index creation,
  metadata/optimizer updates, alias switches) are retried with capped exponential backoff and
  jitter (`RetryPolicy`, 5 tries by default) when the failure is transient: a timeout or a dropped
  or refused connection (qdrant-client wraps httpx's TimeoutException, NetworkError and
  RemoteProtocolError in `ResponseHandlingException`), an HTTP 5xx or 429 (`UnexpectedResponse`,
  `ResourceExhaustedResponse` whose Retry-After is honoured), or a gRPC UNAVAILABLE or
  DEADLINE_EXCEEDED. create_collection and drop_collection are not retried: after a lost
  response a retry would report "already exists" / "no such collection" for its own success.
  Neither is the connection probe: a server that is down at start is reported at once.
- Messages. A wrong key (HTTP 401/403, gRPC UNAUTHENTICATED/PERMISSION_DENIED), an unreachable
  server and a failure that outlasted the retries each get their own one-sentence
  JointspaceError. The API key is never put into a message, a log line or an exception's text.
- Versions. On connect the server's version (`client.info()`: REST `GET /` or gRPC HealthCheck)
  is compared with the installed qdrant-client's, by qdrant-client's own rule (same major, minors
  at most one apart). A different major version is an error (requests would fail in confusing
  ways); a minor gap above one is a logged warning (`server_version_warning`), since most of the
  API still works. qdrant-client's own check is off: it warns from a background thread, also when
  the server is merely unreachable.
- Bulk uploads. `upsert` sends large batches in chunks (`batch_size` points per request, wait=True),
  `parallel` chunks at a time from threads. qdrant-client's upload_points is not used: its
  parallel mode starts worker processes that re-open the connection, and it retries every
  exception (a 400 too) without backoff. `begin_bulk` switches HNSW indexing off
  (`optimizers_config.indexing_threshold=0`, Qdrant's "fastest upload" setting), `end_bulk`
  restores the previous threshold (Qdrant's default, 20000 KB, if it was off already, e.g. left so
  by a run that died). Payload indexes are created with the collection, so before any upload.
- Sharding. `shards` and `replicas` set shard_number and replication_factor on collections this
  store creates; None leaves the server's defaults.
- Aliases. `set_alias` switches an alias in one update_collection_aliases call (delete the old
  alias + create the new one), which Qdrant applies atomically. Point operations (upsert, count,
  retrieve, query, scroll) pass an alias to the server, which resolves it; collection-level
  calls (info, vector dims, metadata, optimizer settings) resolve it here first, and
  drop_collection refuses an alias. Dropping a collection drops its aliases (Qdrant does).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib.metadata
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import httpx
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
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
from jointspace.store.retry import NO_RETRIES, GaveUp, RetryPolicy, call_with_retries

T = TypeVar("T")

log = logging.getLogger("jointspace.store")

_RETRIEVE_CHUNK = 1000
_DEFAULT_REST_PORT = 6333
# Qdrant's default indexing threshold (KB of vectors per segment before HNSW is built), as
# documented on OptimizersConfigDiff.indexing_threshold in qdrant-client 1.20.
DEFAULT_INDEXING_THRESHOLD_KB = 20_000
_MAX_RETRY_AFTER_S = 60.0  # a server asking for longer than this is better reported than waited on
_UNREACHABLE_GRPC = {grpc.StatusCode.UNAVAILABLE}
_TIMEOUT_GRPC = {grpc.StatusCode.DEADLINE_EXCEEDED}
_REFUSED_GRPC = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
# What httpx raises for a lost or refused connection or a timeout; qdrant-client wraps these in
# ResponseHandlingException. Other TransportErrors (a bad proxy, an unsupported scheme) are
# configuration errors that no retry fixes.
_TRANSIENT_HTTPX = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class Snapshot:
    """A snapshot file of a collection on one node."""

    name: str
    size: int
    created: str


@dataclass(frozen=True)
class ServerOptions:
    """Tuning of a ServerStore; every field has a safe default.

    shards, replicas: shard_number and replication_factor of collections this store creates
        (None: the server's default: one shard on a single node, one per node in a cluster).
    batch_size: points per upsert request; Qdrant recommends 64-256.
    parallel: upsert requests in flight at once (threads); 1 in local mode, which is not
        thread-safe.
    retry: the retry policy for calls that are safe to repeat.
    """

    shards: int | None = None
    replicas: int | None = None
    batch_size: int = 256
    parallel: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        for label, value in (("shards", self.shards), ("replicas", self.replicas)):
            if value is not None and value < 1:
                raise JointspaceError(f"The number of {label} must be at least 1, not {value}.")
        if self.batch_size < 1 or self.parallel < 1:
            raise JointspaceError("batch_size and parallel must be at least 1.")


class ServerStore(Store):
    """Collections on a Qdrant server (or in qdrant-client's local mode). The store owns
    `client` and closes it in close(); `where` names the server in error messages."""

    def __init__(
        self,
        client: QdrantClient,
        where: str = "the Qdrant server",
        options: ServerOptions | None = None,
    ) -> None:
        self.client = client
        self.where = where
        self.options = options or ServerOptions()
        self.server_version: str | None = None  # known after connect() checked it
        self.server_version_warning: str | None = None
        self._api_key: str | None = None  # only to scrub it from messages, never shown
        self._dims: dict[str, dict[str, int]] = {}  # vector dims, cached per name used
        self._bulk_restore: dict[str, int] = {}  # collection -> indexing threshold to restore

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        api_key: str | None = None,
        *,
        path: Path | str | None = None,
        prefer_grpc: bool = True,
        timeout: int | None = None,
        shards: int | None = None,
        replicas: int | None = None,
        batch_size: int = 256,
        parallel: int = 1,
        retry: RetryPolicy | None = None,
    ) -> ServerStore:
        """A store on the server at `url`, checked to answer, to accept `api_key` and to run a
        compatible version; or, with `path`, on qdrant-client's local mode in that folder (the
        tests' server stand-in). The other options are ServerOptions'."""
        options = ServerOptions(
            shards=shards,
            replicas=replicas,
            batch_size=batch_size,
            parallel=parallel,
            retry=retry or RetryPolicy(),
        )
        if path is not None:
            return cls._local(Path(path), options)
        if not url:
            raise JointspaceError("No Qdrant server URL given; set QDRANT_URL or --qdrant-url.")
        where = _safe_url(url)
        if prefer_grpc and _rest_port(url) == _DEFAULT_REST_PORT:
            with contextlib.suppress(Exception):
                return cls._open_checked(url, api_key, where, options, True, timeout)
            # gRPC did not answer (or the key was refused there): REST gives the final word.
        return cls._open_checked(url, api_key, where, options, False, timeout)

    @classmethod
    def _open_checked(
        cls,
        url: str,
        api_key: str | None,
        where: str,
        options: ServerOptions,
        prefer_grpc: bool,
        timeout: int | None,
    ) -> ServerStore:
        store = cls._open_remote(url, api_key, where, options, prefer_grpc, timeout)
        try:
            store._probe()
            store._check_version()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def _open_remote(
        cls,
        url: str,
        api_key: str | None,
        where: str,
        options: ServerOptions,
        prefer_grpc: bool,
        timeout: int | None,
    ) -> ServerStore:
        try:
            with warnings.catch_warnings():
                # A key over plain http is the user's choice (a local docker compose) and the
                # warning would repeat on every run. The version check is off because it warns
                # on every unreachable start; _check_version does it in the foreground instead.
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
        store = cls(client, where=f"the Qdrant server at {where}", options=options)
        store._api_key = api_key
        return store

    @classmethod
    def _local(cls, path: Path, options: ServerOptions) -> ServerStore:
        try:
            client = QdrantClient(path=str(path))
        except RuntimeError as exc:
            if "already accessed" not in str(exc):
                raise
            raise JointspaceError(
                f"The Qdrant data in {path} is in use by another process; wait for it to "
                "finish or stop it, then try again."
            ) from None
        # Local mode is not thread-safe (its SQLite connection is bound to one thread).
        local_options = ServerOptions(
            shards=options.shards,
            replicas=options.replicas,
            batch_size=options.batch_size,
            parallel=1,
            retry=options.retry,
        )
        return cls(client, where=f"the local Qdrant folder {path}", options=local_options)

    def _probe(self) -> None:
        """One cheap authenticated request, so connection and key problems show up at once."""
        self._call(
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
                f"{_capitalise(self.where)} runs Qdrant {server}, but qdrant-client {client} is "
                f"installed; their major versions differ, so requests would fail in confusing "
                f"ways: run a Qdrant {_major_minor(client)}.x server (docker-compose.yml pins "
                "one) or install a qdrant-client matching the server."
            )
        if minor > 1:
            self.server_version_warning = (
                f"{_capitalise(self.where)} runs Qdrant {server} and qdrant-client {client} is "
                f"installed: {minor} minor versions apart (more than the one qdrant-client "
                "supports), so some calls may fail; align the two versions."
            )
            log.warning("%s", self.server_version_warning)

    # -- calling the client --------------------------------------------------------------------

    def _call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        name: str | None = None,
        retry: bool = True,
        probing: bool = False,
    ) -> T:
        """fn(), retried when `retry` and the failure is transient, with client exceptions
        turned into one-sentence JointspaceErrors (never with the key). Anything that is not a
        client or server error (a bug) passes through unchanged."""
        policy = self.options.retry if retry else NO_RETRIES
        try:
            return call_with_retries(
                fn,
                policy,
                is_transient,
                describe=self._reason,
                wait_hint=_retry_after,
                what=f"{_capitalise(what)} on {self.where}",
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

    def _reason(self, exc: BaseException) -> str:
        return self._scrub(_classify(exc)[1])

    def _gave_up(self, gave_up: GaveUp, what: str) -> JointspaceError:
        kind, reason = _classify(gave_up.cause)
        reason = self._scrub(reason)
        tries = f"tried {gave_up.attempts} times over {gave_up.seconds:.1f} s while {what}"
        if kind == "unreachable":
            return JointspaceError(
                f"Cannot reach {self.where} ({reason}; {tries}); check that it is running "
                "(docker compose ps) and that QDRANT_URL is right, then re-run."
            )
        if kind == "timeout":
            return JointspaceError(
                f"{_capitalise(self.where)} did not answer in time ({reason}; {tries}); it may "
                "be overloaded: check its log and load, or use smaller batches, then re-run."
            )
        return JointspaceError(
            f"{_capitalise(self.where)} kept failing ({reason}; {tries}); see the server's log, "
            "then re-run."
        )

    def _translate(
        self, exc: BaseException, name: str | None, probing: bool
    ) -> JointspaceError | None:
        kind, reason = _classify(exc)
        reason = self._scrub(reason)
        if kind in ("unreachable", "timeout"):
            return JointspaceError(
                f"Cannot reach {self.where} ({reason}); start it (docker compose up -d) or set "
                "QDRANT_URL to the right address."
            )
        if kind == "refused":
            return self._refused(reason, probing)
        if probing:  # it answered, but not like a Qdrant server
            return JointspaceError(
                f"{_capitalise(self.where)} did not answer like a Qdrant server ({reason}); "
                "check QDRANT_URL."
            )
        if kind == "not_found" and name is not None:
            return _no_such_collection(name, self.where)
        if kind == "exists" and name is not None:
            return _already_exists(name, self.where)
        if isinstance(exc, (UnexpectedResponse, grpc.RpcError, ResourceExhaustedResponse)):
            about = f" on collection '{name}'" if name else ""
            return JointspaceError(
                f"{_capitalise(self.where)} rejected a request{about} ({reason}); see the "
                "server's log if the cause is not clear from this."
            )
        return None

    def _refused(self, reason: str, probing: bool) -> JointspaceError:
        forbidden = "403" in reason or "PERMISSION_DENIED" in reason
        if forbidden and not probing:
            # The key passed the probe (a read) but not this call: typically a read-only key
            # used to write. At the probe, 403 is just how some versions refuse a wrong key.
            return JointspaceError(
                f"{_capitalise(self.where)} refused the API key for this request ({reason}); "
                "a read-only key can search but not write: use the read-write key in "
                "QDRANT_API_KEY or --api-key."
            )
        hint = "check QDRANT_API_KEY" if self._api_key else "set QDRANT_API_KEY"
        return JointspaceError(
            f"{_capitalise(self.where)} refused the API key ({reason}); {hint} or --api-key."
        )

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
        """Create the collection (with the store's shards and replicas) and its keyword payload
        indexes; raises JointspaceError if a collection or alias of that name exists."""
        aliases = self.list_aliases()
        if name in aliases:
            raise JointspaceError(
                f"'{name}' already exists on {self.where} as an alias of collection "
                f"'{aliases[name]}'; choose another name."
            )
        if self.has_collection(name):
            raise _already_exists(name, self.where)
        stored = clean_metadata(metadata)
        params = {
            vname: qm.VectorParams(size=int(size), distance=qm.Distance.COSINE)
            for vname, size in vectors.items()
        }
        self._call(
            lambda: self.client.create_collection(
                name, vectors_config=params, metadata=stored, **self._sharding()
            ),
            what=f"creating collection '{name}'",
            name=name,
            retry=False,
        )
        for field_name in keyword_fields:
            self._create_keyword_index(name, field_name)
        self._dims[name] = {vname: int(size) for vname, size in vectors.items()}
        if stored and not self._metadata(name):
            self.client.delete_collection(name)
            raise JointspaceError(
                f"{_capitalise(self.where)} does not keep collection metadata; upgrade it to "
                "Qdrant 1.16 or later."
            )

    def _sharding(self) -> dict[str, int]:
        """create_collection's sharding arguments; absent ones keep the server's defaults."""
        extra: dict[str, int] = {}
        if self.options.shards is not None:
            extra["shard_number"] = self.options.shards
        if self.options.replicas is not None:
            extra["replication_factor"] = self.options.replicas
        return extra

    def _create_keyword_index(self, name: str, field_name: str) -> None:
        def create() -> None:
            with warnings.catch_warnings():
                # Local mode warns that indexes do nothing there; true, and irrelevant to a test.
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                self.client.create_payload_index(
                    name, field_name, field_schema=qm.PayloadSchemaType.KEYWORD, wait=True
                )

        # Creating an index that exists is a no-op for Qdrant, so a retry is harmless.
        self._call(create, what=f"indexing field '{field_name}' of '{name}'", name=name)

    def has_collection(self, name: str) -> bool:
        """Whether the collection (or an alias of that name) exists."""
        check_name(name)
        exists = self._call(
            lambda: bool(self.client.collection_exists(name)), what=f"looking up '{name}'"
        )
        return exists or name in self.list_aliases()

    def list_collections(self) -> list[str]:
        """Names of all collections on the server, sorted (other tools' collections too;
        aliases are not collections: see list_aliases)."""
        response = self._call(self.client.get_collections, what="listing collections")
        return sorted(c.name for c in response.collections)

    def info(self, name: str) -> CollectionInfo:
        """Point count, vector dims and metadata (of the collection an alias points to);
        raises JointspaceError if there is no such collection."""
        self._require(name)
        config = self._config(self.resolve(name))
        return CollectionInfo(
            name=name,
            points=self.count(name),
            vectors=_dims_of(config.params.vectors),
            metadata=dict(config.metadata or {}),
        )

    def _config(self, collection: str) -> Any:
        return self._call(
            lambda: self.client.get_collection(collection).config,
            what=f"reading the configuration of '{collection}'",
            name=collection,
        )

    def _metadata(self, collection: str) -> dict[str, Any]:
        return dict(self._config(collection).metadata or {})

    def set_metadata(self, name: str, metadata: Mapping[str, Any]) -> None:
        """Replace the collection's jointspace metadata (an alias's collection's)."""
        self._require(name)
        collection = self.resolve(name)
        new = clean_metadata(metadata)
        # An update merges; sending None for the keys to drop makes it a replacement.
        update: dict[str, Any] = {key: None for key in self._metadata(collection) if key not in new}
        update.update(new)
        if not update:
            return
        self._call(
            lambda: self.client.update_collection(collection, metadata=update),
            what=f"updating the metadata of '{collection}'",
            name=collection,
        )

    def drop_collection(self, name: str) -> None:
        """Delete the collection, its points and its aliases; raises JointspaceError if it does
        not exist or if `name` is an alias (drop the collection itself, deliberately)."""
        self._require(name)
        aliases = self.list_aliases()
        if name in aliases:
            raise _is_an_alias(name, aliases[name], self.where)
        self._call(
            lambda: self.client.delete_collection(name),
            what=f"dropping '{name}'",
            name=name,
            retry=False,
        )
        self._forget(name, *(alias for alias, target in aliases.items() if target == name))

    def _forget(self, *names: str) -> None:
        for cached in names:
            self._dims.pop(cached, None)
            self._bulk_restore.pop(cached, None)

    def _require(self, name: str) -> None:
        if not self.has_collection(name):
            raise _no_such_collection(name, self.where)

    def _vector_dims(self, name: str, refresh: bool = False) -> dict[str, int]:
        if refresh or name not in self._dims:
            config = self._config(self.resolve(name))
            self._dims[name] = _dims_of(config.params.vectors)
        return self._dims[name]

    # -- bulk uploads --------------------------------------------------------------------------

    def begin_bulk(self, name: str) -> None:
        """Switch HNSW indexing of the collection off until end_bulk (indexing_threshold=0):
        uploads are then plain appends; searches stay exact meanwhile."""
        collection = self.resolve(name)
        current = self._indexing_threshold(collection)
        # Off already means a run died between begin and end: restore the default then.
        self._bulk_restore.setdefault(collection, current or DEFAULT_INDEXING_THRESHOLD_KB)
        self._set_indexing_threshold(collection, 0)

    def end_bulk(self, name: str) -> None:
        """Restore the indexing threshold begin_bulk saved; the server then builds the HNSW
        index in the background. Without a begin_bulk in this store, indexing left off by
        another (dead) run is switched back on with Qdrant's default."""
        collection = self.resolve(name)
        restore = self._bulk_restore.pop(collection, None)
        if restore is None:
            if self._indexing_threshold(collection) != 0:
                return
            restore = DEFAULT_INDEXING_THRESHOLD_KB
        self._set_indexing_threshold(collection, restore)

    def _indexing_threshold(self, collection: str) -> int | None:
        optimizer = self._config(collection).optimizer_config
        return getattr(optimizer, "indexing_threshold", None)

    def _set_indexing_threshold(self, collection: str, kilobytes: int) -> None:
        diff = qm.OptimizersConfigDiff(indexing_threshold=kilobytes)
        self._call(
            lambda: self.client.update_collection(collection, optimizers_config=diff),
            what=f"setting the indexing threshold of '{collection}' to {kilobytes} KB",
            name=collection,
        )

    # -- aliases -------------------------------------------------------------------------------

    def list_aliases(self) -> dict[str, str]:
        """Every alias on the server and the collection it points to."""
        response = self._call(self.client.get_aliases, what="listing aliases")
        return {a.alias_name: a.collection_name for a in response.aliases}

    def set_alias(self, alias: str, collection: str) -> None:
        """Point `alias` at `collection` in one atomic update_collection_aliases call (delete
        the old alias and create the new one): every request sees one collection or the
        other. Raises JointspaceError if `collection` is not a collection or `alias` is one."""
        check_name(alias)
        check_name(collection)

        def switch() -> None:
            # Re-read on every try: after a lost response the first try may have applied.
            aliases = self.list_aliases()
            operations = _alias_switch(alias, collection, aliases)
            if operations:
                self._check_alias_target(alias, collection, aliases)
                self.client.update_collection_aliases(change_aliases_operations=operations)

        self._call(switch, what=f"pointing alias '{alias}' at '{collection}'")
        self._forget(alias)

    def _check_alias_target(self, alias: str, collection: str, aliases: Mapping[str, str]) -> None:
        if collection in aliases:
            raise JointspaceError(
                f"'{collection}' is itself an alias (of '{aliases[collection]}'); point "
                f"'{alias}' at a collection."
            )
        if not self.client.collection_exists(collection):
            raise _no_such_collection(collection, self.where)
        if alias not in aliases and self.client.collection_exists(alias):
            raise JointspaceError(
                f"'{alias}' is a collection on {self.where}, so it cannot become an alias; "
                "choose another alias name."
            )

    def delete_alias(self, alias: str) -> None:
        """Remove `alias`; its collection stays. Raises JointspaceError if there is none."""
        check_name(alias)
        if alias not in self.list_aliases():
            raise _no_such_alias(alias, self.where)
        operation = qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias))
        # Qdrant deletes an alias "if exists", so a retry after a lost response is harmless.
        self._call(
            lambda: self.client.update_collection_aliases(change_aliases_operations=[operation]),
            what=f"deleting alias '{alias}'",
        )
        self._forget(alias)

    # -- snapshots -----------------------------------------------------------------------------

    def create_snapshot(self, name: str) -> Snapshot:
        """Snapshot a collection on the node this client talks to (in a cluster, run it
        against every node: each holds its own shards)."""
        collection = self.resolve(name)
        result = self._snapshot_call(
            lambda: self.client.create_snapshot(collection, wait=True),
            f"creating a snapshot of '{collection}'",
            retry=False,
        )
        return Snapshot(result.name, result.size, str(result.creation_time))

    def list_snapshots(self, name: str) -> list[Snapshot]:
        """The collection's snapshots on this node, oldest first."""
        collection = self.resolve(name)
        found = self._snapshot_call(
            lambda: self.client.list_snapshots(collection), f"listing snapshots of '{collection}'"
        )
        snapshots = [Snapshot(s.name, s.size, str(s.creation_time)) for s in found]
        return sorted(snapshots, key=lambda s: s.created)

    def restore_snapshot(self, name: str, location: str) -> None:
        """Restore a collection from a snapshot: a snapshot name on this node, or a URL the
        server can fetch (http(s):// or file:// on the server's disk)."""
        collection = self.resolve(name)
        if "://" not in location:
            location = f"file:///qdrant/snapshots/{collection}/{location}"
        self._snapshot_call(
            lambda: self.client.recover_snapshot(collection, location, wait=True),
            f"restoring '{collection}' from {location}",
            retry=False,
        )
        self._forget(name, collection)

    def _snapshot_call(self, fn: Callable[[], T], what: str, retry: bool = True) -> T:
        try:
            return self._call(fn, what=what, retry=retry)
        except NotImplementedError:
            raise JointspaceError(
                f"Snapshots need a Qdrant server; {self.where} has none (qdrant-client's local "
                "mode): point --qdrant-url at a server."
            ) from None

    # -- points --------------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or replace points by id; durable when it returns (wait=True). Sent in chunks
        of `batch_size`, `parallel` at a time; each chunk is retried on transient failures (an
        upsert by id is idempotent). On a persistent failure, chunks already sent stay written
        and the first error is raised."""
        if not points:
            return
        size = self.options.batch_size
        chunks = [points[start : start + size] for start in range(0, len(points), size)]
        if self.options.parallel == 1 or len(chunks) == 1:
            for chunk in chunks:
                self._upsert_chunk(name, chunk)
            return
        self._upsert_parallel(name, chunks)

    def _upsert_parallel(self, name: str, chunks: Sequence[Sequence[Point]]) -> None:
        workers = min(self.options.parallel, len(chunks))
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upsert") as pool:
            futures = [pool.submit(self._upsert_chunk, name, chunk) for chunk in chunks]
            done, pending = cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
            for future in pending:  # a failure: stop sending what has not started
                future.cancel()
        for future in futures:  # the first error in upload order, once all threads are idle
            if not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def _upsert_chunk(self, name: str, chunk: Sequence[Point]) -> None:
        structs = [
            qm.PointStruct(
                id=str(p.id),
                vector={vname: as_floats(vec) for vname, vec in p.vectors.items()},
                payload=dict(p.payload),
            )
            for p in chunk
        ]
        self._call(
            lambda: self.client.upsert(name, points=structs, wait=True),
            what=f"upserting {len(structs)} points into '{name}'",
            name=name,
        )

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` already stored."""
        wanted = canonical_ids(ids)
        keys = list(wanted)
        found: set[str] = set()
        for start in range(0, len(keys), _RETRIEVE_CHUNK):
            part = keys[start : start + _RETRIEVE_CHUNK]
            records = self._call(
                lambda part=part: self.client.retrieve(
                    name, ids=part, with_payload=False, with_vectors=False
                ),
                what=f"looking up {len(part)} point ids in '{name}'",
                name=name,
            )
            found.update(wanted[str(r.id)] for r in records if str(r.id) in wanted)
        return found

    def count(self, name: str) -> int:
        """Exact number of points."""
        result = self._call(
            lambda: self.client.count(name, exact=True),
            what=f"counting the points of '{name}'",
            name=name,
        )
        return int(result.count)

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
        self._check_query(name, vector_name, query)
        if k <= 0:
            return []
        response = self._call(
            lambda: self.client.query_points(
                name,
                query=query,
                using=vector_name,
                limit=int(k),
                query_filter=_server_filter(where),
                with_payload=True,
                with_vectors=False,
            ),
            what=f"searching '{name}'",
            name=name,
        )
        return [
            Hit(id=str(p.id), score=float(p.score), payload=p.payload or {})
            for p in response.points
        ]

    def _check_query(self, name: str, vector_name: str, query: Sequence[float]) -> None:
        """check_dims against the cached dims, re-read once on a mismatch: an alias may have
        been switched to a collection with other vectors since they were cached."""
        try:
            check_dims(name, vector_name, self._vector_dims(name), query)
        except JointspaceError:
            check_dims(name, vector_name, self._vector_dims(name, refresh=True), query)

    def scroll(self, name: str, batch_size: int = 256) -> Iterator[Point]:
        """Every point with its vectors and payload, in id order."""
        offset: Any = None
        while True:
            records, offset = self._call(
                lambda offset=offset: self.client.scroll(
                    name,
                    limit=int(batch_size),
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                ),
                what=f"reading the points of '{name}'",
                name=name,
            )
            for r in records:
                yield Point(id=str(r.id), vectors=_vectors_of(r.vector), payload=r.payload or {})
            if offset is None:
                return

    def close(self) -> None:
        """Close the client's connections (and, in local mode, release its folder)."""
        self.client.close()


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


# -- module helpers ------------------------------------------------------------------------------


def _alias_switch(alias: str, collection: str, aliases: Mapping[str, str]) -> list[Any]:
    """The operations that point `alias` at `collection`: none if it already does, else a
    create, preceded by a delete if the alias exists (applied together, atomically)."""
    current = aliases.get(alias)
    if current == collection:
        return []
    create = qm.CreateAliasOperation(
        create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
    )
    if current is None:
        return [create]
    return [qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)), create]


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


def _no_such_collection(name: str, where: str) -> JointspaceError:
    return JointspaceError(
        f"There is no collection '{name}' on {where}; list them with `jointspace collections list`."
    )


def _already_exists(name: str, where: str) -> JointspaceError:
    return JointspaceError(
        f"A collection named '{name}' already exists on {where}; choose another name or drop "
        f"it first (`jointspace collections drop {name}`)."
    )


def _no_such_alias(alias: str, where: str) -> JointspaceError:
    return JointspaceError(f"There is no alias '{alias}' on {where}.")


def _is_an_alias(name: str, collection: str, where: str) -> JointspaceError:
    return JointspaceError(
        f"'{name}' is an alias of collection '{collection}' on {where}, not a collection; drop "
        f"'{collection}' itself if that is what you mean."
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

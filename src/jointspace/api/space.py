"""`connect()` → `Space`: a store (embedded or a Qdrant server) with its collections."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..corpus.select import SourceOptions
from ..errors import NotFound
from ..pipeline.compute import Compute
from ..progress import Progress, ProgressCallback
from .home import resolve_home
from .reports import CollectionSummary, CopyReport

if TYPE_CHECKING:
    from ..ingest.indexing import IndexOutcome
    from ..ingest.run import IngestReport
    from ..store.base import Snapshot, Store
    from .collection import Collection

_SOURCE_OPTIONS = {f.name for f in fields(SourceOptions)}


def connect(
    home: str | Path | None = None,
    url: str | None = None,
    api_key: str | None = None,
    *,
    grpc: bool = True,
    owner: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    engine: str | None = None,
) -> Space:
    """A Space: the Qdrant server at `url`, else the embedded store under `home` (default
    $JOINTSPACE_HOME, else ./jointspace-data). Called with neither, it follows the environment:
    $QDRANT_URL (with $QDRANT_API_KEY) when set. The home also holds the feature cache and logs
    in both cases. `owner` names this process in the embedded store's locks (e.g. "jointspace
    serve at URL"). `device` (auto|cpu|cuda[:N]), `precision` (auto|fp32|bf16|fp16) and
    `engine` (auto|torch|openvino): where and how ingest and queries run the backbone (default:
    $JOINTSPACE_DEVICE / $JOINTSPACE_PRECISION / $JOINTSPACE_ENGINE, else auto: a GPU if torch
    sees one; bf16 where the hardware has it natively; OpenVINO for images on a CPU)."""
    if url is None and home is None:
        url = os.environ.get("QDRANT_URL") or None
    if url and api_key is None:
        api_key = os.environ.get("QDRANT_API_KEY") or None
    compute = Compute.resolve(device, precision, engine)
    return Space(resolve_home(home), url, api_key, grpc=grpc, owner=owner, compute=compute)


class Space:
    """A store and its collections. The store is opened on first use and held until close()
    (the embedded store locks a collection while this Space uses it)."""

    def __init__(
        self,
        home: Path,
        url: str | None = None,
        api_key: str | None = None,
        *,
        grpc: bool = True,
        owner: str | None = None,
        compute: Compute | None = None,
    ) -> None:
        self.home, self.url, self.api_key = home, url, api_key
        self.grpc, self.owner = grpc, owner
        self.compute = compute or Compute.resolve()
        self._store: Store | None = None

    def __repr__(self) -> str:
        where = self.url or str(self.home)
        return f"Space({where!r})"

    # -- the store -------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The open store (opened on first use)."""
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def _open_store(self, shards: int | None = None, replicas: int | None = None) -> Store:
        from ..store import ServerOptions, open_store

        if self.url:
            options = ServerOptions(
                api_key=self.api_key, prefer_grpc=self.grpc, shards=shards, replicas=replicas
            )
            return open_store(url=self.url, options=options)
        return open_store(home=self.home / "qdrant", owner=self.owner)

    def close(self) -> None:
        """Release the store (files, locks, connections)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Space:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- collections -------------------------------------------------------------------------

    def collections(self) -> list[CollectionSummary]:
        """Every collection with its points, model, aliases and state; one that is busy or
        broken is listed as such instead of failing the whole list."""
        store = self.store
        aliases = store.list_aliases()
        return [CollectionSummary.from_info(info, aliases) for info in store.list_infos()]

    def aliases(self) -> dict[str, str]:
        """Every alias and the collection it points to."""
        return self.store.list_aliases()

    def collection(self, name: str, model: str | Path | None = None) -> Collection:
        """An existing collection (or alias), searched with the model that embedded it (or
        `model`, checked to be that same model). Raises NotFound (a JointspaceError) if there
        is none."""
        from .collection import Collection

        if not self.store.has_collection(name):
            raise NotFound(
                f"No collection '{name}' in {self.url or self.home / 'qdrant'}; "
                "`jointspace collections list` shows what exists."
            )
        return Collection(self, name, model)

    def drop(self, name: str) -> None:
        """Delete a collection and its points."""
        self.store.drop_collection(name)

    def build_index(self, name: str, on_progress: ProgressCallback | None = None) -> IndexOutcome:
        """Build (or rebuild) the HNSW search index of a collection now (ingest does it by
        itself past 50,000 units); searches use it afterwards."""
        from ..ingest.indexing import build_index

        return build_index(self.store, self.store.resolve(name), on_progress)

    def prune(self, alias: str, keep: int = 0) -> list[str]:
        """Drop the old versions (ALIAS_vN) an alias no longer points at, keeping the `keep`
        newest; returns the dropped names."""
        from ..store.versions import prune

        return prune(self.store, alias, keep)

    # -- ingest --------------------------------------------------------------------------------

    def ingest(
        self,
        sources: str | Path | Sequence[str | Path],
        collection: str,
        model: str | Path | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        shards: int | None = None,
        replicas: int | None = None,
        **options: Any,
    ) -> IngestReport:
        """Embed the sources' items with the gated encoder of `model` (default: the one that
        embedded the collection) and upsert them into `collection`, created if needed.

        `options`: the reader's (format, image_column, text_column, label_column, images_dir,
        captions, karpathy_split, image_encoding) and the run's (split, shard, limit, refresh,
        swap, batch_size, workers, download_workers, download_timeout, errors_file). `shards`
        and `replicas` shape a new collection on a server."""
        from ..ingest.job import IngestOptions, ingest_sources

        source = SourceOptions(**{k: v for k, v in options.items() if k in _SOURCE_OPTIONS})
        run = {k: v for k, v in options.items() if k not in _SOURCE_OPTIONS}
        ingest_options = IngestOptions(source=source, **run)
        paths = [sources] if isinstance(sources, (str, Path)) else list(sources)
        run_ingest = functools.partial(
            ingest_sources,
            home=self.home,
            sources=paths,
            collection=collection,
            model=model,
            options=ingest_options,
            on_progress=on_progress,
            compute=self.compute,
        )
        if self.url and (shards or replicas):
            with self._open_store(shards=shards, replicas=replicas) as store:
                return run_ingest(store)
        return run_ingest(self.store)

    # -- sharing with a server -----------------------------------------------------------------

    def publish(
        self,
        collection: str,
        to: str,
        api_key: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> CopyReport:
        """Copy an embedded collection (vectors and payload, no re-embedding) to the server at
        `to`; resumable, verified by count."""
        return self._copy(collection, to, api_key, True, on_progress)

    def pull(
        self,
        collection: str,
        source: str,
        api_key: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> CopyReport:
        """Copy a server collection into the embedded store (resumable, verified by count)."""
        return self._copy(collection, source, api_key, False, on_progress)

    def _copy(
        self,
        collection: str,
        url: str,
        api_key: str | None,
        publish: bool,
        on_progress: ProgressCallback | None,
    ) -> CopyReport:
        from ..ingest.points import KEYWORD_FIELDS
        from ..store import ServerOptions, open_store
        from ..store.transfer import copy_collection

        stage = "publish" if publish else "pull"
        # the embedded side is this Space's own store unless this Space talks to a server
        embedded = (
            open_store(home=self.home / "qdrant", owner=self.owner) if self.url else self.store
        )
        server = open_store(url=url, options=ServerOptions(api_key=api_key, prefer_grpc=self.grpc))
        try:
            source, target = (embedded, server) if publish else (server, embedded)
            total = source.count(collection)

            def on_batch(done: int, seen: int) -> None:
                if on_progress:
                    on_progress(Progress(stage, seen, total))

            copied = copy_collection(
                source, collection, target, keyword_fields=KEYWORD_FIELDS, on_batch=on_batch
            )
            points = target.count(collection)
        finally:
            server.close()
            if embedded is not self._store:
                embedded.close()
        return CopyReport(collection, copied, points, stage, url)

    # -- snapshots (servers) -------------------------------------------------------------------

    def create_snapshot(self, collection: str) -> Snapshot:
        """Snapshot a collection on the server node."""
        return self.store.create_snapshot(collection)

    def list_snapshots(self, collection: str) -> list[Snapshot]:
        """A collection's snapshots on the server node."""
        return self.store.list_snapshots(collection)

    def restore_snapshot(self, collection: str, location: str) -> None:
        """Restore a collection from a snapshot name on the node or a URL it can fetch."""
        self.store.restore_snapshot(collection, location)

"""Commands for a shared Qdrant server: publish, pull, snapshots, and raw query vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import JointspaceError
from .common import (
    JsonOpt,
    QuietOpt,
    Settings,
    app,
    handles_errors,
    print_json,
    progress_bar,
    stderr,
    stdout,
)

snapshot_app = typer.Typer(
    help="Back up and restore server collections (snapshots are per node: in a cluster, run "
    "each command against every node's URL).",
    no_args_is_help=True,
)
app.add_typer(snapshot_app, name="snapshot")

CollectionOpt = Annotated[str, typer.Option(help="Collection (or alias) name.")]
RemoteKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--remote-api-key",
        envvar="QDRANT_API_KEY",
        show_default=False,
        help="API key of the remote server.",
    ),
]


def _copy(
    settings: Settings,
    collection: str,
    url: str,
    api_key: str | None,
    publish: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    from ..ingest.points import KEYWORD_FIELDS
    from ..store.server import ServerStore
    from ..store.transfer import copy_collection

    with (
        settings.open_embedded() as embedded,
        ServerStore.connect(url, api_key, prefer_grpc=settings.grpc) as server,
    ):
        source, target = (embedded, server) if publish else (server, embedded)
        total = source.count(collection)
        with progress_bar(quiet) as progress:
            task = progress.add_task("publish" if publish else "pull", total=total, info="")
            copied = copy_collection(
                source,
                collection,
                target,
                keyword_fields=KEYWORD_FIELDS,
                on_batch=lambda done, seen: progress.update(task, completed=seen),
            )
        points = target.count(collection)
    document = {
        "collection": collection,
        "copied": copied,
        "points": points,
        "direction": "publish" if publish else "pull",
        "server": url,
    }
    if as_json:
        print_json(document)
    else:
        stdout.print(
            f"{copied} points copied; '{collection}' now holds {points} points "
            f"({'on the server' if publish else 'in the embedded store'})."
        )


@app.command()
@handles_errors
def publish(
    ctx: typer.Context,
    collection: CollectionOpt,
    to: Annotated[str, typer.Option("--to", help="URL of the Qdrant server to copy to.")],
    remote_api_key: RemoteKeyOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Copy an embedded collection to a Qdrant server: vectors and payload, no re-embedding.
    Resumable (re-run after an interruption), verified by count."""
    _copy(ctx.obj, collection, to, remote_api_key, True, quiet, as_json)


@app.command()
@handles_errors
def pull(
    ctx: typer.Context,
    collection: CollectionOpt,
    source: Annotated[str, typer.Option("--from", help="URL of the Qdrant server.")],
    remote_api_key: RemoteKeyOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Copy a server collection into the embedded store for offline use (resumable)."""
    _copy(ctx.obj, collection, source, remote_api_key, False, quiet, as_json)


def _server(settings: Settings):
    if not settings.url:
        raise JointspaceError(
            "Snapshots are for server collections: set --qdrant-url or QDRANT_URL (the embedded "
            "store is a folder; back up --home instead)."
        )
    return settings.open_store()


@snapshot_app.command("create")
@handles_errors
def snapshot_create(
    ctx: typer.Context, collection: CollectionOpt, as_json: JsonOpt = False
) -> None:
    """Snapshot a collection on the node at --qdrant-url."""
    with _server(ctx.obj) as store:
        snapshot = store.create_snapshot(collection)
    if as_json:
        print_json(vars(snapshot))
    else:
        stdout.print(f"Snapshot {snapshot.name} ({snapshot.size} bytes) of '{collection}'.")


@snapshot_app.command("list")
@handles_errors
def snapshot_list(ctx: typer.Context, collection: CollectionOpt, as_json: JsonOpt = False) -> None:
    """A collection's snapshots on the node at --qdrant-url."""
    with _server(ctx.obj) as store:
        snapshots = store.list_snapshots(collection)
    if as_json:
        print_json({"snapshots": [vars(s) for s in snapshots]})
        return
    table = Table(title=f"snapshots of '{collection}'")
    for column in ("name", "bytes", "created"):
        table.add_column(column)
    for s in snapshots:
        table.add_row(s.name, str(s.size), s.created)
    stdout.print(table)


@snapshot_app.command("restore")
@handles_errors
def snapshot_restore(
    ctx: typer.Context,
    collection: CollectionOpt,
    location: Annotated[
        str, typer.Argument(help="A snapshot name on that node, or a URL the server can fetch.")
    ],
) -> None:
    """Restore a collection from a snapshot (replaces its points)."""
    with _server(ctx.obj) as store:
        store.restore_snapshot(collection, location)
    stderr.print(f"Restored '{collection}' from {location}.")


@app.command()
@handles_errors
def embed(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Option(help="Text (keyword) query.")] = None,
    image: Annotated[Path | None, typer.Option(help="Image file as the query.")] = None,
    collection: Annotated[
        str | None, typer.Option(help="Use the model that embedded this collection.")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Model checkpoint.")] = None,
    target: Annotated[
        str, typer.Option(help="unit | image | text: the named vector to search with this query.")
    ] = "unit",
    as_json: JsonOpt = False,
) -> None:
    """Print a query vector, so other teams can search a collection without our code (plain
    qdrant-client or curl: `using` = the named vector)."""
    from ..query.encoder import QueryEncoder
    from ..query.search import open_query_encoder
    from ..store.base import VECTOR_NAMES

    if target not in VECTOR_NAMES:
        raise JointspaceError(f"Unknown target {target!r}; use one of {', '.join(VECTOR_NAMES)}.")
    settings: Settings = ctx.obj
    if collection:
        with settings.open_store() as store:
            encoder = open_query_encoder(store, collection, model)
    elif model:
        encoder = QueryEncoder.load(model)
    else:
        raise JointspaceError("Pass --collection NAME (its model) or --model MODEL_DIR.")
    vector = encoder.embed(text=text, image=image)
    document = {
        "using": target,
        "vector": [round(float(v), 7) for v in vector],
        "dim": len(vector),
        "model_id": encoder.card.model_id,
    }
    if as_json:
        print_json(document)
    else:
        stdout.print(" ".join(f"{v:.6f}" for v in document["vector"]))

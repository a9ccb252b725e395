"""Commands for a shared Qdrant server: publish, pull and snapshots."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .common import (
    JsonOpt,
    ProgressView,
    QuietOpt,
    app,
    handles_errors,
    print_json,
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
    with ctx.obj.embedded() as space, ProgressView(quiet) as progress:
        report = space.publish(collection, to, remote_api_key, on_progress=progress)
    _render_copy(report.to_dict(), as_json, "on the server")


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
    with ctx.obj.embedded() as space, ProgressView(quiet) as progress:
        report = space.pull(collection, source, remote_api_key, on_progress=progress)
    _render_copy(report.to_dict(), as_json, "in the embedded store")


def _render_copy(document: dict, as_json: bool, where: str) -> None:
    if as_json:
        print_json(document)
        return
    stdout.print(
        f"{document['copied']} points copied; '{document['collection']}' now holds "
        f"{document['points']} points ({where})."
    )


@snapshot_app.command("create")
@handles_errors
def snapshot_create(
    ctx: typer.Context, collection: CollectionOpt, as_json: JsonOpt = False
) -> None:
    """Snapshot a collection on the node at --qdrant-url."""
    with ctx.obj.space() as space:
        snapshot = space.create_snapshot(collection)
    if as_json:
        print_json(vars(snapshot))
    else:
        stdout.print(f"Snapshot {snapshot.name} ({snapshot.size} bytes) of '{collection}'.")


@snapshot_app.command("list")
@handles_errors
def snapshot_list(ctx: typer.Context, collection: CollectionOpt, as_json: JsonOpt = False) -> None:
    """A collection's snapshots on the node at --qdrant-url."""
    with ctx.obj.space() as space:
        snapshots = space.list_snapshots(collection)
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
    with ctx.obj.space() as space:
        space.restore_snapshot(collection, location)
    stderr.print(f"Restored '{collection}' from {location}.")

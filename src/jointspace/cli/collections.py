"""`jointspace collections`: list, inspect and drop collections."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .common import (
    JsonOpt,
    Settings,
    collections_app,
    handles_errors,
    print_json,
    stderr,
    stdout,
)


@collections_app.command("list")
@handles_errors
def collections_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Collections with their point counts and models."""
    settings: Settings = ctx.obj
    with settings.open_store() as store:
        infos = [store.info(name) for name in store.list_collections()]
    if as_json:
        print_json({"collections": [_info_document(i) for i in infos]})
        return
    table = Table(title="collections")
    for column in ("name", "points", "model", "backbone"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.name,
            str(info.points),
            str(info.metadata.get("model_id", "")),
            str(info.metadata.get("backbone", "")),
        )
    stdout.print(table)


def _info_document(info) -> dict:
    return {
        "name": info.name,
        "points": info.points,
        "vectors": dict(info.vectors),
        "metadata": dict(info.metadata),
    }


@collections_app.command("info")
@handles_errors
def collections_info(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Collection name.")],
    as_json: JsonOpt = False,
) -> None:
    """A collection's points, vectors and the model that embedded it."""
    settings: Settings = ctx.obj
    with settings.open_store() as store:
        document = _info_document(store.info(name))
    if as_json:
        print_json(document)
        return
    table = Table(title=f"collection '{name}'", show_header=False)
    table.add_row("points", str(document["points"]))
    table.add_row("vectors", ", ".join(f"{k} ({v}-d)" for k, v in document["vectors"].items()))
    for key, value in document["metadata"].items():
        table.add_row(key, str(value))
    stdout.print(table)


@collections_app.command("drop")
@handles_errors
def collections_drop(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Collection name.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a collection and its points."""
    settings: Settings = ctx.obj
    if not yes and not typer.confirm(f"Delete collection '{name}' and all its points?"):
        raise typer.Exit(1)
    with settings.open_store() as store:
        store.drop_collection(name)
    stderr.print(f"Dropped collection '{name}'.")

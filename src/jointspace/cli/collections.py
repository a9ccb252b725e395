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
    """Collections with their aliases, point counts and models (versions of an alias are
    named ALIAS_vN; the alias points at the current one)."""
    settings: Settings = ctx.obj
    with settings.open_store() as store:
        infos = [store.info(name) for name in store.list_collections()]
        aliases = store.list_aliases()
    aliases_of = {
        info.name: sorted(a for a, c in aliases.items() if c == info.name) for info in infos
    }
    if as_json:
        print_json(
            {
                "collections": [
                    {**_info_document(i), "aliases": aliases_of[i.name]} for i in infos
                ],
                "aliases": aliases,
            }
        )
        return
    table = Table(title="collections")
    for column in ("name", "aliases", "points", "model", "backbone"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.name,
            ", ".join(aliases_of[info.name]),
            str(info.points),
            str(info.metadata.get("model_id", "")),
            str(info.metadata.get("backbone", "")),
        )
    stdout.print(table)


@collections_app.command("prune")
@handles_errors
def collections_prune(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="The alias whose old versions to drop.")],
    keep: Annotated[int, typer.Option(help="Old versions to keep besides the current.")] = 0,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Drop the old versions (ALIAS_vN) an alias no longer points at."""
    from ..store.versions import prune

    settings: Settings = ctx.obj
    if not yes and not typer.confirm(f"Drop the old versions of '{alias}'?"):
        raise typer.Exit(1)
    with settings.open_store() as store:
        dropped = prune(store, alias, keep)
    stderr.print(f"Dropped {len(dropped)} old versions: {', '.join(dropped) or 'none'}.")


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

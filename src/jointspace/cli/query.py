"""`jointspace query`: search a collection with a text, an image, or both."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import JointspaceError
from .common import (
    JsonOpt,
    Settings,
    app,
    handles_errors,
    print_json,
    stdout,
)


def _parse_where(where: list[str]) -> dict[str, str]:
    parsed = {}
    for condition in where:
        key, sep, value = condition.partition("=")
        if not sep or not key:
            raise JointspaceError(f"--where {condition!r} is not KEY=VALUE (e.g. labels=animals).")
        parsed[key] = value
    return parsed


@app.command()
@handles_errors
def query(
    ctx: typer.Context,
    collection: Annotated[str, typer.Option(help="Collection to search.")],
    text: Annotated[str | None, typer.Option(help="Text (keyword) query.")] = None,
    image: Annotated[Path | None, typer.Option(help="Image file as the query.")] = None,
    target: Annotated[
        str, typer.Option(help="unit (image+text units) | image | text: which vectors to search.")
    ] = "unit",
    k: Annotated[int, typer.Option("-k", "--top", help="Number of results.")] = 10,
    where: Annotated[
        list[str] | None,
        typer.Option(help="Payload filter KEY=VALUE (repeatable), e.g. labels=animals."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Model checkpoint; default: the one that embedded the collection."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection with --text, --image, or both (a text+image query is embedded as a
    unit through the gate)."""
    from ..query.search import open_query_encoder, search

    settings: Settings = ctx.obj
    conditions = _parse_where(where or [])
    with settings.open_store() as store:
        if not store.has_collection(collection):
            raise JointspaceError(
                f"No collection '{collection}'; `jointspace collections list` shows what exists."
            )
        encoder = open_query_encoder(store, collection, model)
        hits = search(store, collection, encoder, text, image, target, k, conditions)
    results = [
        {
            "id": h.id,
            "score": round(h.score, 6),
            "text": h.payload.get("text"),
            "image": h.payload.get("image"),
            "payload": dict(h.payload),
        }
        for h in hits
    ]
    if as_json:
        print_json({"results": results})
        return
    table = Table(title=f"{target} results in '{collection}'")
    # the item key (e.g. animals/birds/penguin.png) says more in a narrow terminal than the
    # image's absolute path, which --json gives in full
    for column in ("#", "score", "text", "item"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, result in enumerate(results, 1):
        item = result["payload"].get("key") or result["image"] or ""
        table.add_row(str(rank), f"{result['score']:.3f}", result["text"] or "", item)
    stdout.print(table)

"""`jointspace query`: search a collection with a text, an image, or both."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import jointspace as js

from .common import JsonOpt, ModelOpt, app, handles_errors, print_json, printable, stdout

TargetOpt = Annotated[
    str, typer.Option(help="unit (image+text units) | image | text: which vectors to search.")
]
WhereOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Payload filter (repeatable; all must hold): KEY=VALUE, KEY=A,B (any of), "
        "KEY>=N, KEY<N ... e.g. --where labels=animals --where width>=200."
    ),
]


@app.command()
@handles_errors
def query(
    ctx: typer.Context,
    collection: Annotated[str, typer.Option(help="Collection to search.")],
    text: Annotated[str | None, typer.Option(help="Text (keyword) query.")] = None,
    image: Annotated[
        str | None, typer.Option(help="Image file (or http(s) URL) as the query.")
    ] = None,
    like: Annotated[
        str | None, typer.Option(help="A stored point's id: more like it (no re-embedding).")
    ] = None,
    target: TargetOpt = "unit",
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="Number of results.")] = 10,
    where: WhereOpt = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection with --text, --image, or both (a text+image query is embedded as a
    unit through the gate), or with --like ID for the points nearest to a stored one."""
    conditions = js.parse_where(where or [])
    with ctx.obj.space() as space:
        hits = space.collection(collection, model).search(
            text=text, image=image, id=like, target=target, k=k, where=conditions
        )
    if as_json:
        print_json({"results": [hit.to_dict() for hit in hits]})
        return
    table = Table(title=f"{target} results in '{collection}'")
    # the item key (e.g. animals/birds/penguin.png) says more in a narrow terminal than the
    # image's absolute path, which --json gives in full
    for column in ("#", "score", "text", "item"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, hit in enumerate(hits, 1):
        item = hit.payload.get("key") or hit.image
        table.add_row(str(rank), f"{hit.score:.3f}", printable(hit.text), printable(item))
    stdout.print(table)


@app.command()
@handles_errors
def embed(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Option(help="Text (keyword) query.")] = None,
    image: Annotated[
        str | None, typer.Option(help="Image file (or http(s) URL) as the query.")
    ] = None,
    collection: Annotated[
        str | None, typer.Option(help="Use the model that embedded this collection.")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Model checkpoint.")] = None,
    target: TargetOpt = "unit",
    as_json: JsonOpt = False,
) -> None:
    """Print a query vector, so other teams can search a collection without our code (plain
    qdrant-client or curl: `using` = the named vector)."""
    if collection:
        with ctx.obj.space() as space:
            coll = space.collection(collection, model)
            vector, model_id = (
                coll.embed(text=text, image=image, target=target),
                coll.model.model_id,
            )
    elif model:
        loaded = js.load_model(model)
        vector, model_id = loaded.embed(text=text, image=image, target=target), loaded.model_id
    else:
        raise js.JointspaceError("Pass --collection NAME (its model) or --model MODEL_DIR.")
    document = {
        "using": target,
        "vector": [round(float(v), 7) for v in vector],
        "dim": len(vector),
        "model_id": model_id,
    }
    if as_json:
        print_json(document)
    else:
        stdout.print(" ".join(f"{v:.6f}" for v in document["vector"]))

"""`jointspace query` and `jointspace embed`: search a collection (or make a query vector) with a
text, an image, or both; here, or through a running `jointspace serve` (--server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

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
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="JOINTSPACE_SERVER",
        help="A running `jointspace serve` (http://HOST:PORT) to ask instead of loading the "
        "model here: answers in a fraction of a second.",
        show_default=False,
    ),
]
ServerKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--server-key",
        envvar="JOINTSPACE_API_KEY",
        help="The service's API key, when it has one.",
        show_default=False,
    ),
]


def _client(server: str, key: str | None, model: Path | None) -> js.ServiceClient:
    if model is not None:
        raise js.JointspaceError(
            "--model cannot be used with --server: the service embeds with the model of the "
            "collection it searches."
        )
    return js.ServiceClient(server, key)


@contextmanager
def _local_query(text_only: bool = False) -> Iterator[None]:
    """For a text query answered here, OMP_NUM_THREADS = 1 (unless the user set it), put back
    afterwards: a handful of tokens embeds faster on one thread than on two that wait on each
    other whenever another process has a core (0.02 s against up to 0.8 s, measured on a busy
    2-core machine). It counts when torch is first imported, which happens after this."""
    if not text_only or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


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
    server: ServerOpt = None,
    server_key: ServerKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection with --text, --image, or both (a text+image query is embedded as a
    unit through the gate), or with --like ID for the points nearest to a stored one. With
    --server (or JOINTSPACE_SERVER), a running `jointspace serve` answers."""
    conditions = js.parse_where(where or [])
    if server:
        answer = _client(server, server_key, model).search(
            collection, text=text, image=image, id=like, target=target, k=k, where=conditions
        )
        hits, model_id, via = answer.hits, answer.model_id, f" (via {answer.server})"
    else:
        with _local_query(text_only=image is None), ctx.obj.space() as space:
            coll = space.collection(collection, model)
            hits = coll.search(
                text=text, image=image, id=like, target=target, k=k, where=conditions
            )
            # a search by id loads no model: the collection's card names it
            model_id = coll.info().model_id if like is not None else coll.model.model_id
        via = ""
    if as_json:
        print_json(
            {
                "query": {"text": text, "image": image, "id": like, "where": conditions or None},
                "target": target,
                "collection": collection,
                "model_id": model_id,
                "k": k,
                "results": [hit.to_dict() for hit in hits],
            }
        )
        return
    table = Table(title=f"{target} results in '{collection}'{via}")
    # a readable reference (animals/birds/penguin.png, captions.csv row 12) says more in a
    # narrow terminal than the image's absolute path or a content hash; --json gives both
    for column in ("#", "score", "text", "item"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, hit in enumerate(hits, 1):
        item = hit.ref or hit.image
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
    server: ServerOpt = None,
    server_key: ServerKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a query vector, so other teams can search a collection without our code (plain
    qdrant-client or curl: `using` = the named vector). With --server (or JOINTSPACE_SERVER),
    a running `jointspace serve` makes it."""
    vector: list[float]
    if server:
        if not collection:
            raise js.JointspaceError(
                "With --server, pass --collection NAME: the service embeds with the model of "
                "that collection."
            )
        answer = _client(server, server_key, model).embed(
            collection, text=text, image=image, target=target
        )
        vector, model_id, target = answer.vector, answer.model_id, answer.using
    elif collection:
        with _local_query(text_only=image is None), ctx.obj.space() as space:
            coll = space.collection(collection, model)
            vector, model_id = (
                coll.embed(text=text, image=image, target=target),
                coll.model.model_id,
            )
    elif model:
        with _local_query(text_only=image is None):
            loaded = js.load_model(model, home=ctx.obj.home_dir(), **ctx.obj.compute)
            vector = loaded.embed(text=text, image=image, target=target)
            model_id = loaded.model_id
    else:
        raise js.JointspaceError("Pass --collection NAME (its model) or --model MODEL_DIR.")
    document: dict[str, Any] = {
        "using": target,
        "vector": [round(float(v), 7) for v in vector],
        "dim": len(vector),
        "model_id": model_id,
    }
    if as_json:
        print_json(document)
    else:
        stdout.print(" ".join(f"{v:.6f}" for v in document["vector"]))

"""`jointspace collections`: list, inspect, index, prune and drop collections."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .common import (
    JsonOpt,
    ProgressView,
    QuietOpt,
    collections_app,
    handles_errors,
    print_json,
    stderr,
    stdout,
)

YesOpt = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]


@collections_app.command("list")
@handles_errors
def collections_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Collections with their aliases, point counts, models and state (a collection another
    process is writing is listed as busy; versions of an alias are named ALIAS_vN)."""
    with ctx.obj.space() as space:
        summaries, aliases = space.collections(), space.aliases()
    if as_json:
        print_json({"collections": [s.to_dict() for s in summaries], "aliases": aliases})
        return
    table = Table(title="collections")
    for column in ("name", "aliases", "points", "model", "backbone", "state"):
        table.add_column(column)
    for s in summaries:
        state = s.state if s.state == "ready" else f"{s.state}: {s.detail}"
        points = "?" if s.points is None else str(s.points)
        backbone = str(s.metadata.get("backbone", ""))
        table.add_row(s.name, ", ".join(s.aliases), points, s.model_id or "", backbone, state)
    stdout.print(table)
    if not summaries:
        stderr.print(f"No collections in {space.url or space.home}.")


@collections_app.command("info")
@handles_errors
def collections_info(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Collection name.")],
    as_json: JsonOpt = False,
) -> None:
    """A collection's points, vectors, filterable fields and the model that embedded it."""
    with ctx.obj.space() as space:
        summary = space.collection(name).info()
    if as_json:
        print_json(summary.to_dict())
        return
    table = Table(title=f"collection '{summary.name}'", show_header=False)
    table.add_row("points", str(summary.points))
    table.add_row("vectors", ", ".join(f"{k} ({v}-d)" for k, v in summary.vectors.items()))
    table.add_row("aliases", ", ".join(summary.aliases))
    table.add_row("filterable", ", ".join(summary.filterable))
    table.add_row("search", "HNSW index" if summary.indexed else "exact (no index)")
    table.add_row("quantization", summary.quantize or "none")
    for key, value in summary.metadata.items():
        table.add_row(key, str(value))
    stdout.print(table)


@collections_app.command("index")
@handles_errors
def collections_index(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Collection name.")],
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build (or rebuild) a collection's HNSW search index now. Ingest builds it by itself once
    a collection reaches 50,000 units (`ingest --index auto`)."""
    with ctx.obj.space() as space, ProgressView(quiet) as progress:
        outcome = space.build_index(name, on_progress=progress)
    if as_json:
        print_json(vars(outcome))
    else:
        stderr.print(f"Indexed {outcome.points:,} units of '{name}' in {outcome.seconds:.1f} s.")


@collections_app.command("prune")
@handles_errors
def collections_prune(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="The alias whose old versions to drop.")],
    keep: Annotated[int, typer.Option(min=0, help="Old versions to keep besides the current.")] = 0,
    yes: YesOpt = False,
) -> None:
    """Drop the old versions (ALIAS_vN) an alias no longer points at."""
    if not yes and not typer.confirm(f"Drop the old versions of '{alias}'?"):
        raise typer.Exit(1)
    with ctx.obj.space() as space:
        dropped = space.prune(alias, keep)
    stderr.print(f"Dropped {len(dropped)} old versions: {', '.join(dropped) or 'none'}.")


@collections_app.command("drop")
@handles_errors
def collections_drop(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Collection name.")],
    yes: YesOpt = False,
) -> None:
    """Delete a collection and its points."""
    if not yes and not typer.confirm(f"Delete collection '{name}' and all its points?"):
        raise typer.Exit(1)
    with ctx.obj.space() as space:
        space.drop(name)
    stderr.print(f"Dropped collection '{name}'.")

"""What every command shares: the app, consoles, global options, error handling, helpers.

The `jointspace` command line is the only place that parses arguments and prints.

Results go to stdout (a table for people, one JSON document with --json); progress, logs and
errors go to stderr. Exit codes: 0 success, 1 a bad run (one sentence says what to do), 2 usage.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from ..corpus.item import Item, Skipped
from ..corpus.split import split_of
from ..errors import JointspaceError
from ..store.base import Store

app = typer.Typer(
    help="Search image-text collections: train a gated joint embedding of text, images and "
    "image+text units, ingest corpora into Qdrant, and query them with text, an image, or both.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    add_completion=False,
)
collections_app = typer.Typer(help="List, inspect and drop collections.", no_args_is_help=True)
app.add_typer(collections_app, name="collections")

# stdout shows user data (captions, paths), never markup: "[abc]" in a caption stays as it is.
stdout = Console(soft_wrap=True, markup=False)
stderr = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

SourcesArg = Annotated[
    list[Path],
    typer.Argument(
        help="Corpus: a folder of images with same-named .txt captions, "
        "or a CSV/TSV/JSONL/Parquet manifest. Several may be given."
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option("--format", help="auto|folder|csv|tsv|jsonl|parquet|coco|karpathy|webdataset"),
]
ImageColumnOpt = Annotated[str | None, typer.Option(help="Manifest column of image paths/URLs.")]
TextColumnOpt = Annotated[str | None, typer.Option(help="Manifest column of captions.")]
LabelColumnOpt = Annotated[str | None, typer.Option("--label", help="Manifest column of labels.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
WorkersOpt = Annotated[int, typer.Option(help="Image decoding worker processes.")]


class Settings:
    """Global options: where the embedded store lives, or which server to use."""

    def __init__(self, home: Path, url: str | None, api_key: str | None, grpc: bool) -> None:
        self.home, self.url, self.api_key, self.grpc = home, url, api_key, grpc

    def open_store(self, **server_options: Any) -> Store:
        """The server at --qdrant-url, else the embedded store under --home."""
        from ..store import open_store

        return open_store(
            home=self.home / "qdrant",
            url=self.url,
            api_key=self.api_key,
            prefer_grpc=self.grpc,
            **server_options,
        )

    def open_embedded(self) -> Store:
        """The embedded store under --home, whatever --qdrant-url says."""
        from ..store import open_store

        return open_store(home=self.home / "qdrant")


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[
        Path,
        typer.Option(
            envvar="JOINTSPACE_HOME", help="Folder of the embedded store, feature cache and logs."
        ),
    ] = Path("jointspace-data"),
    qdrant_url: Annotated[
        str | None,
        typer.Option(
            envvar="QDRANT_URL",
            help="Use a Qdrant server at this URL instead of the embedded store.",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="QDRANT_API_KEY", help="API key for the Qdrant server.", show_default=False
        ),
    ] = None,
    grpc: Annotated[
        bool,
        typer.Option(
            envvar="QDRANT_GRPC",
            help="Talk to the server over gRPC (port 6334) when it answers there, else REST.",
        ),
    ] = True,
) -> None:
    """Global options (also read from environment variables)."""
    ctx.obj = Settings(home, qdrant_url, api_key, grpc)


def handles_errors(command: F) -> F:
    """A bad run prints one sentence to stderr and exits 1; Ctrl-C says what was kept."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except JointspaceError as error:
            # escaped: a path like "data[v2]" is text, not markup; soft_wrap: one line, unwrapped
            stderr.print(f"[red]Error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            stderr.print(
                "Interrupted: what was written is kept; re-run the same command to finish."
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def read_sources(
    sources: list[Path],
    format: str,
    image_column: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    **options: Any,
) -> Iterator[Item | Skipped]:
    """The records of every source, one after the other. Options left None are not given to
    the readers; an option a format does not take is a bad run."""
    from ..corpus.readers import read_corpus

    options.update(image_column=image_column, text_column=text_column, label_column=label_column)
    # opened eagerly so a missing source or bad format fails before any work starts
    streams = [read_corpus(source, format, **options) for source in sources]
    return itertools.chain.from_iterable(streams)


def in_shard(records: Iterable[Item | Skipped], shard: str | None) -> Iterator[Item | Skipped]:
    """The slice `I/N` of the records (by a hash of each item's point id): N machines given
    0/N … N-1/N ingest disjoint parts that together are the whole corpus."""
    if shard is None:
        yield from records
        return
    index, _, count = shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise JointspaceError(f"--shard {shard!r} is not I/N with 0 <= I < N (e.g. 0/4).")
    for record in records:
        key = record.point_id if isinstance(record, Item) else f"{record.source}\x00{record.key}"
        if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % int(count) == int(index):
            yield record


def only_split(records: Iterable[Item | Skipped], split: str) -> Iterator[Item | Skipped]:
    if split == "all":
        yield from records
        return
    for record in records:
        if isinstance(record, Item) and split_of(record.split_key) == split:
            yield record


def progress_bar(quiet: bool) -> Progress:
    """Progress bars on stderr; off with --quiet or when stderr is not a terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=quiet or not stderr.is_terminal,
        transient=False,
    )


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def metrics_table(title: str, tasks: dict[str, dict[str, float]]) -> Table:
    columns = ["R@1", "R@5", "R@10", "MRR", "nDCG@10", "MAP"]
    present = [c for c in columns if any(c in m for m in tasks.values())]
    table = Table(title=title)
    table.add_column("task")
    for column in present:
        table.add_column(column, justify="right")
    for task, metrics in tasks.items():
        table.add_row(task, *(f"{metrics[c]:.3f}" if c in metrics else "—" for c in present))
    return table


def count_hint(sources: list[Path]) -> int | None:
    """Number of items when it is cheap to know (a folder: count image files)."""
    from ..corpus.folder import IMAGE_SUFFIXES

    total = 0
    for source in sources:
        if not source.is_dir():
            return None
        for _, _, files in os.walk(source):
            total += sum(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files)
    return total

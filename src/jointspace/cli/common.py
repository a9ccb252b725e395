"""What every command shares: the app, consoles, global options, error handling, rendering.

The `jointspace` command line is the only place that parses arguments and prints. Each command
parses its options, calls one function of the public API (`jointspace`), and renders the result.

Results go to stdout (a table for people, one JSON document with --json); progress, logs and
errors go to stderr. Exit codes: 0 success, 1 a bad run (one sentence says what to do), 2 usage.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

import jointspace as js

F = TypeVar("F", bound=Callable[..., Any])

# Global options, accepted before or after the command (`jointspace collections list --home X`).
_GLOBAL_VALUED = ("--home", "--qdrant-url", "--api-key", "--device", "--precision", "--engine")
_GLOBAL_FLAGS = ("--grpc", "--no-grpc")
# Options a command defines itself under a global option's name, left to it when they come after
# it: `serve --api-key` is the key the service's clients send, not the Qdrant server's.
_COMMAND_OWN = {"serve": ("--api-key",)}


class GlobalOptionsGroup(TyperGroup):
    """Moves the global options found after a command name to the front, where the top-level
    group parses them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        front: list[str] = []
        rest: list[str] = []
        command: str | None = None
        index = 0
        while index < len(args):
            arg = args[index]
            if arg == "--":
                rest.extend(args[index:])
                break
            name = arg.split("=", 1)[0]
            if name in _GLOBAL_VALUED and name not in _COMMAND_OWN.get(command or "", ()):
                takes_next = "=" not in arg and index + 1 < len(args)
                # before the command it is in place already, its value included
                (front if command else rest).extend(args[index : index + 1 + takes_next])
                index += 1 + takes_next
                continue
            if command and arg in _GLOBAL_FLAGS:
                front.append(arg)
            else:
                if command is None and not arg.startswith("-"):
                    command = arg
                rest.append(arg)
            index += 1
        return super().parse_args(ctx, front + rest)


app = typer.Typer(
    cls=GlobalOptionsGroup,
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

SourcesArg = Annotated[
    list[Path],
    typer.Argument(
        help="Corpus: a folder of images with same-named .txt captions, a CSV/TSV/JSONL/Parquet "
        "manifest, a COCO or Karpathy captions JSON, or WebDataset shards. Several may be given."
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option("--format", help="auto|folder|csv|tsv|jsonl|parquet|coco|karpathy|webdataset"),
]
ImageColumnOpt = Annotated[str | None, typer.Option(help="Manifest column of image paths/URLs.")]
TextColumnOpt = Annotated[str | None, typer.Option(help="Manifest column of captions.")]
LabelColumnOpt = Annotated[
    str | None, typer.Option("--label-column", "--label", help="Manifest column of labels.")
]
ImagesDirOpt = Annotated[Path | None, typer.Option(help="COCO/Karpathy: the folder of images.")]
CaptionsOpt = Annotated[
    str | None, typer.Option(help="COCO/Karpathy: first | join | each (one unit each).")
]
KarpathySplitOpt = Annotated[
    str | None, typer.Option(help="Karpathy: train | val | test | restval | all.")
]
ImageEncodingOpt = Annotated[
    str | None, typer.Option(help="Manifests: base64 when the image column holds base64.")
]
TextOnlyOpt = Annotated[
    bool, typer.Option("--text-only", help="Manifests: read the texts alone (no image column).")
]
ImageOnlyOpt = Annotated[
    bool, typer.Option("--image-only", help="Manifests: read the images alone (no text column).")
]
CaptionOpt = Annotated[
    str | None,
    typer.Option(
        help="Folder SVGs without a .txt are captioned from their own metadata: "
        "title | title+description | title+keywords."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
WorkersOpt = Annotated[int, typer.Option(min=0, help="Image decoding worker processes.")]
ModelOpt = Annotated[
    Path | None,
    typer.Option(help="Model checkpoint; default: the one that embedded the collection."),
]


def source_options(ctx: typer.Context) -> js.SourceOptions:
    """The reader options a command was given (its parameters named like SourceOptions'
    fields), as the API takes them."""
    names = js.SourceOptions.__dataclass_fields__
    return js.SourceOptions(**{k: v for k, v in ctx.params.items() if k in names})


def _version(value: bool) -> None:
    if value:
        stdout.print(f"jointspace {js.__version__}")
        raise typer.Exit()


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
    device: Annotated[
        str,
        typer.Option(
            envvar="JOINTSPACE_DEVICE",
            help="Where the backbone runs: auto (a CUDA GPU when torch sees one), cpu, cuda, "
            "cuda:N.",
        ),
    ] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            envvar="JOINTSPACE_PRECISION",
            help="The backbone's precision: auto (bf16 where the CPU or GPU has it natively, "
            "else fp32 on a CPU, fp16 on a GPU), fp32 (the reference), bf16, fp16 (GPU).",
        ),
    ] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            envvar="JOINTSPACE_ENGINE",
            help="What runs the image tower: auto (OpenVINO on a CPU, 1.6-1.8x torch's images/s "
            "here; torch on a GPU), torch (the reference), openvino. Texts always run on torch.",
        ),
    ] = "auto",
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Global options (also read from environment variables; accepted after the command too)."""
    ctx.obj = Settings(home, qdrant_url, api_key, grpc, device, precision, engine)


class Settings:
    """The global options; `space()` connects with them (the home is checked then)."""

    def __init__(
        self,
        home: Path,
        url: str | None,
        api_key: str | None,
        grpc: bool,
        device: str = "auto",
        precision: str = "auto",
        engine: str = "auto",
    ) -> None:
        self.home, self.url, self.api_key, self.grpc = home, url, api_key, grpc
        self.device, self.precision, self.engine = device, precision, engine

    @property
    def compute(self) -> dict[str, str]:
        """The device, precision and engine, as the API's functions take them."""
        return {"device": self.device, "precision": self.precision, "engine": self.engine}

    def space(self) -> js.Space:
        return js.connect(self.home, self.url, self.api_key, grpc=self.grpc, **self.compute)

    def home_dir(self) -> Path:
        """The home folder, checked usable (for commands that need no store)."""
        return self.embedded().home

    def embedded(self) -> js.Space:
        """The embedded store under --home, whatever --qdrant-url says."""
        return js.connect(self.home, grpc=self.grpc)


def handles_errors(command: F) -> F:
    """A bad run prints one sentence to stderr and exits 1; Ctrl-C says what was kept; a full
    disk is a bad run too."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _log_to_stderr()
        try:
            return command(*args, **kwargs)
        except js.JointspaceError as error:
            _fail(str(error))
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            _fail(
                f"No space left on the device ({error.filename or 'writing'}); free some space "
                "and re-run: what was written is kept."
            )
        except KeyboardInterrupt:
            stderr.print(
                "Interrupted: what was written is kept; re-run the same command to finish."
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _fail(message: str) -> None:
    # escaped: a path like "data[v2]" is text, not markup; soft_wrap: one line, unwrapped
    stderr.print(f"[red]Error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1) from None


def _log_to_stderr() -> None:
    """Library warnings (a rebuilt cache, ...) as one line each on stderr."""
    logger = logging.getLogger("jointspace")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("Warning: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


class ProgressView:
    """Shows the API's Progress reports: a bar per stage on a terminal; without one (a log
    file, CI), a line per stage every 10 s, a line per epoch, and each stage's last state."""

    LOG_EVERY = 10.0

    def __init__(self, quiet: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.quiet = quiet
        self.lines = not quiet and not stderr.is_terminal
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=stderr,
            disable=quiet or not stderr.is_terminal,
        )
        self.tasks: dict[str, Any] = {}
        self.last: dict[str, js.Progress] = {}
        self.logged: dict[str, float] = {}

    def __enter__(self) -> ProgressView:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.__exit__(*exc)
        for stage, report in self.last.items():
            if self.logged.get(stage) != -1.0:
                self._line(report)

    def __call__(self, report: js.Progress) -> None:
        if report.stage not in self.tasks:
            self.tasks[report.stage] = self.bars.add_task(report.stage, total=report.total, info="")
        self.bars.update(
            self.tasks[report.stage], completed=report.done, total=report.total, info=report.info
        )
        self.last[report.stage] = report
        now = time.monotonic()
        per_event = report.stage in ("epochs", "variants") or report.info == "loading model"
        if per_event or now - self.logged.get(report.stage, 0.0) > self.LOG_EVERY:
            self._line(report)
            self.logged[report.stage] = -1.0 if report.info == "loading model" else now

    def _line(self, report: js.Progress) -> None:
        if not self.lines:
            return
        total = f"/{report.total}" if report.total else ""
        info = f", {report.info}" if report.info else ""
        stderr.print(f"{report.stage}: {report.done}{total}{info}", highlight=False)
        self.logged[report.stage] = time.monotonic()


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


def printable(text: str | None, limit: int = 120) -> str:
    """User text for a table cell: control and bidi-override characters shown escaped, cut to
    `limit` characters."""
    if not text:
        return ""
    shown = "".join(
        ch if ch.isprintable() and ch not in _BIDI else ch.encode("unicode_escape").decode()
        for ch in text
    )
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")

"""`jointspace serve`: the HTTP service and web page, with the models kept loaded."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import app, handles_errors, stdout


@app.command()
@handles_errors
def serve(
    ctx: typer.Context,
    collection: Annotated[
        list[str] | None,
        typer.Option(help="A collection to serve (repeatable); default: every ready one."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="JOINTSPACE_API_KEY",
            show_default=False,
            help="A key every request must carry (X-API-Key header, Bearer, or ?api_key=). The "
            "Qdrant server's key is QDRANT_API_KEY (or --api-key before `serve`).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(min=1, help="Server processes; more than 1 needs a Qdrant server."),
    ] = 1,
    model_threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            show_default=False,
            help="Threads running model calls, each with its share of the cores; default: 2 "
            "per process where it has 2 cores or more, else 1.",
        ),
    ] = None,
    queue_size: Annotated[
        int,
        typer.Option(min=0, help="Model calls that may wait for the model; beyond: 503."),
    ] = 32,
) -> None:
    """Serve search over HTTP (JSON API, OpenAPI at /docs) and a web page at /, with each
    collection's model loaded once. On the embedded store the service holds its collections:
    stop it to ingest into them, or use a Qdrant server, where ingest and serve run side by
    side."""
    from ..serve import ServiceSettings, run_service
    from ..serve.settings import default_model_threads

    settings = ServiceSettings(
        home=ctx.obj.home,
        qdrant_url=ctx.obj.url,
        qdrant_api_key=ctx.obj.api_key,
        grpc=ctx.obj.grpc,
        collections=tuple(collection or ()),
        api_key=api_key,
        host=host,
        port=port,
        processes=workers,
        model_threads=model_threads or default_model_threads(workers),
        queue_size=queue_size,
        device=ctx.obj.device,
        precision=ctx.obj.precision,
        engine=ctx.obj.engine,
    )

    def ready(settings: ServiceSettings, names: list[str]) -> None:
        key = " (API key required)" if settings.api_key else ""
        stdout.print(f"Serving {', '.join(names)} at {settings.base_url}/{key}; API docs at /docs.")
        stdout.print("Press Ctrl-C to stop.")

    run_service(settings, on_ready=ready)
    stdout.print("Stopped.")

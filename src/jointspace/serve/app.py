"""The app factory (`create_app`) and the server (`run_service`, what `jointspace serve` runs).

Layout as FastAPI's "bigger applications": routers per resource (routes/), pydantic models as
the contract (models.py, /docs), a dependency for the key (auth.py), errors mapped to statuses
by type in one place (errors.py), the shared state in app.state (state.Service). No search
logic here: the routes call the Python API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

import jointspace as js

from ..errors import JointspaceError, NotFound
from .errors import install_error_handlers
from .metrics import MetricsMiddleware, ServiceMetrics
from .routes import collections, health, items, search
from .settings import SETTINGS_ENV, ServiceSettings
from .state import Service

STATIC = Path(__file__).with_name("static")

_DESCRIPTION = """Search image-text collections over HTTP: the same calls as the Python API
(`jointspace.connect(...).collection(NAME).search(...)`), with the model kept loaded.

When the service has an API key, send it as the `X-API-Key` header, as
`Authorization: Bearer KEY`, or as `?api_key=KEY`. Errors are
`{"error": {"kind": ..., "message": ...}}`."""


def create_app(settings: ServiceSettings | None = None, service: Service | None = None) -> FastAPI:
    """The service's app. With `settings`, the app starts its Service (connects, opens the
    collections, loads their models) when it starts up and closes it when it shuts down; with a
    started `service`, it serves that one and leaves closing it to the caller."""
    owned = service is None
    service = service or Service(settings or ServiceSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            service.start()
        try:
            yield
        finally:
            if owned:
                service.close()

    app = FastAPI(
        title="jointspace",
        version=js.__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.service = service
    app.state.metrics = metrics = ServiceMetrics()
    metrics.watch(service.model_pool)
    install_error_handlers(app)
    for module in (search, collections, items, health):
        app.include_router(module.router)
    _add_page(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _add_page(app: FastAPI) -> None:
    """The web page at / and its files under /static (no key needed: the page holds no data,
    and asks for the key itself when the service wants one)."""

    @app.get("/", include_in_schema=False)
    async def page(request: Request) -> FileResponse:
        index = STATIC / "index.html"
        if not index.is_file():
            raise NotFound("The web page is not installed with this service; the API is at /docs.")
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")


def app_from_environment() -> FastAPI:
    """The app of one worker process of `jointspace serve --workers N` (settings from the
    environment)."""
    return create_app(ServiceSettings.from_environment())


def run_service(
    settings: ServiceSettings, on_ready: Callable[[ServiceSettings, list[str]], None] | None = None
) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM). The address is taken and, with one process,
    the collections opened and models loaded before the first request is accepted, so a bad
    run (port in use, missing collection, store held by another process) raises
    JointspaceError instead of logging a traceback. `on_ready(settings, collections)` is
    called just before serving (with port 0, `settings.port` is the port taken)."""
    import uvicorn

    sock = _bind(settings.host, settings.port)
    settings = dataclasses.replace(settings, port=sock.getsockname()[1])
    try:
        if settings.processes == 1:
            service = Service(settings)
            service.start()
            try:
                config = uvicorn.Config(
                    create_app(service=service), log_level="warning", access_log=False
                )
                if on_ready:
                    on_ready(settings, list(service.collections))
                with _stopped_by_signals():
                    uvicorn.Server(config).run(sockets=[sock])
            finally:
                service.close()
        else:
            from uvicorn.supervisors import Multiprocess

            names = _check_collections(settings)
            os.environ[SETTINGS_ENV] = settings.to_environment()
            config = uvicorn.Config(
                f"{__name__}:app_from_environment",
                factory=True,
                workers=settings.processes,
                log_level="warning",
                access_log=False,
            )
            if on_ready:
                on_ready(settings, names)
            with _stopped_by_signals():
                Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
    finally:
        sock.close()


class _Stop(Exception):
    """SIGTERM arrived: the server has shut down gracefully and the process ends."""


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM are how a service stops: a clean return, not an interruption.
    (uvicorn shuts down gracefully, then raises the signal again for the default handlers.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_collections(settings: ServiceSettings) -> list[str]:
    """The collections to serve, checked to exist before worker processes start (each worker
    then loads its models)."""
    with js.connect(settings.home, settings.qdrant_url, settings.qdrant_api_key) as space:
        if settings.collections:
            for name in settings.collections:
                space.collection(name)
            return list(settings.collections)
        names = [s.name for s in space.collections() if s.state == "ready"]
    if not names:
        raise JointspaceError(
            f"There is no collection to serve on {settings.qdrant_url}; ingest one first."
        )
    return names


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port, or one sentence on why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said outright: asyncio sets TCP_NODELAY only on sockets that say it, and
    # without it a keep-alive client waits ~40 ms for every answer (Nagle + delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        raise JointspaceError(
            f"Cannot listen on {host}:{port} ({reason}); pass another --port (or --host)."
        ) from None
    sock.set_inheritable(True)
    return sock

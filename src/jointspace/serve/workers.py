"""Where calls run: model calls on a small pool with a bounded queue, store reads on another;
a request whose client has gone away never starts its call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.requests import Request

from ..errors import Overloaded

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was ready (nobody reads the response)."""


class BoundedPool:
    """Runs calls on `threads` threads with at most `queue_size` calls waiting for one; a call
    beyond that is refused at once (Overloaded) rather than queued without bound, so that a
    burst cannot pile up work nobody will wait for. Thread-safe."""

    def __init__(self, threads: int, queue_size: int | None, name: str) -> None:
        self.threads = threads
        self.queue_size = queue_size  # None: unbounded
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending = 0  # submitted and not finished (running or waiting)
        self._running = 0

    @property
    def waiting(self) -> int:
        """Calls waiting for a thread."""
        with self._lock:
            return self._pending - self._running

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def submit(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `call(*args, **kwargs)`; raises Overloaded when the queue is full."""
        with self._lock:
            if self.queue_size is not None and self._pending >= self.threads + self.queue_size:
                waiting = self._pending - self._running
                raise Overloaded(
                    f"The service is busy ({waiting} requests waiting for the model); try again "
                    "in a moment."
                )
            self._pending += 1
        try:
            future = self._executor.submit(self._run, call, args, kwargs)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        future.add_done_callback(self._finished)  # also called when the call is cancelled
        return future

    def _run(self, call: Callable[..., T], args: tuple, kwargs: dict) -> T:
        with self._lock:
            self._running += 1
        try:
            return call(*args, **kwargs)
        finally:
            with self._lock:
                self._running -= 1

    def _finished(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        """Drop the waiting calls; the running ones finish on their own."""
        self._executor.shutdown(wait=False, cancel_futures=True)


async def answer(request: Request, future: Future[T]) -> T:
    """The result of `future`, unless the client disconnects first: then the call is cancelled
    if it has not started (a client that gave up costs nothing) and ClientGone is raised. The
    request's body must have been read already."""
    result = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        result.cancel()  # cancels `future` too unless it runs already
        raise
    finally:
        gone.cancel()
    if result not in done:
        result.cancel()
        raise ClientGone()
    return result.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass

"""Images at http(s) URLs: fetched concurrently into `Item.image_bytes`, in stream order.

Wrap any reader's stream: `fetch_remote_images(read_corpus(source))`. A few downloads run at once
in a thread pool, with a bounded number of records in flight, so memory stays flat however long
the stream is. Every failure is a bad item (a Skipped record with its reason), never a bad run.
Uses only the standard library (urllib).
"""

from __future__ import annotations

import dataclasses
import http.client
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

from jointspace.corpus.images import MAX_IMAGE_BYTES
from jointspace.corpus.item import Item, Skipped

USER_AGENT = "jointspace/0.1 (image fetch; +https://github.com/)"
_CHUNK = 64 * 1024
# As elsewhere in the corpus package, an image is a URL when it starts with "scheme://".
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_DEADLINE_TIMEOUTS = 3
_FETCHED = ("http", "https")


class _Failure(Exception):
    """A download that failed; `reason` is the Skipped reason, `retry` whether to try again."""

    def __init__(self, reason: str, retry: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


def fetch_remote_images(
    records: Iterable[Item | Skipped],
    workers: int = 8,
    timeout: float = 10.0,
    max_bytes: int = MAX_IMAGE_BYTES,
    retries: int = 2,
    backoff: float = 0.5,
) -> Iterator[Item | Skipped]:
    """Yield `records` in order, each Item whose `image` is an http(s) URL with its downloaded
    bytes in `image_bytes` (`image` keeps the URL), or Skipped with why it failed.

    Items with a local path, inline bytes or no image, and Skipped records, pass through
    unchanged; an image URL of any other scheme (file, ftp, ...) becomes Skipped ("unsupported
    image url scheme: ftp") and is never fetched. At most `workers` downloads run at once and at
    most 2 x `workers` records are held. `timeout`: seconds to wait for the connection and for
    each piece of data; a download still running after 3 x `timeout` (a server that drips bytes)
    is abandoned as well. A body over `max_bytes` is not read past the cap. Connection errors
    and HTTP 5xx are retried `retries` times, waiting `backoff`, then twice that, ...; HTTP 4xx
    and time-outs are not.
    """
    if workers < 1 or retries < 0 or timeout <= 0 or max_bytes < 1:
        raise ValueError("workers, timeout and max_bytes must be positive, retries not negative")
    fetch = _Fetcher(timeout, max_bytes, retries, backoff)
    return _ordered(records, fetch, workers)


def _ordered(
    records: Iterable[Item | Skipped], fetch: _Fetcher, workers: int
) -> Iterator[Item | Skipped]:
    """Records in input order, downloads running ahead by at most 2 x `workers` records."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jointspace-fetch")
    window: deque[Future[Item | Skipped] | Item | Skipped] = deque()
    try:
        for record in records:
            window.append(_start(pool, fetch, record))
            while len(window) >= 2 * workers:
                yield _result(window.popleft())
        while window:
            yield _result(window.popleft())
    finally:
        # Stopped early (or failed): queued downloads are dropped, running ones end on their own.
        pool.shutdown(wait=False, cancel_futures=True)


def _start(
    pool: ThreadPoolExecutor, fetch: _Fetcher, record: Item | Skipped
) -> Future[Item | Skipped] | Item | Skipped:
    if not isinstance(record, Item) or record.image_bytes is not None or not record.image:
        return record
    scheme = _scheme(record.image)
    if scheme is None:
        return record  # a local path
    if scheme not in _FETCHED:
        return _skipped(record, f"unsupported image url scheme: {scheme}")
    return pool.submit(fetch, record)


def _result(entry: Future[Item | Skipped] | Item | Skipped) -> Item | Skipped:
    return entry.result() if isinstance(entry, Future) else entry


def _skipped(item: Item, reason: str) -> Skipped:
    """A failed download, located by its URL (grep the source for it)."""
    return Skipped(item.source, item.key, reason, item.image)


def _scheme(image: str) -> str | None:
    """The URL scheme of `image`, lowercase; None for a local path."""
    match = _SCHEME.match(image)
    return match.group(1).lower() if match else None


class _Fetcher:
    """Downloads one item's image, with time-out, size cap and retries; never raises."""

    def __init__(self, timeout: float, max_bytes: int, retries: int, backoff: float) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.retries = retries
        self.backoff = backoff
        self.opener = _opener()

    def __call__(self, item: Item) -> Item | Skipped:
        assert item.image is not None
        for attempt in range(self.retries + 1):
            try:
                data = self._download(item.image)
                return dataclasses.replace(item, image_bytes=data)
            except _Failure as failure:
                if not failure.retry or attempt == self.retries:
                    return _skipped(item, failure.reason)
            except Exception as e:  # a bug or an odd library error is still one bad item
                return _skipped(item, f"download failed: {_describe(e)}")
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _download(self, url: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        deadline = time.monotonic() + _DEADLINE_TIMEOUTS * self.timeout
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return self._read(response, deadline)
        except urllib.error.HTTPError as e:
            e.close()
            raise _Failure(f"download failed: HTTP {e.code}", retry=e.code >= 500) from None
        except _Failure:
            raise
        except urllib.error.URLError as e:
            raise _classify(e.reason) from None
        except (OSError, http.client.HTTPException) as e:
            raise _classify(e) from None
        except ValueError as e:  # a malformed URL
            raise _Failure(f"download failed: {_describe(e)}") from None

    def _read(self, response: IO[bytes], deadline: float) -> bytes:
        length = getattr(response, "headers", {}).get("Content-Length")
        if length and length.strip().isdigit() and int(length) > self.max_bytes:
            raise _Failure(f"download exceeds {self.max_bytes} bytes")
        # read1 returns what has arrived (read waits for the full amount): the deadline is then
        # checked as the data trickles in.
        read = getattr(response, "read1", response.read)
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = read(min(_CHUNK, self.max_bytes + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                raise _Failure(f"download exceeds {self.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise _Failure("download timed out")


def _classify(error: object) -> _Failure:
    """A failure from a network error: time-outs are final, other connection errors retried."""
    if isinstance(error, (TimeoutError, socket.timeout)):
        return _Failure("download timed out")
    if isinstance(error, _Failure):
        return error
    if isinstance(error, socket.gaierror):
        return _Failure("download failed: host not found")
    if isinstance(error, ssl.SSLCertVerificationError):
        return _Failure("download failed: certificate verify failed")
    if isinstance(error, (ConnectionError, http.client.HTTPException, OSError)):
        return _Failure(f"download failed: {_describe(error)}", retry=True)
    return _Failure(f"download failed: {_describe(error)}")


def _describe(error: object) -> str:
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split()).lower()[:100]


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) only: a redirect cannot lead to a file:// or ftp:// URL."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        scheme = _scheme(newurl)
        if scheme is not None and scheme not in _FETCHED:
            raise _Failure(f"download failed: redirect to unsupported url scheme {scheme}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    """An opener with http(s) handlers only (urllib's default one also opens file and ftp)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _RedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener

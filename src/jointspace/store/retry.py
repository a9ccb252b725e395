"""Retries with capped exponential backoff and jitter, for calls that are safe to repeat.

Backend-neutral: the caller says which exceptions are transient (`is_transient`) and may ask for
a longer wait (`wait_hint`, e.g. a server's Retry-After). When the tries run out, `GaveUp`
carries the last exception, the number of tries and the time spent, so the backend can say in
one sentence what failed and for how long it tried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("jointspace.store")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    The n-th retry (n = 0, 1, ...) waits a random time in [d/2, d] with
    d = min(max_delay, base_delay * 2**n): exponential growth, capped, and "equal jitter" so that
    many clients that failed together (a server restart) do not come back in lockstep, while no
    wait collapses to zero. With the defaults, 5 tries wait at most 0.5 + 1 + 2 + 4 = 7.5 s.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0
    # Injectable so that tests neither sleep nor depend on chance.
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays must not be negative")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * (2**retry))
        return self.rng.uniform(ceiling / 2, ceiling)


NO_RETRIES = RetryPolicy(attempts=1)


class GaveUp(Exception):
    """A transient failure that outlasted every try; `cause` is the last exception."""

    def __init__(self, cause: BaseException, attempts: int, seconds: float) -> None:
        super().__init__(f"gave up after {attempts} tries in {seconds:.1f} s: {cause!r}")
        self.cause = cause
        self.attempts = attempts
        self.seconds = seconds


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
    *,
    describe: Callable[[BaseException], str] = repr,
    wait_hint: Callable[[BaseException], float | None] = lambda exc: None,
    what: str = "a request",
) -> T:
    """fn(), repeated while it raises a transient exception, at most `policy.attempts` times.

    A non-transient exception propagates at once, unchanged. After the last failed try, GaveUp
    is raised from the last exception (with a single try, that exception itself). `describe`
    turns an exception into the short reason logged at each retry (it must not reveal secrets);
    `what` names the call in that log line.
    """
    started = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == policy.attempts:
                if attempt == 1:  # nothing was retried: the failure speaks for itself
                    raise
                raise GaveUp(exc, attempt, time.monotonic() - started) from exc
            wait = max(policy.delay(attempt - 1), wait_hint(exc) or 0.0)
            log.warning(
                "%s failed (%s); retrying in %.2f s (try %d of %d)",
                what,
                describe(exc),
                wait,
                attempt + 1,
                policy.attempts,
            )
            policy.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises

"""The kinds of failure users see: a bad run (JointspaceError and its kinds) and a bad item.

A face maps a JointspaceError to what it shows by its type: the CLI prints any of them as one
line and exits 1; the HTTP service answers NotFound with 404, InvalidQuery with 422 (TooLarge
413), Overloaded with 503, and any other JointspaceError with 500 (see serve/errors.py).
"""


class JointspaceError(Exception):
    """A bad run: the CLI prints the message (one sentence that says what to do) and exits 1."""


class NotFound(JointspaceError):
    """What a call names does not exist: a collection, a point, a point's image."""


class InvalidQuery(JointspaceError):
    """A query that cannot be run as given: no text nor image, an empty text, an unknown
    target, k out of range, a malformed where, a filter key the collection cannot filter on."""


class UnusableImage(InvalidQuery):
    """A query image that cannot be used: not an image, corrupt, a URL that fails."""


class TooLarge(InvalidQuery):
    """An upload or a query image over a size cap."""


class Overloaded(JointspaceError):
    """More requests are waiting than the service queues; the caller should retry shortly."""


class BadItem(Exception):
    """A bad item in a bulk run: skipped, counted and written to the errors file with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

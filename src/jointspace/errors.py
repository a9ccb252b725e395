"""The two kinds of failure users see: a bad run and a bad item."""


class JointspaceError(Exception):
    """A bad run: the CLI prints the message (one sentence that says what to do) and exits 1."""


class BadItem(Exception):
    """A bad item in a bulk run: skipped, counted and written to the errors file with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

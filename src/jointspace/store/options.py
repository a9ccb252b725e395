"""How to connect to a Qdrant server and how to use it: `ServerOptions`.

Kept apart from the server backend so that building options loads neither Qdrant library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jointspace.errors import JointspaceError
from jointspace.store.retry import RetryPolicy


@dataclass(frozen=True)
class ServerOptions:
    """Connection and tuning of a ServerStore; every field has a safe default.

    api_key: the server's API key (never shown: not in repr, messages or logs).
    prefer_grpc: talk gRPC (port 6334) when the URL is on Qdrant's default REST port 6333 and
        gRPC answers there; else REST.
    timeout: seconds per request (None: qdrant-client's default).
    shards, replicas: shard_number and replication_factor of collections this store creates
        (None: the server's default: one shard on a single node, one per node in a cluster).
    batch_size: points per upsert request; Qdrant recommends 64-256.
    parallel: upsert requests in flight at once (threads); 1 in local mode, which is not
        thread-safe.
    retry: the retry policy for calls that are safe to repeat.
    """

    api_key: str | None = field(default=None, repr=False)
    prefer_grpc: bool = True
    timeout: int | None = None
    shards: int | None = None
    replicas: int | None = None
    batch_size: int = 256
    parallel: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        for label, value in (("shards", self.shards), ("replicas", self.replicas)):
            if value is not None and value < 1:
                raise JointspaceError(f"The number of {label} must be at least 1, not {value}.")
        if self.batch_size < 1 or self.parallel < 1:
            raise JointspaceError("batch_size and parallel must be at least 1.")
        if self.timeout is not None and self.timeout <= 0:
            raise JointspaceError(
                f"The timeout must be a positive number of seconds, not {self.timeout}."
            )

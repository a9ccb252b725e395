"""Prometheus metrics of one app: requests by route and status, latency, errors by kind, the
model queue. Each app has its own registry (several apps in one process do not mix)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .workers import BoundedPool

# Latency buckets (seconds): a warm search takes milliseconds, a cold image fetch seconds.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    """The counters, histogram and gauges of one app, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "jointspace_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "jointspace_request_seconds",
            "Time to answer a request, by route template.",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "jointspace_errors",
            "Error responses by kind (the error document's kind).",
            ["kind"],
            registry=self.registry,
        )
        self.queue = Gauge(
            "jointspace_queue_depth",
            "Model calls waiting for a model thread.",
            registry=self.registry,
        )
        self.busy = Gauge(
            "jointspace_model_busy",
            "Model threads running a call.",
            registry=self.registry,
        )

    def watch(self, pool: BoundedPool) -> None:
        """Read the queue gauges from `pool` whenever metrics are collected."""
        self.queue.set_function(lambda: pool.waiting)
        self.busy.set_function(lambda: pool.running)


class MetricsMiddleware:
    """Counts every HTTP request by its route template (not its path: ids stay out of the
    labels) and status, and times it."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raised before starting a response

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

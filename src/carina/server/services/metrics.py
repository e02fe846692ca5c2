"""Prometheus metrics of one server process (its own registry, so apps in tests never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ServerMetrics:
    """Requests, latencies, inference stages, queue depth and loaded models.

    Labels are route templates, methods, status codes and stage names only: never a model input,
    a file name or a session id.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "carina_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "carina_request_seconds",
            "HTTP request time",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.stages = Histogram(
            "carina_inference_stage_seconds",
            "Time per inference stage (read, pre, infer, post, write)",
            ["stage"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "carina_inference_queue_depth",
            "Inferences running or waiting",
            registry=self.registry,
        )
        self.models_loaded = Gauge(
            "carina_models_loaded", "Networks held in memory", registry=self.registry
        )
        self.rejected = Counter(
            "carina_inference_rejected",
            "Inferences refused because the queue was full",
            registry=self.registry,
        )

    def observe_stages(self, timings: dict[str, float]) -> None:
        """Record one inference's seconds per stage."""
        for stage, seconds in timings.items():
            self.stages.labels(stage).observe(seconds)

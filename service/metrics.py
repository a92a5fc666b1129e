"""Prometheus metrics: requests, latency histograms, tokens, abstentions, auto's routes, queue depth.

Each app has its own registry (several apps in one test process must not collide). Requests are labelled
by route template, never by raw path, to keep the label set bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api_schemas import Answer

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], running: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kc_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "kc_request_duration_seconds",
            "HTTP request duration until the last byte of the response (streams included).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "kc_tokens", "Tokens by model and kind (prompt|completion).", ["model", "kind"], registry=r
        )
        self.phase = Histogram(
            "kc_strategy_phase_seconds",
            "Time a strategy spent retrieving and generating.",
            ["strategy", "phase"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.abstentions = Counter(
            "kc_abstentions", "Answers that abstained, by strategy.", ["strategy"], registry=r
        )
        # Bounded labels: four routes or abstain, and the routes that ran before it (at most 2^4 paths).
        self.routes = Counter(
            "kc_routes",
            "auto's answers by the route chosen and the routes that ran for it, in order (e.g. "
            "rag>long_context).",
            ["chosen", "path"],
            registry=r,
        )
        Gauge("kc_queue_depth", "Requests waiting for a batch slot.", registry=r).set_function(queue_depth)
        Gauge("kc_running_requests", "Requests generating now.", registry=r).set_function(running)

    def record_tokens(self, model: str, prompt: int, completion: int) -> None:
        self.tokens.labels(model, "prompt").inc(prompt)
        self.tokens.labels(model, "completion").inc(completion)

    def record_answer(self, answer: Answer) -> None:
        self.record_tokens(answer.model, answer.usage.prompt_tokens, answer.usage.completion_tokens)
        self.phase.labels(answer.strategy, "retrieve").observe(answer.latency.retrieve_ms / 1000)
        self.phase.labels(answer.strategy, "generate").observe(answer.latency.generate_ms / 1000)
        if answer.abstained:
            self.abstentions.labels(answer.strategy).inc()
        if answer.route is not None:
            ran = [step.strategy for step in answer.route.tried if step.outcome != "skipped"]
            self.routes.labels(answer.route.chosen, ">".join(ran) or "none").inc()


class MetricsMiddleware:
    """Counts every request and times it to the end of its body."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    @staticmethod
    def _route(scope: Scope) -> str:
        # The router records the route it matched in the (shared) scope.
        route = scope.get("route")
        return str(getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics() if scope["type"] == "http" else None
        if metrics is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = self._route(scope)
            metrics.requests.labels(route, scope["method"], str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - start)

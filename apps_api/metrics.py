"""Prometheus metrics. HTTP metrics live in the process that serves the API; the engine's
(apply runs, steps) are counted in Redis by the worker and read back at scrape time, so
/metrics shows both wherever the worker runs (the agent's own process, or a `celery
worker` of its own in development and the tests)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

from apps_api.redis_store import (
    METRICS_APPLIES_KEY,
    METRICS_STEP_SECONDS_KEY,
    METRICS_STEPS_KEY,
    read_hash,
    redis_client,
)

logger = logging.getLogger(__name__)


REGISTRY = CollectorRegistry()
# A client may send any token as a method: one label each would grow memory without bound.
COUNTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HTTP_REQUESTS = Counter(
    "supervisor_http_requests", "Device API requests", ["route", "method", "status"], registry=REGISTRY
)
HTTP_LATENCY = Histogram(
    "supervisor_http_request_duration_seconds",
    "Device API request latency",
    ["route"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


class RequestMetricsMiddleware:
    """Counts every request by route pattern (not raw path: ids must not explode labels).

    Async-capable, so that under ASGI it adds no thread hop of its own."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        began = time.perf_counter()
        response = self.get_response(request)
        self._record(request, response, began)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        began = time.perf_counter()
        response = await self.get_response(request)
        self._record(request, response, began)
        return response

    @staticmethod
    def _record(request: HttpRequest, response: HttpResponse, began: float) -> None:
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None else "unmatched"
        record_request(route, request.method or "", response.status_code, time.perf_counter() - began)


def record_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one API request under its route pattern."""
    HTTP_REQUESTS.labels(route, method if method in COUNTED_METHODS else "other", str(status)).inc()
    HTTP_LATENCY.labels(route).observe(seconds)


def record_step(kind: str, succeeded: bool, seconds: float) -> None:
    """Count one applied step (called in the worker); metrics never fail the step."""
    field = f"{kind}|{'succeeded' if succeeded else 'failed'}"
    try:
        pipe = redis_client().pipeline()
        pipe.hincrby(METRICS_STEPS_KEY, field, 1)
        pipe.hincrbyfloat(METRICS_STEP_SECONDS_KEY, field, seconds)
        pipe.execute()
    except Exception:
        logger.warning("could not count step %s", field, exc_info=True)


def record_apply(converged: bool, seconds: float) -> None:
    result = "converged" if converged else "stopped"
    try:
        pipe = redis_client().pipeline()
        pipe.hincrby(METRICS_APPLIES_KEY, f"{result}|count", 1)
        pipe.hincrbyfloat(METRICS_APPLIES_KEY, f"{result}|seconds", seconds)
        pipe.execute()
    except Exception:
        logger.warning("could not count an apply", exc_info=True)


class EngineCollector:
    """Reads the worker's counters from Redis at scrape time."""

    def collect(self) -> Iterator[Metric]:
        steps = CounterMetricFamily("supervisor_steps", "Applied steps", labels=["kind", "result"])
        step_seconds = CounterMetricFamily(
            "supervisor_step_seconds", "Time spent in applied steps", labels=["kind", "result"]
        )
        for field, value in sorted(read_hash(METRICS_STEPS_KEY).items()):
            steps.add_metric(field.split("|", 1), int(value))
        for field, value in sorted(read_hash(METRICS_STEP_SECONDS_KEY).items()):
            step_seconds.add_metric(field.split("|", 1), float(value))
        applies = CounterMetricFamily("supervisor_apply_runs", "Apply runs", labels=["result"])
        apply_seconds = CounterMetricFamily(
            "supervisor_apply_run_seconds", "Time spent applying", labels=["result"]
        )
        for field, value in sorted(read_hash(METRICS_APPLIES_KEY).items()):
            result, measure = field.split("|", 1)
            if measure == "count":
                applies.add_metric([result], int(value))
            else:
                apply_seconds.add_metric([result], float(value))
        yield from (steps, step_seconds, applies, apply_seconds)

    def describe(self) -> list[Any]:
        return []


REGISTRY.register(EngineCollector())  # type: ignore[arg-type]

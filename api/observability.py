"""Request context for logs, and the API's Prometheus metrics at ``/metrics``.

Requests are counted by route *template* (``/api/v1/jobs/<uuid:job_id>``), never by raw
path, so a scrape's size does not grow with the number of jobs. Under gunicorn the
workers share a multiprocess directory (``baton.gunicorn_conf``), and /metrics answers
for all of them.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from api.errors import request_id
from baton import observability
from baton.settings import get_settings

REQUESTS = Counter(
    "baton_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "baton_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "<unmatched>"


def metrics_response() -> Response:
    if get_settings().metrics_dir:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        observability.clear()
        observability.bind(request_id=request_id())

    @app.after_request
    def _count(response: Response) -> Response:
        if request.path != "/metrics" and "started" in g:
            route, method = _route(), request.method
            REQUESTS.labels(method, route, str(response.status_code)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - g.started)
        return response

    @app.teardown_request
    def _forget(_exc: BaseException | None) -> None:
        observability.clear()

    app.add_url_rule("/metrics", "metrics", metrics_response)

"""GET /metrics (Prometheus text format) and the hooks that count every other request.

The figures live in workers.metrics (shared with the Celery worker). Requests are counted by
URL rule, never by raw path (a path of a file hash would make one series per file), and
/metrics itself is neither counted nor rate-limited. Who may read it is decided in front of the
app (nginx-locations.conf: loopback only; README, "Observability").
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask, Response, g, request

from workers import metrics

PATH = "/metrics"
UNMATCHED = "unmatched"  # no URL rule matched (404 on an unknown path, 405)


def _start() -> None:
    g.metrics_start = time.perf_counter()


def _count(response: Response) -> Response:
    if request.path == PATH:
        return response
    rule = request.url_rule
    labels = {
        "method": request.method,
        "route": rule.rule if rule is not None else UNMATCHED,
        "status": str(response.status_code),
    }
    metrics.HTTP_REQUESTS.labels(**labels).inc()
    start = g.get("metrics_start")
    if start is not None:
        metrics.HTTP_LATENCY.labels(**labels).observe(time.perf_counter() - start)
    return response


def scrape() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def init_metrics(app: Flask) -> Callable[[], Response]:
    """Install the hooks (before any other before_request: a 429 is timed too) and the route;
    returns the view, for the limiter to exempt."""
    app.before_request(_start)
    app.after_request(_count)
    app.add_url_rule(PATH, "metrics", scrape, methods=["GET"])
    return scrape

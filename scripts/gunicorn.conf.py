"""gunicorn settings for the public gateway behind one nginx hop (threads stream uploads and downloads)."""

import json
import os

from gunicorn.glogging import Logger


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, "").strip() or default)


# GUNICORN_WORKERS wins; WEB_CONCURRENCY is the name gunicorn and most hosts already use.
workers = _int("GUNICORN_WORKERS", _int("WEB_CONCURRENCY", 2))
worker_class = "gthread"
threads = _int("GUNICORN_THREADS", 4)
# A 2 GiB upload or download at a slow client's pace must not be killed as a hung worker.
timeout = _int("GUNICORN_TIMEOUT", 600)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Recycle workers now and then (bounded memory growth); jitter so they never restart together.
# At 2000 the two workers recycled every ~4 s under load, each then importing the app for
# ~1.5 s while requests waited (getQuote's p99 was 1.55 s, bench/README.md).
max_requests = _int("GUNICORN_MAX_REQUESTS", 20000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 2000)
# The app is imported once, in the master: a recycled worker is a fork (milliseconds), not a
# 1.5 s import (web3, celery). Everything made at import is fork-safe: connections and thread
# pools are made lazily and checked against the pid.
preload_app = True
limit_request_line = _int("GUNICORN_LIMIT_REQUEST_LINE", 8190)
limit_request_fields = _int("GUNICORN_LIMIT_REQUEST_FIELDS", 100)
limit_request_field_size = _int("GUNICORN_LIMIT_REQUEST_FIELD_SIZE", 8190)
# The one trusted proxy hop (nginx): only its address may set X-Forwarded-Proto for gunicorn.
# The client address itself is taken by ProxyFix(x_for=1) in api.create_app.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "").strip() or "127.0.0.1"
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "").strip() or "-"
errorlog = "-"

# One JSON object per line. %(h)s is the peer (nginx); the client is in X-Forwarded-For.
access_log_format = json.dumps(
    {
        "time": "%(t)s",
        "remote": "%(h)s",
        "forwarded_for": "%({x-forwarded-for}i)s",
        "forwarded_proto": "%({x-forwarded-proto}i)s",
        "request_id": "%({x-request-id}i)s",
        "method": "%(m)s",
        "path": "%(U)s",
        "query": "%(q)s",
        "status": "%(s)s",
        "bytes": "%(b)s",
        "duration_us": "%(D)s",
        "user_agent": "%(a)s",
        "pid": "%(p)s",
    }
)


class JsonAtoms(dict):  # type: ignore[type-arg]
    """Log atoms escaped for a JSON string; a missing atom is "-" (as gunicorn's SafeAtoms).

    Escaped when the format reads them: gunicorn passes every request header and environ key
    (~40 atoms) and the format uses 13 (escaping them all was 5% of a getStatus request's CPU).
    """

    def __getitem__(self, key: str) -> str:
        key = key.lower() if key.startswith("{") else key
        value = super().get(key)
        return "-" if value is None else json.dumps(str(value))[1:-1]


class JsonLogger(Logger):
    """gunicorn's logger with JSON-escaped access-log fields (quotes, backslashes, controls)."""

    atoms_wrapper_class = JsonAtoms


logger_class = JsonLogger


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    """Prometheus multiprocess bookkeeping: a dead worker's figures are folded into this host's
    archive files, its live gauges dropped (workers.metrics.fold_dead_process)."""
    from workers.metrics import fold_dead_process

    fold_dead_process(worker.pid)


def pre_fork(server, worker) -> None:  # type: ignore[no-untyped-def]
    """Freeze the preloaded app's objects (~180k) out of the garbage collector before forking.

    A full (gen 2) collection in a worker walked them all: 130 ms with the GIL held, every few
    seconds under load, which was getQuote's p99 (106-175 ms; 27-41 ms frozen, 5 runs each).
    Frozen objects are also never written by the collector, so the fork keeps sharing their
    pages with the master (the documented use of gc.freeze).
    """
    import gc

    gc.freeze()

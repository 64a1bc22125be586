"""The Celery app, configured from celeryconfig.py; tasks live in workers.tasks."""

from __future__ import annotations

import os
import sys

from celery import Celery
from celery.signals import setup_logging, worker_init

from workers import metrics
from workers.logs import configure_logging

app = Celery("occ")
app.config_from_object("celeryconfig")
app.conf.include = ["workers.tasks.storage", "workers.tasks.paid"]
metrics.connect_task_signals()


@setup_logging.connect
def _logging(**_: object) -> None:
    configure_logging()


@worker_init.connect
def _check_settings(**_: object) -> None:
    """Validate the environment once at start: a bad value stops the worker with one clear line."""
    from workers.settings import ConfigError, Settings

    try:
        Settings.from_env()
    except ConfigError as exc:
        # Celery swallows exceptions raised in signal handlers: leave the process directly.
        print(f"occ worker: configuration error: {exc}", file=sys.stderr, flush=True)
        os._exit(78)

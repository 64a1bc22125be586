"""The Celery app, configured from celeryconfig.py; tasks live in workers.tasks."""

from __future__ import annotations

from celery import Celery
from celery.signals import setup_logging

from workers.logs import configure_logging

app = Celery("occ")
app.config_from_object("celeryconfig")
app.conf.include = ["workers.tasks", "workers.paid_tasks"]


@setup_logging.connect
def _logging(**_: object) -> None:
    configure_logging()

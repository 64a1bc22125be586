"""Celery settings read from the environment (reliability.md §2)."""

import os

_redis = os.environ.get("REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0"

broker_url = os.environ.get("CELERY_BROKER_URL", "").strip() or _redis
result_backend = None  # results are ignored; job state lives in workers/jobs.py
task_ignore_result = True

# Re-deliver a task whose worker died; never lose an acknowledged job.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

task_soft_time_limit = int(os.environ.get("TASK_SOFT_TIME_LIMIT", "1500"))
task_time_limit = int(os.environ.get("TASK_TIME_LIMIT", "1800"))
# Broker visibility timeout at least twice the hard time limit.
broker_transport_options = {
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", str(2 * task_time_limit)))
}

accept_content = ["json"]
task_serializer = "json"
result_serializer = "json"
timezone = "UTC"
enable_utc = True
worker_hijack_root_logger = False
broker_connection_retry_on_startup = True
worker_send_task_events = False

beat_schedule = {
    "scrub": {"task": "scrub_nodes", "schedule": float(os.environ.get("SCRUB_INTERVAL", "300"))},
    "sketches": {
        "task": "refresh_sketches",
        "schedule": float(os.environ.get("SKETCH_INTERVAL", "60")),
    },
    "health": {"task": "check_health", "schedule": float(os.environ.get("HEALTH_INTERVAL", "120"))},
    "sweep": {"task": "sweep_jobs", "schedule": float(os.environ.get("SWEEP_INTERVAL", "60"))},
    "janitor": {"task": "clean_temp", "schedule": float(os.environ.get("JANITOR_INTERVAL", "600"))},
    "expire": {"task": "expire_paid_files", "schedule": 3600.0},
    "orphans": {"task": "sweep_orphan_chunks", "schedule": 6 * 3600.0},
}

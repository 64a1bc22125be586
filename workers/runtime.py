"""Per-process wiring: settings -> Redis client, node backends, chunk store, job records."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import redis

from occ_storage.nodes import NodeBackend
from occ_storage.store import ChunkStore
from workers.nodes_config import build_nodes
from workers.settings import Settings
from workers.state.index import RedisIndex
from workers.state.jobs import Jobs

Enqueue = Callable[..., None]  # enqueue(task_name, *args): queue a Celery task by name


def load_or_create_key(path: Path) -> bytes:
    """The sketch PRF key (a network secret): read it, or create 32 random bytes with mode 0600."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
        data = path.read_bytes()
    if len(data) < 16:
        raise ValueError(f"sketch key file {path} holds fewer than 16 bytes")
    return data


def celery_enqueue(task_name: str, *args: Any) -> None:
    """Send a task by name through the Celery app (no task module is imported: no circle)."""
    from workers.celery_app import app

    app.send_task(task_name, args=list(args))


class Runtime:
    """Everything a view or a task needs, built lazily once per process.

    ``enqueue`` is how services queue the next step; tests pass a recorder instead of Celery.
    """

    def __init__(self, settings: Settings, enqueue: Enqueue = celery_enqueue) -> None:
        self.settings = settings
        self.enqueue = enqueue

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.settings.redis_url,
            socket_connect_timeout=2,
            socket_timeout=10,
            health_check_interval=30,
        )

    @cached_property
    def jobs(self) -> Jobs:
        return Jobs(self.redis)

    @cached_property
    def index(self) -> RedisIndex:
        return RedisIndex(self.redis)

    @cached_property
    def nodes(self) -> list[NodeBackend]:
        return build_nodes(self.settings.node_specs, self.settings.node_dirs())

    @cached_property
    def store(self) -> ChunkStore:
        return ChunkStore(self.nodes, chunk_size=self.settings.chunk_size, index=self.index)

    @cached_property
    def sketch_key(self) -> bytes:
        path = self.settings.sketch_key_file or (self.settings.storage_dir / "sketch.key")
        return load_or_create_key(path)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process-wide runtime, from the environment (workers and the WSGI app share it)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(Settings.from_env())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (the app factory does, so views and eager calls share one)."""
    global _runtime
    with _runtime_lock:
        _runtime = runtime

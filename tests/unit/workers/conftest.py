"""A Runtime on a real redis-server database of its own, with a recorder in place of Celery."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.services import RedisServer
from workers.runtime import Runtime
from workers.settings import Settings

DB = 9  # apart from the integration tests' databases


class Queue:
    """What services enqueued, as (task name, args) in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, name: str, *args: Any) -> None:
        self.sent.append((name, args))

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]


@pytest.fixture
def queue() -> Queue:
    return Queue()


@pytest.fixture
def rt(redis_server: RedisServer, tmp_path: Path, queue: Queue) -> Iterator[Runtime]:
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    settings = Settings(storage_dir=tmp_path / "storage", redis_url=url, num_nodes=5)
    runtime = Runtime(settings, enqueue=queue)
    runtime.redis.flushdb()
    yield runtime
    runtime.redis.flushdb()

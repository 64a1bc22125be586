"""A gateway app on an unreachable Redis (views that need no state, error handling, the document)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from api import create_app
from workers.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        storage_dir=tmp_path / "storage",
        redis_url="redis://127.0.0.1:1/0",  # nothing listens: Redis-backed views answer 503
    )


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app({"SETTINGS": settings, "TESTING": True})

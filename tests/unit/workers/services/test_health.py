"""workers/services/health.py: /status answers from the cached report; a refresh walks each node once."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest

from workers.runtime import Runtime
from workers.services import health, storage
from workers.state import keys


def _count_walks(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count every listing of every node (census, list_chunks, used_bytes)."""
    calls: dict[str, int] = {}
    for node in rt.nodes:
        for name in ("census", "list_chunks", "used_bytes"):
            original = getattr(node, name)

            def counted(
                *a: Any, _o: Any = original, _n: str = name, _id: str = node.node_id
            ) -> Any:
                calls[f"{_id}.{_n}"] = calls.get(f"{_id}.{_n}", 0) + 1
                return _o(*a)

            monkeypatch.setattr(node, name, counted)
    return calls


def test_refresh_walks_each_node_once(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    storage.store_upload(rt, io.BytesIO(os.urandom(500_000)), "a.bin", 3)
    calls = _count_walks(rt, monkeypatch)
    health.refresh_merged_sketch(rt)
    assert calls == {f"{n.node_id}.census": 1 for n in rt.nodes}


def test_status_uses_a_young_report_and_walks_nothing(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.store_upload(rt, io.BytesIO(os.urandom(500_000)), "a.bin", 3)
    health.refresh_merged_sketch(rt)  # what beat does every SKETCH_INTERVAL
    calls = _count_walks(rt, monkeypatch)
    doc = health.network_status(rt)
    assert calls == {}
    assert doc["network"]["total_chunks"] == 4  # two chunks on the write quorum (2 of 3)
    assert 0 <= doc["sketch"]["age_s"] < rt.settings.sketch_interval
    assert doc["sketch"]["refresh_interval_s"] == rt.settings.sketch_interval


def test_status_refreshes_a_report_older_than_two_intervals(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    health.refresh_merged_sketch(rt)
    meta = json.loads(rt.redis.get(keys.SKETCH_NODES) or b"{}")
    meta["updated_at"] -= 2 * rt.settings.sketch_interval + 1
    rt.redis.set(keys.SKETCH_NODES, json.dumps(meta))
    calls = _count_walks(rt, monkeypatch)
    doc = health.network_status(rt)
    assert sum(calls.values()) == len(rt.nodes)
    assert doc["sketch"]["age_s"] < 5


def test_status_without_any_report_builds_one(rt: Runtime) -> None:
    assert rt.redis.get(keys.SKETCH_MERGED) is None
    doc = health.network_status(rt)
    assert doc["network"]["total_chunks"] == 0
    assert rt.redis.get(keys.SKETCH_MERGED) is not None

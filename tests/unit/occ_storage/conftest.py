"""Shared fixtures for the chunk-store tests: real node directories under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from occ_storage.nodes import LocalDirNode
from occ_storage.store import ChunkStore

SMALL_CS = 1024


def make_nodes(
    root: Path, n: int = 5, weights: list[float] | None = None, sync: str = "auto"
) -> list[LocalDirNode]:
    """n LocalDirNodes in root/node_000..."""
    ws = weights or [1.0] * n
    return [
        LocalDirNode(root / f"node_{i:03d}", node_id=f"node_{i:03d}", weight=ws[i], sync=sync)
        for i in range(n)
    ]


def payload(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(size)


@pytest.fixture
def nodes(tmp_path: Path) -> list[LocalDirNode]:
    return make_nodes(tmp_path / "nodes")


@pytest.fixture
def store(nodes: list[LocalDirNode]) -> Iterator[ChunkStore]:
    with ChunkStore(nodes, chunk_size=SMALL_CS) as s:
        yield s

"""Weighted rendezvous placement: distinct nodes, determinism, weights, minimal disruption."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pytest

from occ_storage.errors import InvalidNodeError, InvalidReplicationError
from occ_storage.placement import choose_nodes, rank_nodes

NODES = [(f"node_{i:03d}", 1.0) for i in range(5)]


def key(i: int) -> str:
    return hashlib.sha256(i.to_bytes(8, "little")).hexdigest()


def test_choose_is_distinct_deterministic_prefix_of_rank() -> None:
    for i in range(200):
        order = rank_nodes(key(i), NODES)
        assert sorted(order) == sorted(n for n, _ in NODES)
        for r in range(1, 6):
            chosen = choose_nodes(key(i), NODES, r)
            assert chosen == order[:r]
            assert len(set(chosen)) == r
        assert choose_nodes(key(i), list(reversed(NODES)), 3) == order[:3]  # order-independent


@pytest.mark.parametrize("r", [0, 6, -1, True, 2.0])
def test_bad_r(r: object) -> None:
    with pytest.raises(InvalidReplicationError):
        choose_nodes(key(0), NODES, r)  # type: ignore[arg-type]


def test_bad_node_sets() -> None:
    with pytest.raises(InvalidNodeError):
        rank_nodes(key(0), [("a", 1.0), ("a", 2.0)])
    with pytest.raises(InvalidNodeError):
        rank_nodes(key(0), [("a", -1.0)])
    with pytest.raises(InvalidNodeError):
        rank_nodes(key(0), [("a", float("nan"))])
    with pytest.raises(InvalidNodeError):
        rank_nodes(key(0), [("", 1.0)])


def test_weights_are_respected() -> None:
    weights = [1.0, 2.0, 3.0, 4.0]
    nodes = [(f"n{i}", w) for i, w in enumerate(weights)]
    n = 20_000
    first = np.zeros(4)
    for i in range(n):
        first[int(rank_nodes(key(i), nodes)[0][1:])] += 1
    expected = np.array(weights) / sum(weights)
    assert np.all(np.abs(first / n - expected) < 0.015), first / n


def test_zero_weight_node_ranks_last() -> None:
    nodes = [("a", 1.0), ("b", 0.0), ("c", 1.0)]
    for i in range(100):
        assert rank_nodes(key(i), nodes)[-1] == "b"


def test_adding_a_node_moves_only_chunks_it_wins() -> None:
    bigger = [*NODES, ("node_005", 1.0)]
    moved = 0
    for i in range(3000):
        before, after = choose_nodes(key(i), NODES, 3), choose_nodes(key(i), bigger, 3)
        if before != after:
            assert "node_005" in after
            assert [n for n in after if n != "node_005"] == before[: len(after) - 1]
            moved += 1
    assert 0.4 < moved / 3000 < 0.6  # about r/(n+1) = 3/6 of the chunks gain the new node


@dataclass
class FakeNode:
    node_id: str
    weight: float


def test_accepts_node_objects() -> None:
    objs = [FakeNode(n, w) for n, w in NODES]
    assert rank_nodes(key(1), objs) == rank_nodes(key(1), NODES)

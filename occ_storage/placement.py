"""Pure placement: weighted rendezvous (highest random weight) hashing of chunk ids onto nodes."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Protocol

from occ_storage.errors import InvalidNodeError, InvalidReplicationError

_INV_2_53 = 1.0 / float(1 << 53)


class NodeLike(Protocol):
    """Anything with a node id and a capacity weight (a NodeBackend qualifies)."""

    @property
    def node_id(self) -> str: ...

    @property
    def weight(self) -> float: ...


NodeSpec = Sequence[tuple[str, float]] | Sequence[NodeLike]


def node_pairs(nodes: NodeSpec) -> list[tuple[str, float]]:
    """Normalise `nodes` to (node_id, weight) pairs; raise InvalidNodeError on duplicates/bad weights."""
    pairs: list[tuple[str, float]] = []
    for node in nodes:
        if isinstance(node, tuple):
            node_id, weight = node
        else:
            node_id, weight = node.node_id, node.weight
        weight = float(weight)
        if not isinstance(node_id, str) or not node_id:
            raise InvalidNodeError(f"node id must be a non-empty string, got {node_id!r}")
        if not math.isfinite(weight) or weight < 0:
            raise InvalidNodeError(
                f"node {node_id!r}: weight must be finite and >= 0, got {weight}"
            )
        pairs.append((node_id, weight))
    if len({p[0] for p in pairs}) != len(pairs):
        raise InvalidNodeError("duplicate node ids")
    return pairs


def score(key: str, node_id: str, weight: float) -> float:
    """Weighted rendezvous score -w / ln(u), u = sha256(key + node_id) mapped into (0, 1).

    Schindelhauer & Schomaker, "Weighted distributed hash tables" (2005): the node with the
    highest score is chosen with probability proportional to its weight.
    """
    digest = hashlib.sha256((key + node_id).encode()).digest()
    u = ((int.from_bytes(digest[:8], "big") >> 11) + 0.5) * _INV_2_53  # 53 bits: strictly in (0,1)
    return -weight / math.log(u)


def rank_pairs(key: str, pairs: Sequence[tuple[str, float]]) -> list[str]:
    """rank_nodes for pairs already checked by node_pairs (the hot path of put and read)."""
    scored = sorted((-score(key, nid, w), nid) for nid, w in pairs)
    return [nid for _, nid in scored]


def rank_nodes(chunk_id: str, nodes: NodeSpec) -> list[str]:
    """Return every node id in preference order for `chunk_id` (best first; ties by node id)."""
    return rank_pairs(chunk_id, node_pairs(nodes))


def check_replication(r: object, n_nodes: int) -> int:
    """Return `r` if it is an int in 1..n_nodes, else raise InvalidReplicationError."""
    if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= n_nodes:
        raise InvalidReplicationError(
            f"replication factor must be an int in 1..{n_nodes}, got {r!r}"
        )
    return r


def choose_nodes(chunk_id: str, nodes: NodeSpec, r: int) -> list[str]:
    """Return the `r` distinct best nodes for `chunk_id` by weighted rendezvous hashing."""
    check_replication(r, len(nodes))
    return rank_nodes(chunk_id, nodes)[:r]

"""Secure aggregation of node sketches by pairwise additive masks mod 2^32 (Bonawitz et al. 2017).

Node i adds, for every other node j, a mask m_ij = PRG(seed_ij) when i < j and subtracts it when
i > j. Each mask appears once with each sign, so the masks cancel in the sum mod 2^32 and the
aggregator learns only S = Σ_v x_v; a single masked vector is uniform on (Z/2^32)^N' to anyone
without the seeds. Scope: the semi-honest, no-dropout core of the protocol; every node must
report (dropout recovery by secret-shared seeds is out of scope here).

The PRG is SHAKE-256 (an extendable-output function), not numpy's PCG64: PCG64's state can be
recovered from its outputs, and the masked vector x + m leaks the high bits of m (x is small),
so a statistical generator would let the aggregator strip the masks.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

__all__ = ["aggregate", "mask_vector", "pair_seed", "prg_mask"]

U32 = npt.NDArray[np.uint32]
_MIN_SECRET = 16


def pair_seed(pair_secret: bytes, i: int, j: int, round_id: bytes = b"") -> bytes:
    """Return the 32-byte seed of the pair {i, j} for one aggregation round.

    `pair_secret` is what nodes i and j share (in Bonawitz et al. 2017 a Diffie-Hellman
    agreement); keyed BLAKE2b over (round, min, max) gives a fresh seed per round, the same on
    both sides.
    """
    if len(pair_secret) < _MIN_SECRET:
        raise ValueError(f"pair secret must be at least {_MIN_SECRET} bytes")
    if i == j or i < 0 or j < 0:
        raise ValueError("a pair needs two distinct non-negative node indices")
    lo, hi = (i, j) if i < j else (j, i)
    h = hashlib.blake2b(key=bytes(pair_secret[:64]), digest_size=32, person=b"occ-secagg-seed")
    h.update(struct.pack("<QQ", lo, hi))
    h.update(round_id)
    return h.digest()


def prg_mask(seed: bytes, length: int) -> U32:
    """Expand a seed into `length` uniform uint32 words (SHAKE-256, little-endian)."""
    if len(seed) < _MIN_SECRET:
        raise ValueError(f"seed must be at least {_MIN_SECRET} bytes")
    stream = hashlib.shake_256(b"occ-secagg-mask\x00" + seed).digest(4 * length)
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32)


def mask_vector(
    node_index: int,
    vector: npt.ArrayLike,
    pair_seeds: Mapping[int, bytes],
    n_nodes: int,
) -> U32:
    """Return node `node_index`'s masked vector: x_i + Σ_{j>i} m_ij - Σ_{j<i} m_ji (mod 2^32).

    `pair_seeds[j]` is the seed shared with node j (see `pair_seed`); every other node of the
    round must have one. The unmasked vector never leaves the node.
    """
    if not 0 <= node_index < n_nodes:
        raise ValueError(f"node index {node_index} outside 0..{n_nodes - 1}")
    x = np.asarray(vector)
    if x.ndim != 1:
        raise ValueError("vector must be one-dimensional")
    if x.size and (np.issubdtype(x.dtype, np.signedinteger) and int(x.min()) < 0):
        raise ValueError("vector entries must be non-negative counts")
    missing = sorted(set(range(n_nodes)) - {node_index} - set(pair_seeds))
    if missing:
        raise ValueError(f"no pair seed with nodes {missing}")
    out = x.astype(np.uint32)  # arithmetic below wraps mod 2^32, as intended
    for j in range(n_nodes):
        if j == node_index:
            continue
        m = prg_mask(pair_seeds[j], out.size)
        if node_index < j:
            out += m
        else:
            out -= m
    return out


def aggregate(masked_vectors: Iterable[npt.ArrayLike], n_nodes: int | None = None) -> U32:
    """Sum masked vectors mod 2^32: the pairwise masks cancel and S = Σ_v x_v remains.

    Pass `n_nodes` to check that every node of the round reported; with one missing the sum
    is still masked (uniform noise), not an error the aggregator could see otherwise.
    """
    vectors = [np.asarray(v, dtype=np.uint32) for v in masked_vectors]
    if not vectors:
        raise ValueError("no masked vector to aggregate")
    if n_nodes is not None and len(vectors) != n_nodes:
        raise ValueError(f"{len(vectors)} masked vectors for {n_nodes} nodes: all must report")
    total = np.zeros_like(vectors[0], dtype=np.uint32)
    for v in vectors:
        if v.shape != total.shape:
            raise ValueError("masked vectors differ in length")
        total += v
    return total

"""LCRS sketches: keyed register map, exact node counts, merged sketch and its invariants."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import stats

from occ_storage.errors import InvalidHashError, SketchMismatchError
from occ_storage.sketches import (
    MergedSketch,
    NodeSketch,
    key_id_of,
    register_id,
    register_ids,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
N_PRIME = 10_000
TAU = 10


def chunk_ids(n: int, salt: str = "") -> list[str]:
    """Real chunk ids: SHA-256 of distinct chunk contents."""
    return [hashlib.sha256(f"{salt}chunk-{i}".encode()).hexdigest() for i in range(n)]


# --------------------------------------------------------------------------- register map


def test_register_ids_match_the_multiply_shift_formula() -> None:
    ids = chunk_ids(2_000)
    regs = register_ids(ids, KEY, N_PRIME)
    assert regs.dtype == np.uint32 and regs.shape == (2_000,)
    for cid, j in zip(ids[:200], regs[:200], strict=True):
        prf = hashlib.blake2b(
            bytes.fromhex(cid), key=KEY, digest_size=8, person=b"occ-register"
        ).digest()
        assert int(j) == (int.from_bytes(prf, "big") * N_PRIME) >> 64


def test_multiply_shift_is_exact_at_the_extremes() -> None:
    # N' near 2^32 exercises every partial product of the 128-bit emulation
    big = 2**32 - 1
    ids = chunk_ids(500)
    regs = register_ids(ids, KEY, big)
    for cid, j in zip(ids, regs, strict=True):
        prf = hashlib.blake2b(
            bytes.fromhex(cid), key=KEY, digest_size=8, person=b"occ-register"
        ).digest()
        assert int(j) == (int.from_bytes(prf, "big") * big) >> 64


def test_hex_and_raw_chunk_ids_share_a_register() -> None:
    cid = chunk_ids(1)[0]
    assert register_id(cid, KEY, N_PRIME) == register_id(bytes.fromhex(cid), KEY, N_PRIME)
    assert register_id(cid.upper(), KEY, N_PRIME) == register_id(cid, KEY, N_PRIME)


def test_register_map_depends_on_the_key_and_rejects_bad_input() -> None:
    ids = chunk_ids(1_000)
    a, b = register_ids(ids, KEY, N_PRIME), register_ids(ids, OTHER_KEY, N_PRIME)
    assert (a != b).mean() > 0.99
    with pytest.raises(InvalidHashError):
        register_ids(["not-hex!"], KEY, N_PRIME)
    with pytest.raises(ValueError):
        register_ids(ids, b"short", N_PRIME)
    with pytest.raises(ValueError):
        register_ids(ids, KEY, 0)


def test_register_map_is_uniform() -> None:
    # 100,000 chunk ids into 100 cells (j * 100 // N'): chi-square goodness of fit at the 0.1%
    # level. The ids are fixed, so the outcome is deterministic.
    regs = register_ids(chunk_ids(100_000), KEY, N_PRIME)
    cells = np.bincount(regs.astype(np.int64) * 100 // N_PRIME, minlength=100)
    assert stats.chisquare(cells).pvalue > 1e-3


def test_key_id_is_public_and_not_the_key() -> None:
    kid = key_id_of(KEY)
    assert len(kid) == 8 and kid not in KEY and kid != key_id_of(OTHER_KEY)


# --------------------------------------------------------------------------- node sketch


def test_node_sketch_add_remove_and_rebuild_agree() -> None:
    regs = register_ids(chunk_ids(5_000), KEY, N_PRIME)
    kid = key_id_of(KEY)
    rebuilt = NodeSketch.from_registers(regs, N_PRIME, kid)
    incremental = NodeSketch.empty(N_PRIME, kid)
    for j in regs:
        incremental.add(int(j))
    assert rebuilt == incremental
    assert rebuilt.counts.dtype == np.uint16 and rebuilt.total == 5_000
    for j in regs[:1_000]:
        incremental.remove(int(j))
    assert incremental == NodeSketch.from_registers(regs[1_000:], N_PRIME, kid)
    batch = NodeSketch.empty(N_PRIME, kid)
    batch.update(regs)
    batch.update(regs[:1_000], remove=True)
    assert batch == incremental


def test_node_sketch_counts_are_exact_not_saturated() -> None:
    kid = key_id_of(KEY)
    node = NodeSketch.empty(16, kid)
    for _ in range(300):  # far above any tau: a local counter must not saturate
        node.add(5)
    for _ in range(300):
        node.remove(5)
    assert node.total == 0
    with pytest.raises(ValueError):
        node.remove(5)
    full = NodeSketch(kid, 4, np.array([65535, 0, 0, 0], dtype=np.uint16))
    with pytest.raises(OverflowError):
        full.add(0)
    with pytest.raises(ValueError):
        full.add(4)


def test_node_sketch_bytes_roundtrip() -> None:
    node = NodeSketch.from_registers(
        register_ids(chunk_ids(3_000), KEY, N_PRIME), N_PRIME, key_id_of(KEY)
    )
    data = node.to_bytes()
    assert NodeSketch.from_bytes(data) == node
    with pytest.raises(ValueError):
        NodeSketch.from_bytes(data[:-1])


# --------------------------------------------------------------------------- merged sketch


def place(
    ids: list[str], replicas: np.ndarray, n_nodes: int, rng: np.random.Generator
) -> dict[int, list[str]]:
    """Put each chunk on `replicas[c]` distinct random nodes."""
    holdings: dict[int, list[str]] = {v: [] for v in range(n_nodes)}
    for cid, r in zip(ids, replicas, strict=True):
        for v in rng.choice(n_nodes, size=int(r), replace=False):
            holdings[int(v)].append(cid)
    return holdings


def merged_over(holdings: dict[int, list[str]], tau: int = TAU) -> MergedSketch:
    kid = key_id_of(KEY)
    nodes = [
        NodeSketch.from_registers(register_ids(chunks, KEY, N_PRIME), N_PRIME, kid)
        for chunks in holdings.values()
    ]
    return MergedSketch.from_nodes(nodes, tau)


@pytest.mark.parametrize("profile", ["r3", "mixed"])
def test_merged_sketch_does_not_depend_on_node_count(profile: str) -> None:
    # the same chunk set and replica counts spread over 3, 10 or 50 nodes
    rng = np.random.default_rng(3)
    ids = chunk_ids(3_000, salt=profile)
    if profile == "r3":
        replicas = np.full(len(ids), 3)
    else:
        replicas = rng.choice([1, 2, 3], p=[0.2, 0.3, 0.5], size=len(ids))
    sketches = [merged_over(place(ids, replicas, n, rng)) for n in (3, 10, 50)]
    assert sketches[0] == sketches[1] == sketches[2]
    levels = sketches[0].level_counts()
    assert levels.sum() == N_PRIME and levels.size == TAU + 1


def test_merged_sketch_is_the_censored_register_sum() -> None:
    rng = np.random.default_rng(5)
    ids = chunk_ids(4_000)
    replicas = rng.integers(1, 6, size=len(ids))
    merged = merged_over(place(ids, replicas, 10, rng), tau=4)
    regs = register_ids(ids, KEY, N_PRIME)
    s = np.bincount(regs, weights=replicas, minlength=N_PRIME)
    assert np.array_equal(merged.counts, np.minimum(s, 4).astype(np.uint32))


def test_merging_merged_sketches_is_exact_under_censoring() -> None:
    rng = np.random.default_rng(6)
    ids = chunk_ids(6_000)
    holdings = place(ids, np.full(len(ids), 3), 6, rng)
    kid = key_id_of(KEY)
    nodes = [
        NodeSketch.from_registers(register_ids(c, KEY, N_PRIME), N_PRIME, kid)
        for c in holdings.values()
    ]
    left = MergedSketch.from_nodes(nodes[:3], TAU)
    right = MergedSketch.from_nodes(nodes[3:], TAU)
    assert left.merge(right) == MergedSketch.from_nodes(nodes, TAU)


def test_mismatched_sketches_refuse_to_merge() -> None:
    kid, other = key_id_of(KEY), key_id_of(OTHER_KEY)
    a = NodeSketch.empty(N_PRIME, kid)
    with pytest.raises(SketchMismatchError):
        MergedSketch.from_nodes([a, NodeSketch.empty(N_PRIME, other)], TAU)
    with pytest.raises(SketchMismatchError):
        MergedSketch.from_nodes([a, NodeSketch.empty(N_PRIME + 1, kid)], TAU)
    m = MergedSketch.from_nodes([a], TAU)
    with pytest.raises(SketchMismatchError):
        m.merge(MergedSketch.from_nodes([a], TAU + 1))
    with pytest.raises(SketchMismatchError):
        m.merge(MergedSketch.from_nodes([NodeSketch.empty(N_PRIME, other)], TAU))


def test_merged_sketch_bytes_roundtrip_and_size() -> None:
    rng = np.random.default_rng(8)
    ids = chunk_ids(2_000)
    merged = merged_over(place(ids, np.full(len(ids), 3), 5, rng))
    data = merged.to_bytes()
    assert MergedSketch.from_bytes(data) == merged
    assert len(data) < N_PRIME + 64  # one byte per register for tau < 256 (~10 KB at 10^4)


def test_no_chunk_id_or_key_is_held_or_exported() -> None:
    rng = np.random.default_rng(9)
    ids = chunk_ids(500)
    holdings = place(ids, np.full(len(ids), 2), 4, rng)
    kid = key_id_of(KEY)
    node = NodeSketch.from_registers(register_ids(holdings[0], KEY, N_PRIME), N_PRIME, kid)
    merged = merged_over(holdings)
    assert set(vars(node)) == {"key_id", "n_prime", "counts"}
    assert set(vars(merged)) == {"key_id", "n_prime", "tau", "counts"}
    for obj in (node, merged):
        blob = obj.to_bytes()
        assert KEY not in blob
        for cid in ids[:100]:
            assert bytes.fromhex(cid)[:8] not in blob and cid.encode()[:16] not in blob

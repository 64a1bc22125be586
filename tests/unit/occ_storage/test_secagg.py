"""Secure aggregation: masks cancel exactly in the sum; one masked vector looks uniform."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from occ_storage.health import merge_securely
from occ_storage.secagg import aggregate, mask_vector, pair_seed, prg_mask
from occ_storage.sketches import MergedSketch, NodeSketch, key_id_of

N_PRIME = 100_000


def secrets_for(n: int, rng: np.random.Generator) -> dict[tuple[int, int], bytes]:
    """One shared secret per unordered pair (in a deployment: a key agreement)."""
    return {
        (i, j): bytes(rng.integers(0, 256, size=32, dtype=np.uint8))
        for i in range(n)
        for j in range(i + 1, n)
    }


def seeds_of(i: int, n: int, secrets: dict[tuple[int, int], bytes]) -> dict[int, bytes]:
    return {
        j: pair_seed(secrets[min(i, j), max(i, j)], i, j, b"round-1") for j in range(n) if j != i
    }


def node_vectors(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    # node sketch counts: small non-negative uint16, mostly 0 and 1
    return [rng.poisson(0.3, size=N_PRIME).astype(np.uint16) for _ in range(n)]


def test_masked_sum_is_exact() -> None:
    rng = np.random.default_rng(1)
    n = 5
    secrets = secrets_for(n, rng)
    vectors = node_vectors(n, rng)
    masked = [mask_vector(i, vectors[i], seeds_of(i, n, secrets), n) for i in range(n)]
    total = aggregate(masked, n_nodes=n)
    assert total.dtype == np.uint32
    assert np.array_equal(total, np.sum(vectors, axis=0, dtype=np.uint32))


def test_one_masked_vector_is_indistinguishable_from_uniform() -> None:
    # Seeded, so deterministic. Bounds: chi-square of the top byte (256 cells, 10^5 values) and
    # Kolmogorov-Smirnov of value / 2^32 against U(0, 1), each at the 1% level; the unmasked
    # vector fails both at p < 1e-12.
    rng = np.random.default_rng(2)
    n = 4
    secrets = secrets_for(n, rng)
    vectors = node_vectors(n, rng)
    masked = mask_vector(2, vectors[2], seeds_of(2, n, secrets), n)
    for v, should_pass in ((masked, True), (vectors[2].astype(np.uint32), False)):
        top = np.bincount((v >> np.uint32(24)).astype(np.int64), minlength=256)
        chi_p = stats.chisquare(top).pvalue
        ks_p = stats.kstest(v.astype(np.float64) / 2.0**32, "uniform").pvalue
        if should_pass:
            assert chi_p > 0.01 and ks_p > 0.01
        else:
            assert chi_p < 1e-12 and ks_p < 1e-12


def test_masks_are_pairwise_and_per_round() -> None:
    secret = b"s" * 32
    assert pair_seed(secret, 1, 4) == pair_seed(secret, 4, 1)
    assert pair_seed(secret, 1, 4, b"r1") != pair_seed(secret, 1, 4, b"r2")
    assert pair_seed(secret, 1, 4) != pair_seed(secret, 1, 5)
    a, b = prg_mask(pair_seed(secret, 0, 1), 1_000), prg_mask(pair_seed(secret, 0, 1), 1_000)
    assert np.array_equal(a, b) and a.dtype == np.uint32


def test_a_missing_node_or_seed_is_refused() -> None:
    rng = np.random.default_rng(3)
    n = 3
    secrets = secrets_for(n, rng)
    vec = np.ones(10, dtype=np.uint16)
    seeds = seeds_of(0, n, secrets)
    del seeds[2]
    with pytest.raises(ValueError, match="no pair seed"):
        mask_vector(0, vec, seeds, n)
    masked = [mask_vector(i, vec, seeds_of(i, n, secrets), n) for i in range(n)]
    with pytest.raises(ValueError, match="all must report"):
        aggregate(masked[:2], n_nodes=n)
    # without the count check the partial sum is still masked: useless, not S
    assert not np.array_equal(aggregate(masked[:2]), 2 * vec.astype(np.uint32))


def test_merge_securely_equals_the_plain_merge() -> None:
    rng = np.random.default_rng(4)
    kid = key_id_of(bytes(range(32)))
    nodes = [NodeSketch(kid, 10_000, v[:10_000]) for v in node_vectors(6, rng)]
    secure = merge_securely(nodes, 10, round_secret=b"x" * 32, round_id=b"epoch-7")
    assert secure == MergedSketch.from_nodes(nodes, 10)

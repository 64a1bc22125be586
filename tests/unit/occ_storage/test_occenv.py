"""OCC toolkit: every formula against a seeded Monte-Carlo simulation.

Bound used throughout: an estimate from R simulated draws must lie within 4 standard errors of
the formula (a two-sided miss has probability 6e-5 per check if the formula is right), plus
1e-9 for the exact identities.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from occ_storage import occenv

R = 20_000
N = 60
SIZES = [20, 25, 30]


def random_holdings(n_items: int, sizes: list[int], reps: int, seed: int) -> np.ndarray:
    """(reps, N) number of parties holding each item; party i holds a uniform n_i-subset."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((reps, n_items), dtype=np.int64)
    for s in sizes:
        picked = np.argsort(rng.random((reps, n_items)), axis=1)[:, :s]
        np.put_along_axis(counts, picked, np.take_along_axis(counts, picked, axis=1) + 1, axis=1)
    return counts


@pytest.fixture(scope="module")
def holdings() -> np.ndarray:
    return random_holdings(N, SIZES, R, seed=11)


def within_4se(sample: np.ndarray, expected: float) -> bool:
    se = sample.std(ddof=1) / math.sqrt(sample.size)
    return bool(abs(sample.mean() - expected) <= 4 * se + 1e-9)


def var_within_4se(sample: np.ndarray, expected: float) -> bool:
    # se of a sample variance: sqrt((m4 - s^4) / R)
    d = sample - sample.mean()
    s2 = float((d**2).mean())
    se = math.sqrt(max(float((d**4).mean()) - s2 * s2, 1e-300) / sample.size)
    return abs(s2 - expected) <= 4 * se


def test_union_pmf_matches_moments_and_simulation(holdings: np.ndarray) -> None:
    pmf = occenv.union_pmf(N, SIZES)
    x = np.arange(N + 1)
    mean, var = occenv.union_moments(N, SIZES)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert pmf @ x == pytest.approx(mean, abs=1e-9)
    assert pmf @ x**2 - (pmf @ x) ** 2 == pytest.approx(var, abs=1e-9)
    assert mean == pytest.approx(N * (1 - math.prod(1 - s / N for s in SIZES)))
    union = (holdings >= 1).sum(axis=1)
    assert within_4se(union, mean) and var_within_4se(union.astype(float), var)
    freq = np.bincount(union, minlength=N + 1) / R
    se = np.sqrt(pmf * (1 - pmf) / R)
    assert np.all(np.abs(freq - pmf) <= 4 * se + 1e-4)


def test_intersection_pmf_matches_moments_and_simulation(holdings: np.ndarray) -> None:
    pmf = occenv.intersection_pmf(N, SIZES)
    x = np.arange(N + 1)
    mean, var = occenv.intersection_moments(N, SIZES)
    assert pmf @ x == pytest.approx(mean, abs=1e-9)
    assert pmf @ x**2 - (pmf @ x) ** 2 == pytest.approx(var, abs=1e-9)
    inter = (holdings == len(SIZES)).sum(axis=1)
    assert within_4se(inter, mean) and var_within_4se(inter.astype(float), var)
    freq = np.bincount(inter, minlength=N + 1) / R
    se = np.sqrt(pmf * (1 - pmf) / R)
    assert np.all(np.abs(freq - pmf) <= 4 * se + 1e-4)


@pytest.mark.parametrize("threshold", [1, 2, 3])
def test_at_least_moments_match_simulation(holdings: np.ndarray, threshold: int) -> None:
    mean, var = occenv.at_least_pmf_moments(N, SIZES, threshold)
    w = (holdings >= threshold).sum(axis=1).astype(float)
    assert within_4se(w, mean) and var_within_4se(w, var)
    k_pmf = occenv.poisson_binomial_pmf([s / N for s in SIZES])
    assert mean == pytest.approx(N * k_pmf[threshold:].sum())


def test_at_least_reduces_to_union_and_intersection() -> None:
    sizes = [7, 12, 30, 41]
    assert occenv.at_least_pmf_moments(50, sizes, 1) == pytest.approx(
        occenv.union_moments(50, sizes), abs=1e-9
    )
    assert occenv.at_least_pmf_moments(50, sizes, 4) == pytest.approx(
        occenv.intersection_moments(50, sizes), abs=1e-9
    )


def test_probability_of_reaching_a_target_matches_simulation(holdings: np.ndarray) -> None:
    for threshold, target in ((1, 50), (2, 24), (3, 5)):
        p = occenv.prob_at_least_target(N, SIZES, threshold, target)
        hits = ((holdings >= threshold).sum(axis=1) >= target).astype(float)
        # exact for T = 1 and T = m; T = 2 uses the Normal approximation, so allow 0.02 more
        slack = 0.0 if threshold in (1, 3) else 0.02
        assert abs(hits.mean() - p) <= 4 * math.sqrt(p * (1 - p) / R) + slack


def test_slo_shard_size_is_minimal_and_holds_in_simulation() -> None:
    n_items, parties, threshold, target, conf = 200, 3, 2, 150, 0.9
    n = occenv.slo_shard_size(n_items, parties, threshold, target, conf)
    assert occenv.prob_at_least_target(n_items, [n] * parties, threshold, target) >= conf
    assert occenv.prob_at_least_target(n_items, [n - 1] * parties, threshold, target) < conf
    sim = random_holdings(n_items, [n] * parties, 5_000, seed=12)
    hits = ((sim >= threshold).sum(axis=1) >= target).astype(float)
    # the Normal approximation may be off by ~0.02 near the boundary
    assert hits.mean() >= conf - 4 * math.sqrt(conf * (1 - conf) / 5_000) - 0.02
    # exact path (union): the returned size is minimal under the exact pmf
    n1 = occenv.slo_shard_size(100, 2, 1, 90, 0.95)
    assert occenv.union_pmf(100, [n1, n1])[90:].sum() >= 0.95
    assert occenv.union_pmf(100, [n1 - 1, n1 - 1])[90:].sum() < 0.95
    with pytest.raises(ValueError):
        occenv.slo_shard_size(100, 2, 3, 10, 0.95)


def placements(n_nodes: int, r: int, reps: int, seed: int) -> np.ndarray:
    """(reps, r) distinct nodes per chunk, uniform r-subsets."""
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((reps, n_nodes)), axis=1)[:, :r]


@pytest.mark.parametrize(("n_nodes", "failed", "r"), [(10, 3, 3), (6, 4, 2), (5, 5, 3), (8, 1, 2)])
def test_chunk_loss_matches_simulation(n_nodes: int, failed: int, r: int) -> None:
    q = occenv.chunk_loss_probability(n_nodes, failed, r)
    assert q == pytest.approx(math.comb(failed, r) / math.comb(n_nodes, r))
    lost = (placements(n_nodes, r, 100_000, seed=13) < failed).all(axis=1).astype(float)
    assert within_4se(lost, q) if q > 0 else lost.sum() == 0


def test_file_loss_matches_simulation() -> None:
    n_nodes, failed, r, c = 8, 3, 2, 6
    p = occenv.file_loss_probability(n_nodes, failed, r, c)
    chunks = placements(n_nodes, r, 60_000 * c, seed=14).reshape(60_000, c, r)
    lost_any = np.any(np.all(chunks < failed, axis=2), axis=1).astype(float)
    assert within_4se(lost_any, p)
    assert occenv.expected_lost_chunks(n_nodes, failed, r, c) == pytest.approx(
        c * occenv.chunk_loss_probability(n_nodes, failed, r)
    )


@pytest.mark.parametrize(("n_nodes", "k", "r", "c"), [(10, 4, 3, 5), (5, 2, 2, 3), (20, 6, 3, 8)])
def test_collusion_matches_simulation(n_nodes: int, k: int, r: int, c: int) -> None:
    h = occenv.hold_probability(n_nodes, k, r)
    assert h == pytest.approx(1 - math.comb(n_nodes - k, r) / math.comb(n_nodes, r))
    p = occenv.collusion_probability(n_nodes, k, r, c)
    assert p == pytest.approx(h**c)
    chunks = placements(n_nodes, r, 40_000 * c, seed=15).reshape(40_000, c, r)
    # colluders are nodes 0..k-1: they hold a chunk if any replica is among them
    whole_file = np.all(np.any(chunks < k, axis=2), axis=1).astype(float)
    assert within_4se(whole_file, p)

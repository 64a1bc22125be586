"""OCC probability toolkit: union, intersection and W>=T of random shards; loss; collusion; SLO sizing.

Setting (occ-storage.md §4): N items, m parties, party i holds a uniform random n_i-subset
(α_i = n_i / N), parties independent. Item-level placement of chunks on r of n nodes gives the
loss and collusion formulas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "at_least_pmf_moments",
    "chunk_loss_probability",
    "collusion_probability",
    "expected_lost_chunks",
    "file_loss_probability",
    "hold_probability",
    "intersection_moments",
    "intersection_pmf",
    "poisson_binomial_pmf",
    "prob_at_least_target",
    "slo_shard_size",
    "union_moments",
    "union_pmf",
]

F64 = npt.NDArray[np.float64]

#: Above this N the exact pmfs (O(m N n) work) give way to the Normal with exact moments.
EXACT_LIMIT = 5_000


def _check(n_items: int, sizes: Sequence[int]) -> list[int]:
    if n_items < 1:
        raise ValueError("need N >= 1 items")
    out = [int(s) for s in sizes]
    if not out:
        raise ValueError("need at least one party")
    if any(not 0 <= s <= n_items for s in out):
        raise ValueError("every shard size must be in 0..N")
    return out


def _hypergeom_matrix(n_items: int, draws: int, marked: F64) -> F64:
    """P(k of `draws` items fall in the marked set | |marked| = u) for each u (rows) and k."""
    k = np.arange(draws + 1)
    return np.asarray(
        stats.hypergeom.pmf(k[None, :], n_items, marked[:, None], draws), dtype=np.float64
    )


def union_pmf(n_items: int, shard_sizes: Sequence[int]) -> F64:
    """Exact pmf of the union size X (index x = 0..N): a positive Markov chain over parties,
    u -> u + k with probability C(N-u, k) C(u, n_i-k) / C(N, n_i) (occ-storage.md §4)."""
    sizes = _check(n_items, shard_sizes)
    pmf = np.zeros(n_items + 1)
    pmf[0] = 1.0
    u = np.arange(n_items + 1, dtype=np.float64)
    for n in sizes:
        trans = _hypergeom_matrix(n_items, n, n_items - u)  # k new items out of N - u unseen
        new = np.zeros_like(pmf)
        for k in range(n + 1):
            new[k:] += pmf[: n_items + 1 - k] * trans[: n_items + 1 - k, k]
        pmf = new
    out: F64 = pmf / pmf.sum()
    return out


def intersection_pmf(n_items: int, shard_sizes: Sequence[int]) -> F64:
    """Exact pmf of the intersection size Y (index y = 0..N): y -> k with probability
    C(y, k) C(N-y, n_i-k) / C(N, n_i), starting from y = n_1 (occ-storage.md §4)."""
    sizes = _check(n_items, shard_sizes)
    pmf = np.zeros(n_items + 1)
    pmf[sizes[0]] = 1.0
    y = np.arange(n_items + 1, dtype=np.float64)
    for n in sizes[1:]:
        trans = _hypergeom_matrix(n_items, n, y)  # k of the y common items drawn again
        new = np.zeros_like(pmf)
        new[: n + 1] = pmf @ trans
        pmf = new
    out: F64 = pmf / pmf.sum()
    return out


def _count_moments(n_items: int, q1: float, q2: float) -> tuple[float, float]:
    """Mean and variance of a count of N exchangeable indicators with P(one) = q1 and
    P(a given pair) = q2: Var = N q1 + N(N-1) q2 - N^2 q1^2."""
    mean = n_items * q1
    var = n_items * q1 + n_items * (n_items - 1) * q2 - mean * mean
    return mean, max(var, 0.0)


def union_moments(n_items: int, shard_sizes: Sequence[int]) -> tuple[float, float]:
    """E X = N(1 - Π(1-α_i)); Var X from the uncovered count with pair probability
    Π (N-n_i)(N-n_i-1) / (N(N-1)) (occ-storage.md §4)."""
    sizes = _check(n_items, shard_sizes)
    n = n_items
    q1 = math.prod((n - s) / n for s in sizes)
    q2 = math.prod((n - s) * (n - s - 1) / (n * (n - 1)) for s in sizes) if n > 1 else 0.0
    mean_v, var_v = _count_moments(n, q1, q2)
    return n - mean_v, var_v


def intersection_moments(n_items: int, shard_sizes: Sequence[int]) -> tuple[float, float]:
    """E Y = N Π α_i; Var Y with pair probability Π n_i(n_i-1) / (N(N-1)) (occ-storage.md §4)."""
    sizes = _check(n_items, shard_sizes)
    n = n_items
    q1 = math.prod(s / n for s in sizes)
    q2 = math.prod(s * (s - 1) / (n * (n - 1)) for s in sizes) if n > 1 else 0.0
    return _count_moments(n, q1, q2)


def poisson_binomial_pmf(probs: Sequence[float]) -> F64:
    """pmf of K = Σ Bernoulli(p_i), independent (the number of parties holding a given item)."""
    pmf = np.array([1.0])
    for p in probs:
        pmf = np.append(pmf * (1 - p), 0.0) + np.append(0.0, pmf * p)
    return pmf


def at_least_pmf_moments(
    n_items: int, shard_sizes: Sequence[int], threshold: int
) -> tuple[float, float]:
    """Mean and variance of W_{>=T}, the items held by at least T parties (occ-storage.md §4).

    E W = N P(K >= T), K Poisson-binomial(α). Var W = N p + N(N-1) P2 - N^2 p^2 with P2 the
    probability that two given items both reach T: per party the pair is held both / first
    only / second only / neither with probabilities n(n-1), n(N-n), n(N-n), (N-n)(N-n-1) over
    N(N-1), and the two counts (capped at T) are convolved over parties. T = 1 gives the
    union, T = m the intersection.
    """
    sizes = _check(n_items, shard_sizes)
    if not 1 <= threshold <= len(sizes):
        raise ValueError("threshold must be in 1..number of parties")
    n = n_items
    p = float(poisson_binomial_pmf([s / n for s in sizes])[threshold:].sum())
    if n == 1:
        return p, p * (1 - p)
    t = threshold
    joint = np.zeros((t + 1, t + 1))
    joint[0, 0] = 1.0
    denom = n * (n - 1)
    for s in sizes:
        both = s * (s - 1) / denom
        one = s * (n - s) / denom
        neither = (n - s) * (n - s - 1) / denom
        new = neither * joint
        shifted_a = np.zeros_like(joint)  # first item gains a holder (capped at T)
        shifted_a[1:, :] += joint[:-1, :]
        shifted_a[t, :] += joint[t, :]
        shifted_b = np.zeros_like(joint)
        shifted_b[:, 1:] += joint[:, :-1]
        shifted_b[:, t] += joint[:, t]
        shifted_ab = np.zeros_like(shifted_a)
        shifted_ab[:, 1:] += shifted_a[:, :-1]
        shifted_ab[:, t] += shifted_a[:, t]
        joint = new + one * shifted_a + one * shifted_b + both * shifted_ab
    p2 = float(joint[t, t])
    return _count_moments(n, p, p2)


def prob_at_least_target(
    n_items: int, shard_sizes: Sequence[int], threshold: int, target: int
) -> float:
    """P(W_{>=T} >= target). Exact for the union (T = 1) and the intersection (T = m) when
    N <= EXACT_LIMIT; otherwise Normal with the exact moments and a continuity correction."""
    sizes = _check(n_items, shard_sizes)
    if target <= 0:
        return 1.0
    if target > n_items:
        return 0.0
    if n_items <= EXACT_LIMIT and threshold in (1, len(sizes)):
        pmf = union_pmf(n_items, sizes) if threshold == 1 else intersection_pmf(n_items, sizes)
        return float(min(1.0, pmf[target:].sum()))
    mean, var = at_least_pmf_moments(n_items, sizes, threshold)
    if var <= 0:
        return 1.0 if mean >= target else 0.0
    return float(stats.norm.sf((target - 0.5 - mean) / math.sqrt(var)))


def slo_shard_size(
    n_items: int, n_parties: int, threshold: int, target: int, confidence: float = 0.95
) -> int:
    """Smallest shard size n (every party holds n random items) with
    P(W_{>=T} >= target) >= confidence (occ-storage.md §4), by bisection (monotone in n)."""
    if not 1 <= threshold <= n_parties:
        raise ValueError("threshold must be in 1..n_parties")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    if not 0 <= target <= n_items:
        raise ValueError("target must be in 0..N")

    def ok(n: int) -> bool:
        return prob_at_least_target(n_items, [n] * n_parties, threshold, target) >= confidence

    if not ok(n_items):
        raise ValueError("unreachable even with every party holding every item")
    lo, hi = 0, n_items
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _check_nodes(n_nodes: int, k: int, r: int) -> None:
    if not 1 <= r <= n_nodes:
        raise ValueError("replication r must be in 1..n_nodes")
    if not 0 <= k <= n_nodes:
        raise ValueError("k must be in 0..n_nodes")


def chunk_loss_probability(n_nodes: int, failed: int, r: int) -> float:
    """q_k = C(k, r) / C(n, r): a chunk on r distinct uniformly chosen nodes loses every
    replica when k given nodes fail (occ-storage.md §4)."""
    _check_nodes(n_nodes, failed, r)
    return math.comb(failed, r) / math.comb(n_nodes, r)


def expected_lost_chunks(n_nodes: int, failed: int, r: int, n_chunks: int) -> float:
    """c q_k: the expected number of lost chunks among c independently placed chunks."""
    return n_chunks * chunk_loss_probability(n_nodes, failed, r)


def file_loss_probability(n_nodes: int, failed: int, r: int, n_chunks: int) -> float:
    """1 - (1 - q_k)^c: a c-chunk file (chunks placed independently) loses at least one chunk."""
    q = chunk_loss_probability(n_nodes, failed, r)
    return -math.expm1(n_chunks * math.log1p(-q)) if q < 1 else 1.0


def hold_probability(n_nodes: int, colluders: int, r: int) -> float:
    """h_k = 1 - C(n-k, r) / C(n, r): k given nodes together hold a replica of a chunk."""
    _check_nodes(n_nodes, colluders, r)
    return 1.0 - math.comb(n_nodes - colluders, r) / math.comb(n_nodes, r)


def collusion_probability(n_nodes: int, colluders: int, r: int, n_chunks: int) -> float:
    """P = h_k^c: k colluding nodes together hold every chunk of a c-chunk file
    (occ-storage.md §4), chunks placed independently."""
    return hold_probability(n_nodes, colluders, r) ** n_chunks

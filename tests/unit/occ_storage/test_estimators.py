"""Estimators: exact identities, and the accuracy targets of occ-storage.md §3 on a reduced grid.

Reduced grid: N' = 10^4, λ ∈ {0.2, 1}, profiles "all r = 3" and "mixed", 100 seeded repetitions
a cell (each a new chunk set and placement; the estimand is the realised U, W>=3 and n_l).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from occ_storage.errors import SketchSaturatedError
from occ_storage.estimators import (
    SMALL_SKETCH_REGISTERS,
    bootstrap_profile,
    cramer_rao_bound,
    decompound,
    estimate_profile,
    linear_counting,
    linear_counting_variance,
    mle_profile,
    panjer_pmf,
    plugin_profile,
    relative_se_constant,
    required_registers,
)

N_PRIME = 10_000
TAU = 16
NODES = 10
REPS = 100
MIXED = {1: 0.05, 2: 0.15, 3: 0.6, 4: 0.15, 5: 0.05}
# heavy tail up to the node count (bench/_sketch_sim.py): mode at 3, geometric tail 4..10 holding .45
_TAIL = {r: 0.6 ** (r - 4) for r in range(4, NODES + 1)}
HEAVY = {1: 0.02, 2: 0.08, 3: 0.45, **{r: 0.45 * w / sum(_TAIL.values()) for r, w in _TAIL.items()}}


def draw(profile: str, u: int, rng: np.random.Generator) -> np.ndarray:
    if profile == "r3":
        return np.full(u, 3, dtype=np.int64)
    probs = HEAVY if profile == "heavy" else MIXED
    classes = np.array(list(probs))
    return np.repeat(classes, rng.multinomial(u, list(probs.values())))


def levels_of(replicas: np.ndarray, n_prime: int, tau: int, rng: np.random.Generator) -> np.ndarray:
    """The merged sketch of one placement: each chunk in a uniform register adds its replicas."""
    regs = rng.integers(0, n_prime, size=replicas.size)
    s = np.bincount(regs, weights=replicas, minlength=n_prime).astype(np.int64)
    return np.bincount(np.minimum(s, tau), minlength=tau + 1)


# --------------------------------------------------------------------------- identities


def test_decompounding_closed_forms() -> None:
    z = np.array([6000, 900, 700, 1500, 500, 300, 100, 0, 0, 0, 0])
    lam = decompound(z)
    h1, h2 = 900 / 6000, 700 / 6000
    assert lam[0] == pytest.approx(h1)
    assert lam[1] == pytest.approx(h2 - 0.5 * h1**2)


def test_decompounding_inverts_panjer_exactly() -> None:
    lam = np.zeros(TAU)
    lam[[0, 1, 2, 3, 4]] = [0.05, 0.15, 0.6, 0.15, 0.05]
    p = panjer_pmf(lam, TAU)
    assert p.sum() == pytest.approx(1.0)
    z = p * 1e12  # expected counts, scaled: the recursion is exact on them
    est = plugin_profile(np.round(z).astype(np.int64))
    assert est.n_hat[:5] / 1e12 == pytest.approx(lam[:5], rel=1e-6)
    assert est.union().estimate / 1e12 == pytest.approx(1.0, rel=1e-6)


def test_panjer_matches_simulated_register_law() -> None:
    # 2e5 registers of a compound Poisson law: each cell within 4 standard errors
    rng = np.random.default_rng(21)
    lam = np.zeros(TAU)
    lam[[0, 2, 4]] = [0.3, 0.5, 0.2]
    n = 200_000
    s = sum(l_cls * rng.poisson(lam[l_cls - 1], size=n) for l_cls in (1, 3, 5))
    freq = np.bincount(np.minimum(s, TAU), minlength=TAU + 1) / n
    p = panjer_pmf(lam, TAU)
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-6)


def test_linear_counting_and_its_fixed_set_variance() -> None:
    assert linear_counting(3679, 10_000) == pytest.approx(-10_000 * math.log(0.3679))
    z = np.zeros(TAU + 1, dtype=np.int64)
    z[0], z[3] = 3679, 10_000 - 3679
    est = plugin_profile(z)
    u = est.union().estimate
    # delta method minus diag(n) reproduces Whang et al.: N'(e^λ - λ - 1)
    assert est.union().se ** 2 == pytest.approx(linear_counting_variance(u, 10_000), rel=1e-9)


def test_saturated_sketch_is_reported() -> None:
    z = np.zeros(TAU + 1, dtype=np.int64)
    z[3] = 10_000
    for fn in (plugin_profile, mle_profile, decompound):
        with pytest.raises(SketchSaturatedError, match="resize"):
            fn(z)
    with pytest.raises(SketchSaturatedError):
        linear_counting(0, 10_000)


def test_sizing_rule() -> None:
    # spec: ±1% at λ <= 1 needs N' ≈ 28,000
    n = required_registers(0.01, load=1.0)
    assert 27_000 <= n <= 29_000
    assert required_registers(0.01, load=0.5) < n
    assert relative_se_constant(1.0) / math.sqrt(10_000) == pytest.approx(0.0085, abs=5e-5)


def test_mle_equals_plugin_when_the_plugin_is_feasible() -> None:
    # with every class free and none dropped the model is exactly identified: the MLE is the
    # decompounding estimate whenever that is non-negative
    tau = 8
    lam = np.array([0.05, 0.15, 0.5, 0.15, 0.05, 0.02, 0.01, 0.01])
    z = np.round(panjer_pmf(lam, tau) * 1e7).astype(np.int64)
    plug = plugin_profile(z)
    assert np.all(plug.n_hat > 0)
    mle = mle_profile(z, drop_lr=0.0)
    assert mle.n_hat == pytest.approx(plug.n_hat, rel=1e-5)


def test_empty_sketch() -> None:
    z = np.zeros(TAU + 1, dtype=np.int64)
    z[0] = N_PRIME
    for est in (plugin_profile(z), mle_profile(z)):
        assert est.union().estimate == 0.0 and est.at_least(3).estimate == 0.0


# --------------------------------------------------------------------------- reduced grid


@dataclass
class Cell:
    ratio_u: float
    ratio_w: float
    naive_u: float
    naive_w: float
    cover_u: float
    cover_w: float
    nl_ratio: dict[int, float]


def run_cell(method: str, profile: str, load: float, seed: int) -> Cell:
    rng = np.random.default_rng([seed, int(load * 100), len(profile)])
    c = relative_se_constant(load) / math.sqrt(N_PRIME)
    eu, ew, nu, nw, cu, cw = [], [], [], [], [], []
    probs = {3: 1.0} if profile == "r3" else MIXED
    el: dict[int, list[float]] = {l_cls: [] for l_cls in probs}
    for _ in range(REPS):
        rep = draw(profile, round(load * N_PRIME), rng)
        z = levels_of(rep, N_PRIME, TAU, rng)
        u, w = rep.size, int((rep >= 3).sum())
        est = mle_profile(z, max_replication=NODES) if method == "mle" else plugin_profile(z)
        iu, iw = est.union(), est.at_least(3)
        eu.append((iu.estimate - u) / u)
        ew.append((iw.estimate - w) / w)
        cu.append(iu.contains(u))
        cw.append(iw.contains(w))
        nu.append((N_PRIME - z[0] - u) / u)  # the seed's union: N' - Z_0
        nw.append((z[3:].sum() - w) / w)  # the seed's W>=3: Σ_{s>=3} Z_s
        true_l = np.bincount(rep, minlength=TAU)
        for l_cls in probs:
            el[l_cls].append((est.n_hat[l_cls - 1] - true_l[l_cls]) / true_l[l_cls])

    def rr(x: list[float]) -> float:
        return math.sqrt(float(np.mean(np.square(x)))) / c

    nl = {
        l_cls: math.sqrt(float(np.mean(np.square(v))))
        / math.sqrt((1 + load) / (probs[l_cls] * N_PRIME))
        for l_cls, v in el.items()
    }
    return Cell(rr(eu), rr(ew), rr(nu), rr(nw), float(np.mean(cu)), float(np.mean(cw)), nl)


GRID = [(p, lam) for p in ("r3", "mixed") for lam in (0.2, 1.0)]


@pytest.fixture(scope="module")
def grid() -> dict[tuple[str, str, float], Cell]:
    return {
        (m, p, lam): run_cell(m, p, lam, seed=2024) for m in ("mle", "plugin") for p, lam in GRID
    }


@pytest.mark.parametrize("method", ["mle", "plugin"])
def test_rmse_ratio_targets_and_the_naive_readout_fails(
    grid: dict[tuple[str, str, float], Cell], method: str
) -> None:
    # Target: relative RMSE / (c(λ)/√N') <= 1.2 in every cell and <= 1.05 as the RMS over
    # the grid. With 100 repetitions a cell's RMSE is uncertain by about 7%, so 1.2 per cell
    # leaves about 2.5 sd for a correct estimator at ratio 1.0.
    cells = [grid[method, p, lam] for p, lam in GRID]
    ratios = [x for c in cells for x in (c.ratio_u, c.ratio_w)]
    assert max(ratios) <= 1.2
    assert math.sqrt(np.mean(np.square(ratios))) <= 1.05
    # the seed's read-outs on the same sketches are far outside (ratios of 10 and more)
    assert min(x for c in cells for x in (c.naive_u, c.naive_w)) > 5.0


def test_interval_coverage_targets(grid: dict[tuple[str, str, float], Cell]) -> None:
    # Target: >= 0.90 in every cell and pooled in [0.93, 0.97]. With 100 repetitions a correct
    # 95% interval falls below 0.90 with probability ~1.5% per cell; pooled over 800 intervals
    # (U and W are correlated) its sd is ~1 point.
    for method in ("mle", "plugin"):
        covers = [
            x
            for p, lam in GRID
            for x in (grid[method, p, lam].cover_u, grid[method, p, lam].cover_w)
        ]
        assert min(covers) >= 0.90, method
        if method == "plugin":
            assert 0.93 <= float(np.mean(covers)) <= 0.97
        else:
            # The MLE's model-averaged interval is conservative on "all r = 3" (it keeps some
            # weight on spurious 6- and 9-replica classes), so this two-profile grid sits
            # slightly above 0.97; over the full grid of bench/sketch_accuracy.py the pooled
            # coverage is inside [0.93, 0.97] (bench/README.md).
            assert 0.93 <= float(np.mean(covers)) <= 0.99


def test_replica_class_targets(grid: dict[tuple[str, str, float], Cell]) -> None:
    # Target: relative RMSE of n̂_l <= 1.2 sqrt((1+λ)/(p_l N')) for classes with p_l >= 1%.
    # The MLE meets it for every class except the 5% class l = 5 of "mixed": register values
    # of 5 come more often from colliding 2+3 or 1+4 chunks than from 5-replica chunks, and
    # the Cramér-Rao bound itself is 1.53-1.59 there (test_cramer_rao_bound_exceeds_...,
    # bench/README.md); the test pins that shortfall at <= 2.5 so a regression still shows.
    for p, lam in GRID:
        nl = grid["mle", p, lam].nl_ratio
        for l_cls, ratio in nl.items():
            assert ratio <= (2.5 if (p, l_cls) == ("mixed", 5) else 1.2), (p, lam, l_cls)


def test_mle_beats_plugin_on_w(grid: dict[tuple[str, str, float], Cell]) -> None:
    for p, lam in GRID:
        assert grid["mle", p, lam].ratio_w < grid["plugin", p, lam].ratio_w


def test_bootstrap_covers_small_counts() -> None:
    # U = 50 chunks on N' = 1,000 (mixed): the Normal interval is unreliable here. The
    # parametric bootstrap's 95% interval must cover U in >= 90% of 60 seeded repetitions.
    rng = np.random.default_rng(31)
    hits = 0
    for _ in range(60):
        rep = draw("mixed", 50, rng)
        z = levels_of(rep, 1_000, TAU, rng)
        est = bootstrap_profile(z, rng, reps=300)
        hits += est.union().contains(rep.size)
    assert hits / 60 >= 0.90
    z = levels_of(draw("mixed", 50, rng), 1_000, TAU, rng)
    assert estimate_profile(z, rng=rng, max_replication=None).method == "bootstrap"
    z = levels_of(draw("mixed", 5_000, rng), N_PRIME, TAU, rng)
    assert estimate_profile(z, max_replication=None).method == "mle"
    # with a bound, "auto" calibrates the MLE's intervals by its bootstrap at every size
    assert estimate_profile(z, max_replication=NODES).method == "bootstrap"


# --------------------------------------------------------------------------- small sketches


def test_small_sketch_intervals_cover() -> None:
    # N' = 10^3, λ = 2 (135 empty registers): the support selection is biased there and the
    # averaged Wald interval covered U in only 0.855-0.89 of the bench's runs. The
    # selection-robust hull must cover U and W>=3 in >= 90% of 200 seeded repetitions for both
    # profiles (the target per cell; its estimated true coverage there is ~0.94, which falls
    # below 0.90 at 200 repetitions with probability ~1%).
    for profile in ("mixed", "heavy"):
        rng = np.random.default_rng([77, len(profile)])
        hit_u = hit_w = 0
        for _ in range(200):
            rep = draw(profile, 2_000, rng)
            z = levels_of(rep, 1_000, TAU, rng)
            est = mle_profile(z, max_replication=NODES)
            hit_u += est.union().contains(rep.size)
            hit_w += est.at_least(3).contains(int((rep >= 3).sum()))
        assert hit_u / 200 >= 0.90, (profile, hit_u)
        assert hit_w / 200 >= 0.90, (profile, hit_w)


def test_hull_only_widens_and_only_in_small_sketches() -> None:
    rng = np.random.default_rng(8)
    small = mle_profile(
        levels_of(draw("heavy", 2_000, rng), 1_000, TAU, rng), max_replication=NODES
    )
    assert small.alternatives  # the full-support fit at least
    for iv, a in (
        (small.union(), np.ones(TAU)),
        (small.at_least(3), (np.arange(1, TAU + 1) >= 3) * 1.0),
    ):
        se = math.sqrt(a @ small.cov @ a)
        assert iv.lo <= iv.estimate - 1.959 * se or iv.lo == small.n_prime - small.level_counts[0]
        assert iv.hi >= iv.estimate + 1.959 * se
        assert iv.lo <= iv.estimate <= iv.hi
    f = small.fraction_at_least(3)
    assert 0.0 <= f.lo <= f.estimate <= f.hi <= 1.0
    big_n = 2 * SMALL_SKETCH_REGISTERS
    big = mle_profile(levels_of(draw("heavy", big_n, rng), big_n, TAU, rng), max_replication=NODES)
    assert big.alternatives == ()


# --------------------------------------------------------------------------- Cramér-Rao bound


def _loads(probs: dict[int, float], load: float) -> np.ndarray:
    lam = np.zeros(TAU)
    for l_cls, p in probs.items():
        lam[l_cls - 1] = p * load
    return lam


def _crb_ratio(probs: dict[int, float], load: float, l_cls: int, n_prime: int = N_PRIME) -> float:
    """CRB on the relative RMSE of n̂_l over the target scale sqrt((1+λ)/(p_l N'))."""
    lam = _loads(probs, load)
    bound = cramer_rao_bound(lam, n_prime)
    n_l = lam[l_cls - 1] * n_prime
    return (
        math.sqrt(bound[l_cls - 1, l_cls - 1])
        / n_l
        / math.sqrt((1 + load) / (probs[l_cls] * n_prime))
    )


def test_cramer_rao_bound_is_attained_by_the_support_oracle_fit() -> None:
    # The bound is the asymptotic error variance of the MLE that knows the support. Mixed at
    # N' = 10^4, λ = 1, 150 seeded repetitions: the RMSE of the oracle fit for each class is
    # within [0.8, 1.25] of the bound's sd (a 150-repetition RMSE is uncertain by ~6%).
    rng = np.random.default_rng(41)
    lam = _loads(MIXED, 1.0)
    sd = np.sqrt(np.diag(cramer_rao_bound(lam, N_PRIME)))[:5]
    fixed = lam == 0
    err = []
    for _ in range(150):
        rep = draw("mixed", N_PRIME, rng)
        z = levels_of(rep, N_PRIME, TAU, rng)
        fit = mle_profile(z, drop_lr=0.0, max_replication=5).n_hat
        assert np.all(fit[fixed] == 0)
        err.append(fit[:5] - np.bincount(rep, minlength=6)[1:6])
    rmse = np.sqrt(np.mean(np.square(err), axis=0))
    assert np.all((0.8 * sd <= rmse) & (rmse <= 1.25 * sd)), (rmse, sd)


def test_cramer_rao_bound_exceeds_the_n_l_target_for_minor_classes() -> None:
    # The n̂_l target 1.2 sqrt((1+λ)/(p_l N')) is out of reach of any unbiased estimator where
    # the bound itself is above it: mixed l = 5 and heavy l = 6..9, at every load of the grid
    # (the ratio does not depend on N'). Where it is below (mixed l = 1..4), the tests above
    # hold the MLE to the target.
    for load in (0.05, 0.2, 0.5, 1.0, 2.0):
        assert _crb_ratio(MIXED, load, 5) > 1.5
        for l_cls in (6, 7, 8, 9):
            assert _crb_ratio(HEAVY, load, l_cls) > 1.6
        for l_cls in (1, 2, 3, 4):
            assert _crb_ratio(MIXED, load, l_cls) < 1.1
        assert _crb_ratio(MIXED, load, 5, n_prime=1_000) == pytest.approx(
            _crb_ratio(MIXED, load, 5)
        )
    # a single uncensored class is recovered exactly (U = Σ S_j / 3): the bound is ~0
    assert _crb_ratio({3: 1.0}, 0.2, 3) < 0.01
    with pytest.raises(ValueError):
        cramer_rao_bound(np.array([-0.1, 0.2]), 100)

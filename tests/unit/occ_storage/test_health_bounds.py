"""Issue 12 items 5-9: node-count invariance, two-sided intervals, overload, tiny sketches.

Every statistical test is seeded and states its bound and number of repetitions.
"""

from __future__ import annotations

import hashlib
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from bench._sketch_sim import PROFILES, TAU, merged_levels
from occ_storage.errors import SketchSaturatedError
from occ_storage.estimators import (
    estimate_profile,
    recommended_registers,
    replication_bound,
)
from occ_storage.health import health_report, merged_sketch_from_chunks
from occ_storage.sketches import MergedSketch, key_id_of
from workers.services import health as worker_health
from workers.settings import Settings

KEY = bytes(range(32))


def _ids(n: int, salt: str) -> list[str]:
    return [hashlib.sha256(f"{salt}:{i}".encode()).hexdigest() for i in range(n)]


def _spread(ids: list[str], r: int, n_nodes: int, rng: np.random.Generator) -> dict[str, Any]:
    # r distinct uniform nodes a chunk: the first r of a random permutation, for all chunks at once
    picks = np.argsort(rng.random((len(ids), n_nodes)), axis=1)[:, :r]
    held = np.zeros((len(ids), n_nodes), dtype=bool)
    held[np.arange(len(ids))[:, None], picks] = True
    return {f"n{v}": [ids[i] for i in np.flatnonzero(held[:, v])] for v in range(n_nodes)}


def _worker_report(num_nodes: int, merged: MergedSketch, stored: int) -> dict[str, Any]:
    rt = SimpleNamespace(settings=Settings(num_nodes=num_nodes, n_prime=merged.n_prime, tau=10))
    meta = {"nodes": [{"chunks": stored}], "max_requested_r": 3}
    return worker_health.report(rt, merged, meta)  # type: ignore[arg-type]


def test_estimates_do_not_depend_on_the_node_count() -> None:
    """Item 5: same chunks (r = 3) and key, N = 3 vs N = 50 nodes, N' = 10^4, λ = 0.05..2, 200
    seeded repetitions: the /status report of the workers is identical in every repetition (the
    bound is replication_bound(3) = 4 in both, from the manifests; before: N was the bound and
    the estimates differed in most repetitions)."""
    rng = np.random.default_rng(20261203)
    n_prime, loads = 10_000, (0.05, 0.2, 0.5, 1.0, 2.0)
    differ = 0
    for rep in range(200):
        u = round(loads[rep % len(loads)] * n_prime)
        ids = _ids(u, f"inv{rep}")
        key = hashlib.sha256(f"key {rep}".encode()).digest()
        few = merged_sketch_from_chunks(_spread(ids, 3, 3, rng), key, n_prime, 10)
        many = merged_sketch_from_chunks(_spread(ids, 3, 50, rng), key, n_prime, 10)
        assert few == many  # S depends only on the chunk set and the replica counts
        differ += _worker_report(3, few, 3 * u) != _worker_report(50, many, 3 * u)
    assert differ == 0


def _misses(profile: str, reps: int, seed: int, loads: tuple[float, ...]) -> dict[str, float]:
    """Share of truths below / above the published 95% intervals of Û and Ŵ≥3 (the path
    /status takes: `estimate_profile` "auto" with the bound of the profile's requested r)."""
    n_prime = 10_000
    prof = PROFILES[profile]
    bound = replication_bound(prof.requested_r)
    out = {"u_lo": 0.0, "u_hi": 0.0, "w_lo": 0.0, "w_hi": 0.0}
    for lam in loads:
        rng = np.random.default_rng([seed, int(lam * 100)])
        for _ in range(reps):
            rep = prof.draw(round(lam * n_prime), rng)
            _, levels = merged_levels(rep, n_prime, TAU, rng)
            est = estimate_profile(levels, max_replication=bound, rng=rng)
            iu, iw = est.union(), est.at_least(3)
            u, w = rep.size, int((rep >= 3).sum())
            out["u_lo"] += u < iu.lo
            out["u_hi"] += u > iu.hi
            out["w_lo"] += w < iw.lo
            out["w_hi"] += w > iw.hi
    return {k: v / (reps * len(loads)) for k, v in out.items()}


@pytest.mark.parametrize(
    ("profile", "loads"), [("r3", (0.5, 1.0, 2.0)), ("failed", (0.05, 0.2, 0.5, 1.0, 2.0))]
)
def test_interval_misses_are_two_sided_within_item_6(
    profile: str, loads: tuple[float, ...]
) -> None:
    """Item 6: N' = 10^4, 200 seeded repetitions a λ, each side of the 95% interval of Û and of
    Ŵ≥3 misses in 1.5-3.5% of the repetitions. With 1,000 repetitions a correct side (2.5%) has
    sd 0.49%, so the band is ±2 sd (600 for r3: ±1.6 sd). r3 is tested at λ >= 0.5 only: at
    λ <= 0.2 the constrained MLE of an all-r3 set is exact (registers hold 0, 3, 6, ... and no
    value reaches τ, so Û = ΣS/3 = U) and its interval cannot miss.

    Before (the MLE's symmetric Wald interval): r3 missed 0.3% below / 3.8% above, the failed
    profile's Û 1.0% / 2.9% (Û biased low by ~0.2 sd: a spurious 4-replica class absorbs 1+3
    and 2+2 collisions; r3's error comes from the registers censored at τ, right-skewed and
    lattice-valued). The bootstrap's basic intervals follow that skew.

    For r3 only the upper side is held to the band: its lower bound is nearly certain (a
    register censored at τ holds at least 6 three-replica chunks, so Û - U cannot exceed the
    all-six reading), a correct interval can hardly miss below, and the lower side is held to
    <= 3.5% only (measured 1.0% below / 2.0% above on this seed)."""
    m = _misses(profile, 200, 7, loads)
    print(profile, m)
    for side, value in m.items():
        low = 0.0 if profile == "r3" and side.endswith("_lo") else 0.015
        assert low <= value <= 0.035, (side, m)


def _mixed_reports(n_prime: int, load: float, reps: int, seed: int) -> list[tuple[Any, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(reps):
        rep = PROFILES["mixed"].draw(round(load * n_prime), rng)
        s, _ = merged_levels(rep, n_prime, 10, rng)
        merged = MergedSketch.from_sum(s, n_prime, key_id_of(KEY), 10)
        try:
            r = health_report(
                merged, 3, 0.99, max_replication=replication_bound(5), stored_chunks=int(rep.sum())
            )
        except SketchSaturatedError:
            continue
        out.append((r, float((rep >= 3).mean())))
    return out


@pytest.mark.parametrize(("n_prime", "load"), [(1_000, 8.0), (1_000, 4.0), (10_000, 4.0)])
def test_an_overloaded_sketch_says_so(n_prime: int, load: float) -> None:
    """Item 7: mixed profile, 60 seeded repetitions. Every report that is not saturated
    (Z_0 = 0 raises) is flagged overloaded, its SLO verdict is "unknown", no repair is
    recommended, its f(>=3) interval contains the truth (0.80), and it recommends an N' of the
    sizing rule for the stored replicas. Before: f = 1.0 with CI [1.0, 1.0] and SLO met."""
    reports = _mixed_reports(n_prime, load, 60, 11)
    assert reports
    for rep, truth in reports:
        assert rep["overloaded"] is True
        assert rep["slo"]["met"] == "unknown" and rep["repair_recommended"] is False
        lo, hi = rep["slo"]["ci95"]
        assert lo <= truth <= hi
        assert rep["sizing"]["recommended_n_prime"] >= max(27_000, n_prime * load)


def test_the_spec_grid_is_not_overloaded() -> None:
    """λ = 2 at N' = 10^3 (the grid's most loaded cell, about 135 empty registers): 60 seeded
    repetitions, none flagged."""
    reports = _mixed_reports(1_000, 2.0, 60, 12)
    assert len(reports) == 60 and not any(r["overloaded"] for r, _ in reports)
    assert recommended_registers(0) == recommended_registers(20_000) > 27_000


@pytest.mark.parametrize("max_r", [3, 4])
def test_tiny_sketch_collision_respects_the_bound(max_r: int) -> None:
    """Item 8: U = 20 chunks at r = 3, N' = 10^4, two of them in one register (value 6). With
    max_replication 3 (or 4) there is no 6-replica chunk, Û's interval contains 20, and no
    interval has width 0 (the count is not certain: a 6 could be 1 + 2 + 3)."""
    z = np.zeros(11, dtype=np.int64)
    z[3], z[6] = 18, 1
    z[0] = 10_000 - 19
    merged = MergedSketch.from_sum(
        np.repeat(np.arange(11), z).astype(np.uint32), 10_000, key_id_of(KEY), 10
    )
    rep = health_report(merged, 3, 0.99, max_replication=max_r)
    assert rep["method"] == "bootstrap"
    lo, hi = rep["union_size"]["ci95"]
    assert lo <= 20 <= hi and hi > lo
    six = rep["replica_classes"][5]
    assert six["estimate"] < 0.5, six
    for c in rep["replica_classes"] + rep["at_least"] + [rep["union_size"]]:
        assert c["estimate"] >= 0 and c["ci95"][0] >= 0 and c["ci95"][1] > c["ci95"][0], c


@pytest.mark.parametrize("u", [5, 20, 50])
@pytest.mark.parametrize("threshold", [1, 2, 3, 4])
def test_tiny_sketches_are_never_negative_and_cover(u: int, threshold: int) -> None:
    """Items 8-9: U <= 50 (mixed profile), N' = 10^4, T = 1..4, 40 seeded repetitions: published
    counts and bounds are never negative, zero-width intervals never appear (no repetition here
    has every register at value 1), and the 95% interval of Ŵ_{>=T} contains the truth in >= 85%
    (a correct interval misses > 15% of 40 with probability < 1e-4)."""
    rng = np.random.default_rng([u, threshold])
    covered = 0
    for _ in range(40):
        rep = PROFILES["mixed"].draw(u, rng)
        s, _ = merged_levels(rep, 10_000, 10, rng)
        merged = MergedSketch.from_sum(s, 10_000, key_id_of(KEY), 10)
        r = health_report(merged, threshold, 0.99, max_replication=replication_bound(5))
        blocks = r["replica_classes"] + r["at_least"] + [r["union_size"]]
        for c in blocks:
            assert c["estimate"] >= 0 and c["ci95"][0] >= 0 and c["ci95"][1] > c["ci95"][0], c
        truth = int((rep >= threshold).sum())
        if threshold == 1:
            lo, hi = r["union_size"]["ci95"]
        else:
            lo, hi = r["at_least"][threshold - 2]["ci95"]
        covered += lo <= truth <= hi
    assert covered >= 34, covered


def test_only_a_certain_count_gets_a_zero_width_interval() -> None:
    """Registers of value 1 only: each holds one 1-replica chunk, so the count is certain."""
    s = np.zeros(10_000, dtype=np.uint32)
    s[:7] = 1
    merged = MergedSketch.from_sum(s, 10_000, key_id_of(KEY), 10)
    rep = health_report(merged, 1, 0.5, max_replication=3)
    assert rep["union_size"]["ci95"] == [7.0, 7.0]
    est = estimate_profile([9_993, 7, 0], max_replication=1)
    assert math.isclose(est.union().estimate, 7.0)

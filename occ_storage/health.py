"""Network health from the merged LCRS sketch: the figures /status shows, with 95% intervals."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from occ_storage.errors import SketchMismatchError
from occ_storage.estimators import (
    Interval,
    ProfileEstimate,
    estimate_profile,
    recommended_registers,
)
from occ_storage.secagg import aggregate, mask_vector, pair_seed
from occ_storage.sketches import MergedSketch, NodeSketch, key_id_of, register_ids

__all__ = [
    "health_report",
    "merge_securely",
    "merged_sketch_from_chunks",
    "merged_sketch_from_registers",
    "node_sketches_from_chunks",
    "overload_of",
]

CONFIDENCE = 0.95
#: The sketch is "overloaded" (too loaded to know) when fewer registers than this are empty
#: (sd of ln Z_0 above 1/sqrt(50) = 14%) or the load λ̂ = -ln(Z_0/N') exceeds OVERLOAD_LOAD;
#: the accuracy targets of occ-storage.md §3 are validated up to λ = 2.
OVERLOAD_MIN_EMPTY = 50
OVERLOAD_LOAD = 3.0


def node_sketches_from_chunks(
    node_chunks: Mapping[str, Iterable[str | bytes]], key: bytes, n_prime: int
) -> dict[str, NodeSketch]:
    """Build each node's sketch from the chunk ids it holds (register_ids + one bincount)."""
    kid = key_id_of(key)
    return {
        node: NodeSketch.from_registers(register_ids(chunks, key, n_prime), n_prime, kid)
        for node, chunks in node_chunks.items()
    }


def merged_sketch_from_registers(
    node_registers: Mapping[str, npt.ArrayLike], key_id: bytes, n_prime: int, tau: int
) -> MergedSketch:
    """Merge nodes given the stored register ids of their chunks (computed at ingest)."""
    if not node_registers:
        return MergedSketch(key_id, n_prime, tau, np.zeros(n_prime, dtype=np.uint32))
    sketches = (NodeSketch.from_registers(r, n_prime, key_id) for r in node_registers.values())
    return MergedSketch.from_nodes(sketches, tau)


def merged_sketch_from_chunks(
    node_chunks: Mapping[str, Iterable[str | bytes]], key: bytes, n_prime: int, tau: int
) -> MergedSketch:
    """Build every node's sketch from `{node_id: [chunk_id, ...]}` and merge (used by the API)."""
    sketches = node_sketches_from_chunks(node_chunks, key, n_prime)
    if not sketches:
        return MergedSketch(key_id_of(key), n_prime, tau, np.zeros(n_prime, dtype=np.uint32))
    return MergedSketch.from_nodes(sketches.values(), tau)


def merge_securely(
    sketches: Sequence[NodeSketch], tau: int, round_secret: bytes, round_id: bytes = b""
) -> MergedSketch:
    """Merge node sketches through secure aggregation (Bonawitz et al. 2017), all in one process.

    Each pair's secret is derived from `round_secret` here; in a deployment each node runs
    `secagg.mask_vector` itself with secrets agreed with its peers, and only masked vectors
    reach the aggregator. The result equals `MergedSketch.from_nodes(sketches, tau)`.
    """
    if not sketches:
        raise ValueError("no node sketch to merge")
    first = sketches[0]
    n = len(sketches)
    for s in sketches[1:]:
        if (s.key_id, s.n_prime) != (first.key_id, first.n_prime):
            raise SketchMismatchError("node sketches differ in key id or N'")

    def secret(i: int, j: int) -> bytes:
        lo, hi = min(i, j), max(i, j)
        return hashlib.blake2b(
            f"{lo}:{hi}".encode(), key=round_secret[:64], digest_size=32, person=b"occ-pair"
        ).digest()

    masked = []
    for i, sk in enumerate(sketches):
        seeds = {j: pair_seed(secret(i, j), i, j, round_id) for j in range(n) if j != i}
        masked.append(mask_vector(i, sk.counts, seeds, n))
    total = aggregate(masked, n_nodes=n)
    return MergedSketch.from_sum(total, first.n_prime, first.key_id, tau)


def _num(x: float) -> float | None:
    """A JSON-safe float: NaN and infinities become None."""
    return float(x) if math.isfinite(x) else None


def _interval(
    iv: Interval, ndigits: int = 6, *, step: float = 0.0, ceiling: float = math.inf
) -> dict[str, Any]:
    """Publish an interval. Counts (`step` = 1 chunk, or 1/Û for fractions) are never below 0,
    and an interval of width 0 is widened by one step, within [0, `ceiling`]: it is passed
    `step` > 0 only where the count is not certain (see `_certain`)."""
    # A basic-bootstrap interval may sit beside a biased point estimate; a reader expects the
    # published interval to contain the published estimate, so widen it to do so.
    lo, hi, est = iv.lo, iv.hi, iv.estimate
    if math.isfinite(est):
        lo, hi = min(lo, est), max(hi, est)
    if step > 0:
        est, lo, hi = max(est, 0.0), max(lo, 0.0), max(hi, 0.0)
        if hi - lo < step / 2:
            lo, hi = max(lo - step, 0.0), min(hi + step, ceiling)
    return {
        "estimate": _num(round(est, ndigits)),
        "se": _num(round(iv.se, ndigits)),
        "ci95": [_num(round(lo, ndigits)), _num(round(hi, ndigits))],
        "estimated": True,
    }


def _certain(levels: npt.NDArray[np.int64], max_replication: int | None) -> bool:
    """Whether the sketch determines the profile: every occupied register holds value 1 (one
    chunk with one replica), or no chunk has more than one replica and nothing is censored."""
    if int(levels[2:].sum()) == 0:
        return True
    return max_replication == 1 and int(levels[-1]) == 0


def _unknown(entry: dict[str, Any], lo: float, hi: float | None) -> dict[str, Any]:
    """An overloaded sketch's interval: the bounds the sketch makes certain, nothing tighter."""
    return {**entry, "ci95": [lo, hi], "overloaded": True}


def _verdict(iv: Interval, slo: float) -> Literal["yes", "no", "uncertain"]:
    if iv.lo >= slo:
        return "yes"
    if iv.hi < slo:
        return "no"
    return "uncertain"


def overload_of(levels: npt.ArrayLike) -> dict[str, Any]:
    """The load check of the published sketch: {"overloaded", "load", "empty_registers"}."""
    z = np.asarray(levels, dtype=np.int64)
    n_prime, z0 = int(z.sum()), int(z[0])
    load = -math.log(z0 / n_prime) if z0 > 0 else math.inf
    return {
        "overloaded": bool(z0 < OVERLOAD_MIN_EMPTY or load > OVERLOAD_LOAD),
        "load": _num(round(load, 6)),
        "empty_registers": z0,
        "min_empty_registers": OVERLOAD_MIN_EMPTY,
        "max_load": OVERLOAD_LOAD,
    }


def health_report(
    merged: MergedSketch,
    replication_target: int,
    slo_fraction: float,
    *,
    max_replication: int | None,
    stored_chunks: int | None = None,
    method: Literal["auto", "mle", "plugin", "bootstrap"] = "auto",
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Turn the merged sketch into the /status figures (plain JSON types).

    Returns the exact `level_counts` Z_0..Z_tau of the published sketch and, each with a 95%
    interval and "estimated": true, Û (linear counting, Whang et al. 1990), the average
    replication (Σ l n̂_l)/Û, n̂_l for l < tau and Ŵ_{>=T} with f̂ = Ŵ/Û for T = 2..tau-1
    (decompounding / constrained MLE, occ-storage.md §3; `estimators.estimate_profile`).
    The SLO block compares f̂ for T = `replication_target` with `slo_fraction`: "met" is "yes"
    when the interval lies above it, "no" when below, else "uncertain";
    `repair_recommended` is true when the upper bound is below the SLO.

    `max_replication` (required) is the largest replica count a chunk can have
    (`estimators.replication_bound` of the largest requested replication factor), never the
    node count: the figures depend only on the chunk set and the key.

    Overload (`overload_of`: fewer than OVERLOAD_MIN_EMPTY empty registers or λ̂ >
    OVERLOAD_LOAD): "overloaded" is true, every interval is replaced by the bounds the sketch
    makes certain (Û >= occupied registers, fractions in [0, 1]), the SLO verdict is "unknown"
    and no repair is recommended. `sizing.recommended_n_prime` is the N' of the spec's sizing
    rule (`estimators.recommended_registers`) for Û's upper bound, or for `stored_chunks` (an
    upper bound on the distinct chunks, e.g. the stored replicas) when overloaded. Raises
    SketchSaturatedError when Z_0 = 0.
    """
    if not 1 <= replication_target <= merged.tau:
        raise ValueError(f"replication target must be in 1..tau={merged.tau} (raise TAU)")
    if not 0.0 <= slo_fraction <= 1.0:
        raise ValueError("slo_fraction must be in [0, 1]")
    levels = merged.level_counts()
    load = overload_of(levels)
    over = bool(load["overloaded"])
    # an overloaded sketch publishes only its certain bounds: the bootstrap would buy nothing
    est: ProfileEstimate = estimate_profile(
        levels,
        "mle" if over and method == "auto" else method,
        rng=rng,
        max_replication=max_replication,
    )
    tau = merged.tau
    occupied = int(merged.n_prime - levels[0])
    union = est.union()
    empty = union.estimate <= 0.0
    certain = _certain(levels, max_replication)
    step = 0.0 if certain else 1.0
    fstep = 0.0 if certain or empty else 1.0 / max(union.estimate, 1.0)
    frac = est.fraction_at_least(replication_target)
    top = float(est.n_hat[-1])
    avg = est.average_replication()
    if empty:
        slo_block: dict[str, Any] = {
            "estimate": None,
            "ci95": None,
            "met": "yes",
            "note": "no chunk stored",
        }
        repair = False
    elif over:
        slo_block = {
            "estimate": _num(round(frac.estimate, 6)),
            "ci95": [0.0, 1.0],
            "met": "unknown",
            "note": "the sketch is overloaded: resize N_PRIME (see sizing)",
        }
        repair = False
    else:
        f_iv = _interval(frac, step=fstep, ceiling=1.0)
        slo_block = {
            "estimate": f_iv["estimate"],
            "ci95": f_iv["ci95"],
            "met": _verdict(frac, slo_fraction),
        }
        repair = bool(frac.hi < slo_fraction)
    at_least = []
    for t in range(2, tau):
        entry = {"threshold": t, **_interval(est.at_least(t), 3, step=step)}
        f_t = _interval(est.fraction_at_least(t), step=fstep, ceiling=1.0)
        if over:
            entry, f_t = _unknown(entry, 0.0, None), _unknown(f_t, 0.0, 1.0)
        entry["fraction"] = None if empty else f_t
        at_least.append(entry)
    union_entry = _interval(union, 3, step=step)
    classes = [
        {"replicas": l_cls, **_interval(est.replicas(l_cls), 3, step=step)}
        for l_cls in range(1, tau)
    ]
    avg_entry = _interval(avg) if not empty else {"estimate": None, "ci95": None}
    if over:
        union_entry = _unknown(union_entry, float(occupied), None)
        classes = [_unknown(c, 0.0, None) for c in classes]
        avg_entry = _unknown(avg_entry, 1.0, None)
    distinct = stored_chunks if over else union_entry["ci95"][1]
    return {
        "n_prime": merged.n_prime,
        "tau": tau,
        "key_id": merged.key_id.hex(),
        "method": est.method,
        "confidence": CONFIDENCE,
        "exact": ["level_counts", "occupied_registers", "n_prime", "tau"],
        "level_counts": [int(x) for x in levels],
        "occupied_registers": occupied,
        "load": _num(round(est.load, 6)),
        "max_replication": max_replication,
        "overloaded": over,
        "sizing": {
            **load,
            "recommended_n_prime": None
            if distinct is None
            else recommended_registers(float(distinct)),
            "rule": "±1% on U and W at load <= 1 (occ-storage.md §3)",
        },
        "union_size": union_entry,
        "average_replication": {
            **avg_entry,
            "estimated": True,
            # the class >= tau counts as tau replicas: a lower bound when it is not empty
            "lower_bound": bool(top >= 0.5),
        },
        "replica_classes": classes,
        "at_least": at_least,
        "slo": {
            "target_replicas": replication_target,
            "slo_fraction": slo_fraction,
            **slo_block,
            "confidence": CONFIDENCE,
        },
        "repair_recommended": repair,
    }

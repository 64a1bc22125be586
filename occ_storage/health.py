"""Network health from the merged LCRS sketch: the figures /status shows, with 95% intervals."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from occ_storage.errors import SketchMismatchError
from occ_storage.estimators import Interval, ProfileEstimate, estimate_profile
from occ_storage.secagg import aggregate, mask_vector, pair_seed
from occ_storage.sketches import MergedSketch, NodeSketch, key_id_of, register_ids

__all__ = [
    "health_report",
    "merge_securely",
    "merged_sketch_from_chunks",
    "merged_sketch_from_registers",
    "node_sketches_from_chunks",
]

CONFIDENCE = 0.95


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


def _interval(iv: Interval, ndigits: int = 6) -> dict[str, Any]:
    # A basic-bootstrap interval may sit beside a biased point estimate; a reader expects the
    # published interval to contain the published estimate, so widen it to do so.
    lo, hi = iv.lo, iv.hi
    if math.isfinite(iv.estimate):
        lo, hi = min(lo, iv.estimate), max(hi, iv.estimate)
    return {
        "estimate": _num(round(iv.estimate, ndigits)),
        "se": _num(round(iv.se, ndigits)),
        "ci95": [_num(round(lo, ndigits)), _num(round(hi, ndigits))],
        "estimated": True,
    }


def _verdict(iv: Interval, slo: float) -> Literal["yes", "no", "uncertain"]:
    if iv.lo >= slo:
        return "yes"
    if iv.hi < slo:
        return "no"
    return "uncertain"


def health_report(
    merged: MergedSketch,
    replication_target: int,
    slo_fraction: float,
    *,
    max_replication: int | None = None,
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
    `repair_recommended` is true when the upper bound is below the SLO. `max_replication`
    (the number of live nodes) sharpens the MLE. Raises SketchSaturatedError when Z_0 = 0.
    """
    if not 1 <= replication_target <= merged.tau:
        raise ValueError(f"replication target must be in 1..tau={merged.tau} (raise TAU)")
    if not 0.0 <= slo_fraction <= 1.0:
        raise ValueError("slo_fraction must be in [0, 1]")
    levels = merged.level_counts()
    est: ProfileEstimate = estimate_profile(
        levels, method, rng=rng, max_replication=max_replication
    )
    tau = merged.tau
    union = est.union()
    empty = union.estimate <= 0.0
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
    else:
        slo_block = {
            "estimate": _num(round(frac.estimate, 6)),
            "ci95": [_num(round(frac.lo, 6)), _num(round(frac.hi, 6))],
            "met": _verdict(frac, slo_fraction),
        }
        repair = bool(frac.hi < slo_fraction)
    at_least = []
    for t in range(2, tau):
        w = est.at_least(t)
        f = est.fraction_at_least(t)
        entry = {"threshold": t, **_interval(w, 3)}
        entry["fraction"] = None if empty else _interval(f)
        at_least.append(entry)
    return {
        "n_prime": merged.n_prime,
        "tau": tau,
        "key_id": merged.key_id.hex(),
        "method": est.method,
        "confidence": CONFIDENCE,
        "exact": ["level_counts", "occupied_registers", "n_prime", "tau"],
        "level_counts": [int(x) for x in levels],
        "occupied_registers": int(merged.n_prime - levels[0]),
        "load": _num(round(est.load, 6)),
        "union_size": _interval(union, 3),
        "average_replication": {
            **(_interval(avg) if not empty else {"estimate": None, "ci95": None}),
            "estimated": True,
            # the class >= tau counts as tau replicas: a lower bound when it is not empty
            "lower_bound": bool(top >= 0.5),
        },
        "replica_classes": [
            {"replicas": l_cls, **_interval(est.replicas(l_cls), 3)} for l_cls in range(1, tau)
        ],
        "at_least": at_least,
        "slo": {
            "target_replicas": replication_target,
            "slo_fraction": slo_fraction,
            **slo_block,
            "confidence": CONFIDENCE,
        },
        "repair_recommended": repair,
    }

"""health_report: the /status figures from a merged sketch, and the seed's bug numbers."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import numpy as np
import pytest

from occ_storage.errors import SketchSaturatedError
from occ_storage.health import (
    health_report,
    merge_securely,
    merged_sketch_from_chunks,
    merged_sketch_from_registers,
    node_sketches_from_chunks,
)
from occ_storage.sketches import MergedSketch, key_id_of, register_ids

KEY = bytes(range(32))
N_PRIME = 10_000
TAU = 10


def chunk_ids(n: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


def spread(ids: list[str], replicas: np.ndarray, n_nodes: int, seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {f"node-{v}": [] for v in range(n_nodes)}
    for cid, r in zip(ids, replicas, strict=True):
        for v in rng.choice(n_nodes, size=int(r), replace=False):
            out[f"node-{v}"].append(cid)
    return out


def test_seed_bug_numbers_are_fixed() -> None:
    # The seed reports union 2,611 and average replication 1.15 for 1,000 chunks on 3 nodes,
    # because it hashes node_id:chunk. The same chunks here: the 95% intervals must contain
    # U = 1,000 and an average replication of 3.
    ids = chunk_ids(1_000)
    merged = merged_sketch_from_chunks({f"n{i}": ids for i in range(3)}, KEY, N_PRIME, TAU)
    methods: tuple[Literal["auto", "plugin", "mle"], ...] = ("auto", "plugin", "mle")
    for method in methods:
        rep = health_report(merged, 3, 0.99, method=method, max_replication=None)
        lo, hi = rep["union_size"]["ci95"]
        assert lo <= 1_000 <= hi, method
        lo, hi = rep["average_replication"]["ci95"]
        assert lo <= 3.0 <= hi, method
        assert rep["slo"]["met"] == "yes" and rep["repair_recommended"] is False
    # the seed's scheme on the same chunks: registers of node_id:chunk, union read as N' - Z_0
    seed_regs = register_ids(
        [hashlib.sha256(f"n{i}:{c}".encode()).hexdigest() for i in range(3) for c in ids],
        KEY,
        N_PRIME,
    )
    assert N_PRIME - np.count_nonzero(np.bincount(seed_regs, minlength=N_PRIME) == 0) > 2_500


def test_report_is_plain_json_with_every_field() -> None:
    rng = np.random.default_rng(1)
    ids = chunk_ids(4_000)
    replicas = rng.choice([1, 2, 3, 4], p=[0.05, 0.15, 0.7, 0.1], size=len(ids))
    merged = merged_sketch_from_chunks(spread(ids, replicas, 5, seed=2), KEY, N_PRIME, TAU)
    rep = health_report(merged, 3, 0.9, max_replication=5)
    text = json.dumps(rep, allow_nan=False)
    assert json.loads(text) == rep
    assert rep["level_counts"] == [int(x) for x in merged.level_counts()]
    assert sum(rep["level_counts"]) == N_PRIME and "level_counts" in rep["exact"]
    assert rep["union_size"]["estimated"] is True
    assert [c["replicas"] for c in rep["replica_classes"]] == list(range(1, TAU))
    assert [a["threshold"] for a in rep["at_least"]] == list(range(2, TAU))
    for entry in [rep["union_size"], rep["average_replication"], *rep["replica_classes"]]:
        lo, hi = entry["ci95"]
        assert lo <= entry["estimate"] <= hi and entry["estimated"] is True
    slo = rep["slo"]
    assert slo["target_replicas"] == 3 and slo["slo_fraction"] == 0.9
    assert slo["met"] in ("yes", "no", "uncertain") and slo["confidence"] == 0.95
    assert rep["key_id"] == key_id_of(KEY).hex()


def test_report_is_the_same_for_any_number_of_nodes() -> None:
    rng = np.random.default_rng(3)
    ids = chunk_ids(3_000, salt="n")
    replicas = rng.choice([1, 2, 3], p=[0.1, 0.2, 0.7], size=len(ids))
    reports = [
        health_report(
            merged_sketch_from_chunks(spread(ids, replicas, n, seed=n), KEY, N_PRIME, TAU),
            3,
            0.95,
            max_replication=3,
        )
        for n in (3, 10, 50)
    ]
    assert reports[0] == reports[1] == reports[2]


def test_slo_verdicts_and_repair() -> None:
    ids = chunk_ids(5_000, salt="slo")
    n = len(ids)
    healthy = np.full(n, 3)
    degraded = np.where(np.arange(n) < int(0.3 * n), 2, 3)  # 30% below target
    borderline = np.where(np.arange(n) < int(0.01 * n), 2, 3)  # exactly at the 99% SLO

    def report(replicas: np.ndarray) -> dict[str, Any]:
        merged = merged_sketch_from_chunks(spread(ids, replicas, 5, seed=4), KEY, N_PRIME, TAU)
        return health_report(merged, 3, 0.99, max_replication=5)

    ok, bad, edge = report(healthy), report(degraded), report(borderline)
    assert ok["slo"]["met"] == "yes" and ok["repair_recommended"] is False
    assert bad["slo"]["met"] == "no" and bad["repair_recommended"] is True
    assert edge["slo"]["met"] == "uncertain" and edge["repair_recommended"] is False
    lo, hi = bad["slo"]["ci95"]
    assert lo <= 0.7 <= hi


def test_helpers_agree() -> None:
    ids = chunk_ids(2_000, salt="h")
    holdings = spread(ids, np.full(len(ids), 2), 4, seed=5)
    kid = key_id_of(KEY)
    from_chunks = merged_sketch_from_chunks(holdings, KEY, N_PRIME, TAU)
    regs = {node: register_ids(c, KEY, N_PRIME) for node, c in holdings.items()}
    assert merged_sketch_from_registers(regs, kid, N_PRIME, TAU) == from_chunks
    nodes = list(node_sketches_from_chunks(holdings, KEY, N_PRIME).values())
    assert merge_securely(nodes, TAU, round_secret=b"r" * 32) == from_chunks


def test_empty_and_saturated_sketches() -> None:
    empty = merged_sketch_from_chunks({}, KEY, N_PRIME, TAU)
    rep = health_report(empty, 3, 0.99, max_replication=3)
    assert rep["union_size"]["estimate"] == 0.0 and rep["repair_recommended"] is False
    json.dumps(rep, allow_nan=False)
    full = MergedSketch.from_sum(np.full(100, 3), 100, key_id_of(KEY), TAU)
    with pytest.raises(SketchSaturatedError):
        health_report(full, 3, 0.99, max_replication=3)
    with pytest.raises(ValueError, match="TAU"):
        health_report(empty, TAU + 1, 0.99, max_replication=3)


def test_published_interval_contains_the_estimate() -> None:
    # One chunk on four nodes: the small-count bootstrap path; estimate and interval must agree.
    import hashlib

    from occ_storage.health import health_report, merged_sketch_from_chunks

    ids = [hashlib.sha256(b"only").hexdigest()]
    merged = merged_sketch_from_chunks({n: ids for n in "abcd"}, b"k" * 32, 10_000, 10)
    report = health_report(merged, 3, 0.99, max_replication=5)
    for block in (report["average_replication"], report["union_size"]):
        lo, hi = block["ci95"]
        assert lo <= block["estimate"] <= hi
    assert (
        report["average_replication"]["ci95"][0] <= 4.0 <= report["average_replication"]["ci95"][1]
    )


def test_status_intervals_cover_r3_across_keys() -> None:
    """The /status configuration (N' = 10^4, tau = 10, 5 nodes) with 2,000 chunks at r = 3,
    over 200 seeded keys: the 95% intervals of Û and of the average replication contain 2,000
    and 3 in >= 95% of keys. Values 3, 6, 9 pin their registers' counts, so the intervals are
    narrow; they miss when a register holds >= 5 chunks (censored, read as about 4), in about
    2% of keys: the bound fails if that rate reaches about 7% (coverage below 0.93)."""
    ids = chunk_ids(2_000, "r3-")
    covered_u = covered_avg = 0
    reps = 200
    for rep in range(reps):
        key = hashlib.sha256(f"coverage key {rep}".encode()).digest()
        # S depends only on the chunk set and replica counts, not on which nodes hold them
        merged = merged_sketch_from_chunks({f"n{i}": ids for i in range(3)}, key, N_PRIME, TAU)
        report = health_report(merged, 3, 0.99, max_replication=5)
        lo, hi = report["union_size"]["ci95"]
        covered_u += lo <= 2_000 <= hi
        lo, hi = report["average_replication"]["ci95"]
        covered_avg += lo <= 3.0 <= hi
    print(f"coverage over {reps} keys: union {covered_u / reps}, average {covered_avg / reps}")
    assert covered_u / reps >= 0.95 and covered_avg / reps >= 0.95, (covered_u, covered_avg)

"""Speed of the LCRS sketch operations against the targets of occ-storage.md §3.

Usage: .venv/bin/python bench/sketch_speed.py [--runs 15] [--readme bench/README.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._sketch_sim import merged_levels, replace_between_markers  # noqa: E402
from occ_storage.estimators import BOOTSTRAP_REPS, mle_profile, plugin_profile  # noqa: E402
from occ_storage.health import health_report  # noqa: E402
from occ_storage.sketches import MergedSketch, NodeSketch, key_id_of, register_ids  # noqa: E402


def _median_ms(
    fn: Callable[[], object], runs: int, setup: Callable[[], None] | None = None
) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--readme", type=Path, default=None)
    args = ap.parse_args(argv)
    runs = args.runs
    rng = np.random.default_rng(7)
    key = bytes(range(32))
    kid = key_id_of(key)
    rows: list[tuple[str, float, float]] = []

    # 1. update of 10^6 chunks from stored register ids (N' = 10^5)
    n_prime = 100_000
    regs = rng.integers(0, n_prime, size=1_000_000).astype(np.uint32)
    node = NodeSketch.empty(n_prime, kid)

    def reset() -> None:
        node.counts[:] = 0

    rows.append(
        (
            "update: 10^6 chunks from stored register ids (N' = 10^5)",
            _median_ms(lambda: node.update(regs), runs, reset),
            20.0,
        )
    )
    rows.append(
        (
            "rebuild: NodeSketch.from_registers, 10^6 chunks (N' = 10^5)",
            _median_ms(lambda: NodeSketch.from_registers(regs, n_prime, kid), runs),
            20.0,
        )
    )

    # 2. merge of 100 nodes x 10^5 registers
    nodes = [
        NodeSketch(kid, n_prime, rng.integers(0, 4, size=n_prime).astype(np.uint16))
        for _ in range(100)
    ]
    rows.append(
        (
            "merge: 100 nodes x 10^5 registers (uint32 sum, censor at tau)",
            _median_ms(lambda: MergedSketch.from_nodes(nodes, 16), runs),
            10.0,
        )
    )

    # 3. level counts, N' = 10^5
    replicas = np.full(100_000, 3, dtype=np.int64)
    published, _ = merged_levels(replicas, n_prime, 16, rng)
    merged = MergedSketch.from_sum(published, n_prime, kid, 16)
    rows.append(
        (
            "level counts Z_0..Z_tau (N' = 10^5)",
            _median_ms(merged.level_counts, runs),
            2.0,
        )
    )

    # 4. estimators (τ = 16, mixed profile at λ = 1)
    mixed = rng.choice([1, 2, 3, 4, 5], p=[0.05, 0.15, 0.6, 0.15, 0.05], size=n_prime)
    _, mixed_levels = merged_levels(mixed.astype(np.int64), n_prime, 16, rng)

    def plugin_all() -> None:
        est = plugin_profile(mixed_levels)
        est.union()
        est.at_least(3)
        est.fraction_at_least(3)
        est.average_replication()

    def mle_all() -> None:
        est = mle_profile(mixed_levels, max_replication=10)
        est.union()
        est.at_least(3)
        est.fraction_at_least(3)

    rows.append(
        ("plug-in estimators with 95% intervals (tau = 16)", _median_ms(plugin_all, runs), 20.0)
    )
    rows.append(("constrained MLE with intervals (tau = 16)", _median_ms(mle_all, runs), 200.0))
    regs_mixed = rng.integers(0, n_prime, size=mixed.size)
    merged_mixed = MergedSketch.from_sum(
        np.bincount(regs_mixed, weights=mixed, minlength=n_prime).astype(np.uint32),
        n_prime,
        kid,
        16,
    )
    rows.append(
        (
            "health_report, Fisher intervals (method mle, every threshold and class)",
            _median_ms(
                lambda: health_report(merged_mixed, 3, 0.99, max_replication=10, method="mle"),
                runs,
            ),
            200.0,
        )
    )
    # the default: intervals from the bootstrap of the MLE; beat refreshes it every 60 s and
    # /status serves the cached report, so it is never inside a request
    rows.append(
        (
            f"health_report, default (MLE + bootstrap intervals, {BOOTSTRAP_REPS} replicates)",
            _median_ms(
                lambda: health_report(merged_mixed, 3, 0.99, max_replication=10),
                max(3, runs // 10),
            ),
            5000.0,
        )
    )
    ids = [bytes(rng.integers(0, 256, size=32, dtype=np.uint8)) for _ in range(100_000)]
    ingest_ms = _median_ms(lambda: register_ids(ids, key, n_prime), max(3, runs // 5))
    rows.append(
        ("register_ids at ingest, 10^5 chunk ids (once per chunk)", ingest_ms, float("nan"))
    )

    lines = [
        "## Sketch speed (`bench/sketch_speed.py`)",
        "",
        f"Command: `.venv/bin/python bench/sketch_speed.py --runs {runs}` "
        f"(median of {runs} runs after a warm-up; one process).",
        "",
        "| operation | measured (ms) | target (ms) | |",
        "|---|---|---|---|",
    ]
    for name, ms, target in rows:
        if target != target:  # NaN: informational
            lines.append(f"| {name} | {ms:.2f} | — | info |")
        else:
            verdict = "PASS" if ms < target else "FAIL"
            lines.append(f"| {name} | {ms:.2f} | < {target:g} | {verdict} |")
    text = "\n".join(lines)
    print(text)
    if args.readme is not None:
        replace_between_markers(args.readme, "sketch-speed", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

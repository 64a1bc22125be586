"""pytest plugin of `make chaos`: one row per reliability scenario (reliability.md §4), written to
docs/RELIABILITY.md at the end of the run (OCC_CHAOS_REPORT names the file).

A scenario's tests record what they did with ``record_property``: ``repetitions``, ``faults``
and the outcome counters ``lost`` (acknowledged uploads or bytes lost), ``corrupt`` (corrupt
bytes served), ``double_charges``, ``replays`` (replays accepted) and ``5xx``. A counter a
test does not record is shown as its pass criterion's assertion (the test fails otherwise).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# row -> (scenario, pass criterion, the tests that prove it)
ROWS: dict[int, tuple[str, str, tuple[str, ...]]] = {
    1: (
        "50 concurrent uploads of 1-16 MiB",
        "0 lost, 0 5xx, every download matches, r distinct nodes",
        ("test_row1_fifty_concurrent_uploads",),
    ),
    2: ("read right after the ack", "100% correct bytes", ("test_row2_read_right_after_ack",)),
    3: (
        "SIGKILL a worker inside paid stores",
        "0 partial chunks under final names; every job 400",
        (
            "test_worker_killed_during_store_every_job_reaches_400",
            "test_sigkill_leaves_no_partial_chunk_under_a_final_name",
        ),
    ),
    4: (
        "1% flipped bytes, 1% truncated replicas",
        "0 corrupt bytes served; repaired in one scrub",
        ("test_rows4_5_corrupt_replicas_never_served_and_repaired",),
    ),
    5: (
        "first-listed replica corrupt",
        "repair copies from a replica that verifies",
        ("test_rows4_5_corrupt_replicas_never_served_and_repaired",),
    ),
    6: (
        "a node directory deleted during uploads",
        "reads 100% OK; repair restores r",
        (
            "test_row6_node_directory_deleted_during_uploads",
            "test_deleted_node_directory_is_repaired_by_scrub",
        ),
    ),
    7: (
        "2 of 5 nodes lost, r = 3",
        "0 data loss; a chunk with no replica is reported",
        ("test_row7_lose_two_of_five_nodes", "test_row7_unreadable_first_chunk_is_a_clean_503"),
    ),
    8: (
        "repair and rebalance concurrent with uploads",
        "copies = r exactly, never two on one node",
        ("test_row8_repair_and_rebalance_concurrent_with_uploads", "test_rebalance_up_and_down"),
    ),
    9: (
        "kill -9 during the payment task",
        "exactly one transferFrom per quote",
        (
            "test_worker_killed_at_payment_sent_pays_exactly_once",
            "test_crash_between_record_and_broadcast_sends_once",
        ),
    ),
    10: (
        "Redis restarted mid-run",
        "503 with Retry-After while down; no job lost",
        ("test_redis_down_gives_503_with_retry_after",),
    ),
    11: (
        "concurrent uploads with one (address, nonce)",
        "exactly one accepted per pair",
        ("test_concurrent_uploads_with_one_nonce_accept_exactly_one", "test_nonce_check_and_set"),
    ),
    12: (
        "signature and nonce rejection matrix",
        "all 4xx, nothing enqueued",
        ("test_rejection_matrix_enqueues_nothing",),
    ),
    13: (
        "payment matrix",
        "none paid; the valid case paid once",
        (
            "test_valid_payment_is_paid_exactly_once",
            "test_reverted_transfer_is_not_paid",
            "test_wrong_recipient_is_not_paid",
            "test_wrong_token_is_not_paid",
            "test_one_unit_short_is_not_paid",
            "test_allowance_short_is_not_paid",
            "test_balance_short_is_not_paid",
        ),
    ),
    14: (
        "schemathesis on every operation",
        "0 5xx, 0 schema violations",
        ("test_schemathesis_every_operation",),
    ),
    15: (
        "body limit + 1; a 1 GiB upload",
        "413 both ways; RSS < baseline + 64 MiB",
        ("test_row15_body_limit_plus_one_is_413", "test_row15_one_gib_upload_in_bounded_memory"),
    ),
    16: (
        "hostile file names",
        "nothing written outside the storage root",
        ("test_hostile_file_names_never_reach_a_path", "test_hostile_names_stay_metadata"),
    ),
    17: (
        "registration: no heartbeat, replayed, unsigned, public port",
        "expired and not routed; rejected; unreachable",
        (
            "test_storage_disappears_after_ttl_without_heartbeat",
            "test_replayed_registration_rejected",
            "test_unsigned_registration_rejected",
            "test_register_not_reachable_on_public_app",
        ),
    ),
}
COUNTERS = ("lost", "corrupt", "double_charges", "replays", "5xx")


@dataclass
class Row:
    passed: int = 0
    failed: int = 0
    seconds: float = 0.0
    props: dict[str, list[Any]] = field(default_factory=dict)


class ChaosReport:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[int, Row] = {n: Row() for n in ROWS}
        self.started = time.monotonic()

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        """Run only the catalogue's tests (the rest of tests/integration is `make test`'s)."""
        wanted = {t for _, _, tests in ROWS.values() for t in tests}
        keep = [i for i in items if i.name.split("[")[0] in wanted]
        dropped = [i for i in items if i.name.split("[")[0] not in wanted]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.split("::")[-1].split("[")[0]
        for n, (_, _, tests) in ROWS.items():
            if name not in tests:
                continue
            row = self.rows[n]
            if report.when == "call":
                row.seconds += report.duration
                row.passed += report.passed
                for key, value in report.user_properties:
                    row.props.setdefault(key, []).append(value)
            if report.failed:
                row.failed += 1

    def pytest_sessionfinish(self) -> None:
        lines = [
            "# Reliability: the catalogue of reliability.md §4, as the last `make chaos` ran it",
            "",
            f"Written by `make chaos` (`tests/chaos_report.py`) on "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {time.monotonic() - self.started:.0f} s in all. "
            "Each row's tests run against real processes (redis-server, Celery workers, gunicorn, "
            "anvil; nginx in the rows that involve it). A counter is 0 when the row's tests assert it "
            "and pass; `–` means the row does not count that outcome.",
            "",
            "| # | scenario | tests (pass/fail) | s | repetitions | faults injected | lost | corrupt served | double charges | replays | 5xx | pass criterion |",
            "|---|---|---|---:|---|---|---|---|---|---|---|---|",
        ]
        for n, (scenario, criterion, _) in ROWS.items():
            row = self.rows[n]
            ran = row.passed + row.failed
            verdict = f"{row.passed}/{row.failed}" if ran else "not run"
            reps = ", ".join(str(v) for v in row.props.get("repetitions", [])) or "–"
            faults = "; ".join(str(v) for v in row.props.get("faults", [])) or "–"
            counts = [
                str(sum(int(v) for v in row.props[c])) if c in row.props else "–" for c in COUNTERS
            ]
            lines.append(
                f"| {n} | {scenario} | {verdict} | {row.seconds:.0f} | {reps} | {faults} | "
                + " | ".join(counts)
                + f" | {criterion} |"
            )
        totals = {
            c: sum(int(v) for r in self.rows.values() for v in r.props.get(c, [])) for c in COUNTERS
        }
        failed = sum(r.failed for r in self.rows.values())
        lines += [
            "",
            "Totals: "
            + ", ".join(f"{v} {k}" for k, v in totals.items())
            + f"; {failed} failing tests.",
            "",
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(lines))
        print("\n" + "\n".join(lines[-2:]))


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get("OCC_CHAOS_REPORT")
    if path:
        config.pluginmanager.register(ChaosReport(Path(path)), "occ-chaos-report")

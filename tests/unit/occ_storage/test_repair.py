"""Pure repair plans and their idempotent executor."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from occ_storage.errors import InvalidReplicationError
from occ_storage.nodes import LocalDirNode
from occ_storage.placement import rank_nodes
from occ_storage.repair import Copy, Removal, RepairPlan, execute_plan, plan_repair

from .conftest import make_nodes, payload

NODES = [(f"node_{i:03d}", 1.0) for i in range(5)]
IDS = [hashlib.sha256(bytes([i])).hexdigest() for i in range(40)]


def test_plan_copies_to_best_ranked_free_nodes() -> None:
    for cid in IDS:
        order = rank_nodes(cid, NODES)
        current = {cid: {order[3]}}
        plan = plan_repair([cid], current, NODES, 3)
        assert [c.dest for c in plan.copies] == order[:2]
        assert all(c.sources == (order[3],) for c in plan.copies)
        assert plan.removals == () and plan.lost == ()


def test_plan_is_minimal_and_never_doubles_a_node() -> None:
    for i, cid in enumerate(IDS):
        order = rank_nodes(cid, NODES)
        have = set(order[i % 5 : i % 5 + 1 + i % 3])
        for target in range(1, 6):
            plan = plan_repair([cid], {cid: have}, NODES, target)
            dests = [c.dest for c in plan.copies]
            assert len(dests) == len(set(dests)) == max(0, target - len(have))
            assert not set(dests) & have
            assert len(plan.removals) == max(0, len(have) - target)
            final = (have | set(dests)) - {r.node_id for r in plan.removals}
            assert len(final) == target


def test_plan_removes_lowest_ranked_extras() -> None:
    cid = IDS[0]
    order = rank_nodes(cid, NODES)
    plan = plan_repair([cid], {cid: set(order)}, NODES, 2)
    assert [r.node_id for r in plan.removals] == order[2:]
    assert all(r.keep == 2 for r in plan.removals)


def test_plan_reports_lost_and_per_chunk_targets() -> None:
    plan = plan_repair(
        IDS[:3], {IDS[0]: {"node_000"}, IDS[1]: set()}, NODES, {c: 2 for c in IDS[:3]}
    )
    assert plan.lost == (IDS[1], IDS[2])
    assert len(plan.copies) == 1
    plan = plan_repair(
        IDS[:2], {c: {"node_000", "ghost"} for c in IDS[:2]}, NODES, {IDS[0]: 1, IDS[1]: 3}
    )
    assert len(plan.copies) == 2 and plan.removals == ()  # unknown holders do not count


@pytest.mark.parametrize("t", [0, 6])
def test_plan_rejects_bad_targets(t: int) -> None:
    with pytest.raises(InvalidReplicationError):
        plan_repair([IDS[0]], {IDS[0]: {"node_000"}}, NODES, t)


def put_on(nodes: list[LocalDirNode], data: bytes, ids: list[str]) -> str:
    cid = hashlib.sha256(data).hexdigest()
    for n in nodes:
        if n.node_id in ids:
            n.put_chunk(cid, data)
    return cid


def test_execute_copies_from_a_source_that_verifies(tmp_path: Path) -> None:
    nodes = make_nodes(tmp_path)
    data = payload(3000)
    cid = put_on(nodes, data, ["node_000", "node_001"])
    p = nodes[0].chunk_path(cid)
    p.write_bytes(b"x" + p.read_bytes()[1:])  # the first-listed source is corrupt
    plan = RepairPlan(copies=(Copy(cid, ("node_000", "node_001"), "node_002"),))
    result = execute_plan(plan, nodes)
    assert result.copied == plan.copies and result.ok
    assert nodes[2].get_chunk(cid) == data
    assert result.corrupt_deleted == ((cid, "node_000"),)
    assert not nodes[0].has_chunk(cid)
    again = execute_plan(plan, nodes)  # idempotent: dest already verified
    assert again.copied == () and again.ok


def test_execute_rewrites_a_corrupt_destination(tmp_path: Path) -> None:
    nodes = make_nodes(tmp_path)
    data = payload(2000, seed=1)
    cid = put_on(nodes, data, ["node_000", "node_003"])
    nodes[3].chunk_path(cid).write_bytes(data[:-1])
    result = execute_plan(
        RepairPlan(copies=(Copy(cid, ("node_000",), "node_003"),)), {n.node_id: n for n in nodes}
    )
    assert result.copied and nodes[3].get_chunk(cid) == data
    assert result.corrupt_deleted == ((cid, "node_003"),)


def test_execute_reports_lost_when_no_source_verifies(tmp_path: Path) -> None:
    nodes = make_nodes(tmp_path)
    cid = put_on(nodes, payload(500, seed=2), ["node_000"])
    nodes[0].chunk_path(cid).write_bytes(b"bad")
    result = execute_plan(RepairPlan(copies=(Copy(cid, ("node_000",), "node_001"),)), nodes)
    assert result.lost == (cid,) and not result.ok and not nodes[1].has_chunk(cid)


def test_removals_only_once_enough_verified_copies(tmp_path: Path) -> None:
    nodes = make_nodes(tmp_path)
    data = payload(1500, seed=3)
    cid = put_on(nodes, data, ["node_000", "node_001", "node_002"])
    plan = RepairPlan(removals=(Removal(cid, "node_002", keep=2),))
    p = nodes[1].chunk_path(cid)
    p.write_bytes(p.read_bytes()[:-1])  # only one other verified copy: must not remove
    result = execute_plan(plan, nodes)
    assert result.removed == () and result.skipped_removals == plan.removals
    assert nodes[2].get_chunk(cid) == data
    nodes[1].put_chunk(cid, data)  # corrupt one was deleted by the re-check; restore
    result = execute_plan(plan, nodes)
    assert result.removed == plan.removals and not nodes[2].has_chunk(cid)
    assert execute_plan(plan, nodes).removed == ()  # idempotent


def test_round_trip_plan_then_execute_converges(tmp_path: Path) -> None:
    nodes = make_nodes(tmp_path)
    datas = [payload(700, seed=10 + i) for i in range(12)]
    cids = [put_on(nodes, d, [f"node_{i % 5:03d}"]) for i, d in enumerate(datas)]

    def current() -> dict[str, set[str]]:
        return {c: {n.node_id for n in nodes if n.has_chunk(c)} for c in cids}

    result = execute_plan(plan_repair(cids, current(), nodes, 3), nodes)
    assert result.ok and len(result.copied) == 24
    assert all(len(v) == 3 for v in current().values())
    assert plan_repair(cids, current(), nodes, 3).empty
    execute_plan(plan_repair(cids, current(), nodes, 1), nodes)
    assert all(len(v) == 1 for v in current().values())
    for c, d in zip(cids, datas, strict=True):
        (holder,) = [n for n in nodes if n.has_chunk(c)]
        assert holder.get_chunk(c) == d
        assert holder.node_id == rank_nodes(c, nodes)[0]  # the best-ranked copy is kept

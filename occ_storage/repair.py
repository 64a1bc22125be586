"""Repair and rebalance: pure plans (verified holders -> target placement) and their idempotent executor."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from occ_storage.errors import ChunkMissingError, CorruptChunkError, NodeError
from occ_storage.nodes import NodeBackend
from occ_storage.placement import NodeSpec, check_replication, node_pairs, rank_pairs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Copy:
    """Copy `chunk_id` to `dest` from the first of `sources` whose replica verifies."""

    chunk_id: str
    sources: tuple[str, ...]
    dest: str


@dataclass(frozen=True, slots=True)
class Removal:
    """Remove the replica on `node_id`, only once `keep` other verified copies exist."""

    chunk_id: str
    node_id: str
    keep: int = 1


@dataclass(frozen=True)
class RepairPlan:
    """What to do: copies, removals (extras beyond the target), and chunks with no verified copy."""

    copies: tuple[Copy, ...] = ()
    removals: tuple[Removal, ...] = ()
    lost: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True if the plan changes nothing (lost chunks cannot be acted on)."""
        return not self.copies and not self.removals


@dataclass(frozen=True)
class RepairResult:
    """What was done. `lost` chunks have no verified replica anywhere; `failed` could not be fixed now."""

    copied: tuple[Copy, ...] = ()
    removed: tuple[Removal, ...] = ()
    lost: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()  # (chunk id, reason)
    corrupt_deleted: tuple[tuple[str, str], ...] = ()  # (chunk id, node id)
    skipped_removals: tuple[Removal, ...] = ()
    manifests_written: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True if nothing is lost and nothing failed."""
        return not self.lost and not self.failed

    def merged(self, other: RepairResult) -> RepairResult:
        """Combine two results of successive rounds (lost: the later round's view)."""
        return RepairResult(
            self.copied + other.copied,
            self.removed + other.removed,
            other.lost,
            other.failed,
            self.corrupt_deleted + other.corrupt_deleted,
            other.skipped_removals,
            self.manifests_written + other.manifests_written,
            {**self.extra, **other.extra},
        )

    def to_dict(self) -> dict[str, Any]:
        """Return counts and the lost chunk ids (JSON-ready)."""
        return {
            "copied": len(self.copied),
            "removed": len(self.removed),
            "lost": list(self.lost),
            "failed": [list(f) for f in self.failed],
            "corrupt_deleted": len(self.corrupt_deleted),
            "skipped_removals": len(self.skipped_removals),
            "manifests_written": self.manifests_written,
        }


def plan_repair(
    chunk_ids: Iterable[str],
    current: Mapping[str, Iterable[str]],
    nodes: NodeSpec,
    target: Mapping[str, int] | int,
) -> RepairPlan:
    """Return the plan with the fewest copies that brings each chunk to its target of verified copies.

    `current[chunk]` are the nodes holding a verified replica. Destinations are the best nodes in
    rendezvous order among those not holding the chunk (so never two replicas on one node);
    extras beyond the target are removed from the lowest-ranked holders. Chunks without any
    verified replica are returned in `lost`. Raises InvalidReplicationError for a target outside
    1..len(nodes).
    """
    pairs = node_pairs(nodes)
    known = {nid for nid, _ in pairs}
    copies: list[Copy] = []
    removals: list[Removal] = []
    lost: list[str] = []
    for cid in dict.fromkeys(chunk_ids):
        t = check_replication(target if isinstance(target, int) else target[cid], len(pairs))
        holders = set(current.get(cid, ())) & known
        if not holders:
            lost.append(cid)
            continue
        order = rank_pairs(cid, pairs)
        ranked_holders = tuple(n for n in order if n in holders)
        if len(holders) < t:
            dests = [n for n in order if n not in holders][: t - len(holders)]
            copies.extend(Copy(cid, ranked_holders, d) for d in dests)
        elif len(holders) > t:
            removals.extend(Removal(cid, n, t) for n in ranked_holders[t:])
    return RepairPlan(tuple(copies), tuple(removals), tuple(lost))


def _group(items: Iterable[Copy] | Iterable[Removal]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(item.chunk_id, []).append(item)
    return groups


def execute_plan(
    plan: RepairPlan, nodes: Sequence[NodeBackend] | Mapping[str, NodeBackend]
) -> RepairResult:
    """Carry out `plan` idempotently and return what was done.

    Copies come only from a source whose replica verifies (the next source is tried when one
    fails; a corrupt source is deleted); writes are copy-if-absent, and a corrupt replica
    already at the destination is deleted and rewritten. Removals of a chunk happen only after
    re-checking that `keep` verified copies exist on other nodes.
    """
    by_id = dict(nodes) if isinstance(nodes, Mapping) else {n.node_id: n for n in nodes}
    copied: list[Copy] = []
    removed: list[Removal] = []
    lost: list[str] = list(plan.lost)
    failed: list[tuple[str, str]] = []
    corrupt: list[tuple[str, str]] = []
    skipped: list[Removal] = []

    def delete_corrupt(cid: str, node: NodeBackend) -> None:
        try:
            node.delete_chunk(cid)
            corrupt.append((cid, node.node_id))
        except NodeError as exc:
            log.warning("could not delete corrupt replica %s on %s: %s", cid, node.node_id, exc)

    def verified(cid: str, node: NodeBackend) -> bytes | None:
        try:
            return node.get_chunk(cid)
        except CorruptChunkError:
            delete_corrupt(cid, node)
        except (ChunkMissingError, NodeError):
            pass
        return None

    for cid, group in _group(plan.copies).items():
        data: bytes | None = None
        sources: list[str] = list(dict.fromkeys(s for c in group for s in c.sources))
        for copy in group:
            dest = by_id.get(copy.dest)
            if dest is None:
                failed.append((cid, f"unknown destination node {copy.dest}"))
                continue
            try:
                dest.get_chunk(cid)
                continue  # already there and verified: nothing to do
            except ChunkMissingError:
                pass
            except CorruptChunkError:
                delete_corrupt(cid, dest)
            except NodeError as exc:
                failed.append((cid, str(exc)))
                continue
            while data is None and sources:
                src = by_id.get(sources.pop(0))
                if src is not None:
                    data = verified(cid, src)
            if data is None:
                if cid not in lost:
                    lost.append(cid)
                break
            try:
                dest.put_chunk(cid, data)
                copied.append(copy)
            except NodeError as exc:
                failed.append((cid, str(exc)))

    for cid, group in _group(plan.removals).items():
        keep = max(r.keep for r in group)
        leaving = {r.node_id for r in group}
        count = 0
        for nid, node in by_id.items():
            if nid in leaving:
                continue
            if verified(cid, node) is not None:
                count += 1
                if count >= keep:
                    break
        if count < keep:
            skipped.extend(group)
            continue
        for rem in group:
            holder = by_id.get(rem.node_id)
            if holder is None:
                continue
            try:
                if holder.delete_chunk(cid):
                    removed.append(rem)
            except NodeError as exc:
                failed.append((cid, str(exc)))
    return RepairResult(
        tuple(copied), tuple(removed), tuple(lost), tuple(failed), tuple(corrupt), tuple(skipped)
    )

"""Replication health: node sketches -> secure aggregation -> merged sketch -> /status and the SLO check."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any, cast

from occ_storage.estimators import replication_bound
from occ_storage.health import health_report, merge_securely, node_sketches_from_chunks
from occ_storage.sketches import MergedSketch
from workers import metrics
from workers.runtime import Runtime
from workers.state import keys

log = logging.getLogger("workers.services.health")


def refresh_merged_sketch(rt: Runtime) -> MergedSketch:
    """One pass over the nodes: exact per-node figures, node sketches, and their masked sum.

    Each node's count vector is masked (pairwise additive masks, Bonawitz et al. 2017) before
    it is summed, so only the merged vector S (published as min(S, tau)) is ever stored.
    """
    settings = rt.settings
    node_chunks: dict[str, list[str]] = {}
    stats = []
    for st, ids in rt.store.node_census():  # one walk of each node
        stats.append(st.to_dict())
        node_chunks[st.node_id] = ids
    sketches = node_sketches_from_chunks(node_chunks, rt.sketch_key, settings.n_prime)
    round_id = f"{time.time_ns()}".encode()
    round_secret = hmac.new(rt.sketch_key, b"occ-secagg-round-secret", hashlib.sha256).digest()
    merged = merge_securely(list(sketches.values()), settings.tau, round_secret, round_id)
    now = time.time()
    meta = {"updated_at": now, "nodes": stats, "max_requested_r": max_requested_replication(rt)}
    with rt.redis.pipeline() as p:
        p.set(keys.SKETCH_MERGED, merged.to_bytes())
        p.set(keys.SKETCH_NODES, json.dumps(meta))
        p.execute()
    metrics.record_census(stats, now)
    return merged


def max_requested_replication(rt: Runtime, page: int = 1000) -> int:
    """The largest replication factor any stored file asked for (its manifest), or the default
    for new uploads if larger: with repair's extra copy, the bound on any chunk's replica count."""
    top, offset = rt.settings.replication_factor, 0
    while batch := rt.store.list_files(offset, page):
        top = max(top, *(m.replication_factor for m in batch))
        offset += len(batch)
    return top


def _cached(rt: Runtime, max_age: float) -> tuple[MergedSketch, dict[str, Any]] | None:
    raw, nodes = cast(list[Any], rt.redis.mget([keys.SKETCH_MERGED, keys.SKETCH_NODES]))
    if not raw or not nodes:
        return None
    meta: dict[str, Any] = json.loads(nodes)
    if time.time() - float(meta["updated_at"]) > max_age:
        return None
    merged = MergedSketch.from_bytes(raw)
    if merged.n_prime != rt.settings.n_prime or merged.tau != rt.settings.tau:
        return None  # configuration changed: rebuild
    return merged, meta


def max_report_age(rt: Runtime) -> float:
    """/status answers from the cached report while it is younger than this: two beat intervals
    (SKETCH_INTERVAL), so a late beat never makes a request walk the nodes."""
    return 2.0 * rt.settings.sketch_interval


def current(rt: Runtime, max_age: float) -> tuple[MergedSketch, dict[str, Any]]:
    cached = _cached(rt, max_age)
    if cached is not None:
        return cached
    merged = refresh_merged_sketch(rt)
    cached = _cached(rt, float("inf"))
    assert cached is not None
    return merged, cached[1]


def report(rt: Runtime, merged: MergedSketch, meta: dict[str, Any]) -> dict[str, Any]:
    """The health report; the replica-count bound comes from the manifests, not the node count."""
    s = rt.settings
    requested = int(meta.get("max_requested_r") or s.replication_factor)
    stored = sum(int(n["chunks"]) for n in meta["nodes"])  # replicas: >= the distinct chunks
    rep = health_report(
        merged,
        s.replication_factor,
        s.health_slo,
        max_replication=replication_bound(requested),
        stored_chunks=stored,
    )
    metrics.record_health(rep)
    return rep


def health_check(rt: Runtime) -> dict[str, Any]:
    """The periodic check: refresh the sketch, evaluate the SLO, remember the verdict."""
    merged, meta = current(rt, 0.0)
    rep = report(rt, merged, meta)
    # an overloaded sketch says nothing: its verdict is "unknown" and it schedules nothing
    verdict = {
        "checked_at": time.time(),
        "slo": rep["slo"],
        "overloaded": rep["overloaded"],
        "repair_recommended": rep["repair_recommended"] and not rep["overloaded"],
    }
    rt.redis.set(keys.HEALTH_LAST, json.dumps(verdict))
    level = logging.WARNING if verdict["repair_recommended"] else logging.INFO
    log.log(
        level, "health check: SLO met=%s", rep["slo"].get("met"), extra={"task": "check_health"}
    )
    return verdict


def network_status(rt: Runtime, refresh: bool = False) -> dict[str, Any]:
    """The /status document: the seed's fields, exact where exact, estimated with 95% intervals."""
    merged, meta = current(rt, 0.0 if refresh else max_report_age(rt))
    rep = report(rt, merged, meta)
    nodes = meta["nodes"]
    total_replicas = sum(int(n["chunks"]) for n in nodes)
    total_bytes = sum(int(n["used_bytes"]) for n in nodes)
    for n in nodes:
        n["storage_mb"] = round(int(n["used_bytes"]) / 1e6, 3)
        n["load"] = round(int(n["chunks"]) / total_replicas, 4) if total_replicas else 0.0
    union = rep["union_size"]
    avg = rep["average_replication"]
    last = rt.redis.get(keys.HEALTH_LAST)
    return {
        "network": {
            "total_nodes": len(nodes),
            "union_size": None if union["estimate"] is None else round(union["estimate"]),
            "union_size_ci95": union["ci95"],
            "total_chunks": total_replicas,
            "total_storage_mb": round(total_bytes / 1e6, 3),
            "average_replication": avg["estimate"],
            "average_replication_ci95": avg["ci95"],
            "level_counts": rep["level_counts"],
            "exact": ["total_nodes", "total_chunks", "total_storage_mb", "level_counts"],
            "estimated": ["union_size", "average_replication"],
        },
        "replication": {
            "replica_classes": rep["replica_classes"],
            "at_least": rep["at_least"],
            "slo": rep["slo"],
            "repair_recommended": rep["repair_recommended"],
            "method": rep["method"],
            "confidence": rep["confidence"],
            "load": rep["load"],
            "max_replication": rep["max_replication"],
            "overloaded": rep["overloaded"],
            "sizing": rep["sizing"],
        },
        "nodes": nodes,
        "config": rt.settings.public_config(),
        "files_stored": rt.store.count_files(),
        "sketch": {
            "n_prime": merged.n_prime,
            "tau": merged.tau,
            "updated_at": meta["updated_at"],
            "age_s": round(max(0.0, time.time() - float(meta["updated_at"])), 3),
            "refresh_interval_s": rt.settings.sketch_interval,
        },
        "last_health_check": json.loads(last) if last else None,
        "repair_sweep_scheduled": bool(rt.redis.exists(keys.REPAIR_SCHEDULED)),
    }

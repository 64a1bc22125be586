"""Put, read, verify, repair, rebalance, delete and scrub files over replicated chunk nodes.

Longer than ~400 lines on purpose: one class whose verbs share the placement, quorum and
per-file lock rules and one node pool; split by verb, each piece would need all of them again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from occ_storage.chunking import CHUNK_SIZE, ChunkedReader, check_chunk_size, check_hash
from occ_storage.errors import (
    ChunkMissingError,
    ChunkUnavailableError,
    ContentMismatchError,
    CorruptChunkError,
    InvalidNodeError,
    InvalidRangeError,
    InvalidReplicationError,
    ManifestError,
    NodeError,
    UnknownFileError,
    WriteQuorumError,
)
from occ_storage.index import ChunkRef, FileIndex, Manifest, MemoryIndex
from occ_storage.nodes import NodeBackend
from occ_storage.placement import check_replication, node_pairs, rank_pairs
from occ_storage.repair import RepairResult, execute_plan, plan_repair

log = logging.getLogger(__name__)

BadReplicaCallback = Callable[[str, str], None]
"""Called with (chunk_id, node_id) for a replica that failed verification, is missing or errored."""


@dataclass(frozen=True)
class ChunkStatus:
    """One chunk of a file as verify() found it: the nodes holding a verified copy."""

    index: int
    chunk_id: str
    offset: int
    size: int
    nodes: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "chunk_hash": self.chunk_id,
            "offset": self.offset,
            "size": self.size,
            "nodes": list(self.nodes),
            "count": self.count,
        }


@dataclass(frozen=True)
class VerifyReport:
    """Result of verify(): every replica read and hash-checked."""

    file_hash: str
    file_name: str
    size: int
    replication_factor: int
    chunks: tuple[ChunkStatus, ...]
    missing_chunks: tuple[str, ...]
    bad_replicas: tuple[tuple[str, str], ...]  # (chunk id, node id): corrupt or unreadable
    manifest_copies: int = 0  # nodes holding a readable manifest of the file

    @property
    def retrievable(self) -> bool:
        return not self.missing_chunks

    def _counts(self) -> list[int]:
        # an empty file has no chunks: its manifest copies are all there is to replicate
        return [c.count for c in self.chunks] if self.chunks else [self.manifest_copies]

    @property
    def replication_min(self) -> int:
        return min(self._counts())

    @property
    def replication_max(self) -> int:
        return max(self._counts())

    @property
    def replication_avg(self) -> float:
        counts = self._counts()
        return sum(counts) / len(counts)

    def to_dict(self) -> dict[str, Any]:
        """The seed's /verify fields (plus size, replication_factor, bad_replicas)."""
        return {
            "file_hash": self.file_hash,
            "file_name": self.file_name,
            "file_size": self.size,
            "replication_factor": self.replication_factor,
            "retrievable": self.retrievable,
            "missing_chunks": list(self.missing_chunks),
            "replication": {
                "min": self.replication_min,
                "avg": round(self.replication_avg, 3),
                "max": self.replication_max,
            },
            "bad_replicas": [list(b) for b in self.bad_replicas],
            "manifest_copies": self.manifest_copies,
            "chunks": [c.to_dict() for c in self.chunks],
        }


@dataclass(frozen=True)
class ScrubReport:
    """Counts of one scrub pass (every field an int)."""

    files: int = 0
    checked: int = 0  # chunks whose replicas were all read and verified
    replicas: int = 0  # replicas read
    bytes_read: int = 0
    bad: int = 0  # corrupt or unreadable replicas
    missing: int = 0  # copies short of the target
    repaired: int = 0  # copies written
    lost: int = 0  # chunks with no verified replica


@dataclass(frozen=True)
class NodeStats:
    """Per-node figures for /status."""

    node_id: str
    weight: float
    chunks: int
    used_bytes: int
    free_bytes: int
    error: str | None = None
    kind: str = "local"

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "kind": self.kind,
            "reachable": self.error is None,
            "weight": self.weight,
            "chunks": self.chunks,
            "used_bytes": self.used_bytes,
            "free_bytes": self.free_bytes,
            "error": self.error,
        }


@dataclass(frozen=True)
class _Scan:
    holders: tuple[str, ...]
    bad: tuple[str, ...]
    bytes_read: int
    replicas: int


class _PutWriter:
    """Per-node write batches for one put: bounded in-flight bytes, fallback on node failure."""

    def __init__(self, store: ChunkStore, quorum: int) -> None:
        self.store = store
        self.quorum = quorum
        self.pending: dict[str, list[tuple[str, bytes, list[str]]]] = {}
        self.pending_bytes: dict[str, int] = {}
        self.inflight: deque[tuple[Future[int], str, list[tuple[str, bytes, list[str]]], int]]
        self.inflight = deque()
        self.inflight_bytes = 0
        self.assigned: dict[str, set[str]] = {}
        self.failed_nodes: set[str] = set()

    def add(self, cid: str, data: bytes, order: list[str]) -> None:
        chosen = [n for n in order if n not in self.failed_nodes][: self.quorum]
        if len(chosen) < self.quorum:
            raise WriteQuorumError(f"chunk {cid}: fewer than {self.quorum} nodes available")
        self.assigned[cid] = set(chosen)
        for nid in chosen:
            self._enqueue(nid, cid, data, order)

    def _enqueue(self, nid: str, cid: str, data: bytes, order: list[str]) -> None:
        items = self.pending.setdefault(nid, [])
        items.append((cid, data, order))
        size = self.pending_bytes.get(nid, 0) + len(data)
        self.pending_bytes[nid] = size
        if len(items) >= self.store.batch_chunks or size >= self.store.batch_bytes:
            self._submit(nid)

    def _submit(self, nid: str) -> None:
        items = self.pending.pop(nid, [])
        nbytes = self.pending_bytes.pop(nid, 0)
        if not items:
            return
        node = self.store._by_id[nid]
        batch = [(cid, data) for cid, data, _ in items]
        fut = self.store._executor().submit(node.put_chunks, batch)
        self.inflight.append((fut, nid, items, nbytes))
        self.inflight_bytes += nbytes
        while self.inflight and (
            self.inflight_bytes > self.store.max_inflight_bytes or self.inflight[0][0].done()
        ):
            self._harvest_one()

    def _harvest_one(self) -> None:
        fut, nid, items, nbytes = self.inflight.popleft()
        self.inflight_bytes -= nbytes
        try:
            fut.result()
        except NodeError as exc:
            log.warning("put: node %s failed, falling back: %s", nid, exc)
            self.failed_nodes.add(nid)
            for cid, data, order in items:
                taken = self.assigned[cid]
                alt = [n for n in order if n not in taken and n not in self.failed_nodes]
                if not alt:
                    raise WriteQuorumError(
                        f"chunk {cid}: fewer than {self.quorum} nodes accepted it"
                    ) from exc
                taken.add(alt[0])
                self._enqueue(alt[0], cid, data, order)

    def finish(self) -> None:
        while self.pending or self.inflight:
            for nid in list(self.pending):
                self._submit(nid)
            while self.inflight:
                self._harvest_one()

    def abort(self) -> None:
        futures = [f for f, *_ in self.inflight]
        for f in futures:
            f.cancel()
        wait_futures(futures)
        self.inflight.clear()
        self.pending.clear()


def _shuffled(items: list[str], rng: np.random.Generator | random.Random) -> list[str]:
    if isinstance(rng, random.Random):
        out = list(items)
        rng.shuffle(out)
        return out
    return [items[int(i)] for i in rng.permutation(len(items))]


class ChunkStore:
    """Files as content-addressed chunks replicated on nodes by weighted rendezvous hashing.

    Manifests live on the nodes (placed like chunks, by the file hash) and in `index`, which is
    a cache rebuildable with `rebuild_index()`. Replicas that fail verification on a read are
    skipped, recorded in `bad_replicas` and passed to `on_bad_replica`.
    """

    def __init__(
        self,
        nodes: Sequence[NodeBackend],
        chunk_size: int = CHUNK_SIZE,
        index: FileIndex | None = None,
        *,
        on_bad_replica: BadReplicaCallback | None = None,
        batch_chunks: int = 16,
        batch_bytes: int = 4 << 20,
        max_inflight_bytes: int = 64 << 20,
        readahead: int = 3,
        threads: int | None = None,
    ) -> None:
        if not nodes:
            raise InvalidNodeError("a store needs at least one node")
        self.nodes = list(nodes)
        self._pairs = node_pairs(self.nodes)
        self._by_id = {n.node_id: n for n in self.nodes}
        self.chunk_size = check_chunk_size(chunk_size)
        self.index: FileIndex = index if index is not None else MemoryIndex()
        self.on_bad_replica = on_bad_replica
        self.bad_replicas: deque[tuple[str, str]] = deque(maxlen=10_000)
        self.batch_chunks = max(1, batch_chunks)
        self.batch_bytes = max(1, batch_bytes)
        self.max_inflight_bytes = max(1, max_inflight_bytes)
        self.readahead = max(1, readahead)
        self._threads = threads or max(4, 2 * len(self.nodes))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    # plumbing ----------------------------------------------------------------------------------

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            # a pool inherited through fork() has no threads in the child: start a fresh one
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="occ-store")
                self._pool_pid = os.getpid()
            return self._pool

    def close(self) -> None:
        """Stop the worker threads (the store can still be used; they restart on demand)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_r(self, r: object) -> int:
        return check_replication(r, len(self.nodes))

    def _report_bad(self, cid: str, nid: str, callback: BadReplicaCallback | None) -> None:
        self.bad_replicas.append((cid, nid))
        for cb in (self.on_bad_replica, callback):
            if cb is not None:
                try:
                    cb(cid, nid)
                except Exception:  # a reporting hook must never break a read
                    log.exception("bad-replica callback failed")

    # put ---------------------------------------------------------------------------------------

    def put(
        self,
        stream: BinaryIO,
        name: str,
        replication_factor: int,
        *,
        quorum: int | None = None,
        expires_at: float | None = None,
        expected_hash: str | None = None,
    ) -> Manifest:
        """Store a stream and return its manifest once every chunk is durable on `quorum` nodes.

        Each chunk goes to the first `quorum` (default r) of its r rendezvous targets (the next
        ranked node if one fails); copies beyond the quorum are left to repair(). The manifest
        is then written to the r nodes chosen for the file hash and to the index. Chunks are
        copy-if-absent, so storing the same content again adds no replicas and keeps one
        manifest (with the new name and r). The name is metadata only. If the stream fails
        midway nothing is registered; chunks already written stay as orphans until
        `sweep_orphans` removes them (or a later put of the same content reuses them).
        With `expected_hash`, a stream whose SHA-256 differs registers nothing either
        (ContentMismatchError): the one hash computed while chunking is the verification.
        """
        r = self._check_r(replication_factor)
        w = r if quorum is None else quorum
        if not isinstance(w, int) or isinstance(w, bool) or not 1 <= w <= r:
            raise InvalidReplicationError(f"write quorum must be an int in 1..{r}, got {quorum!r}")
        if not isinstance(name, str):
            raise TypeError("name must be a str")
        if expires_at is not None and not math.isfinite(expires_at):
            raise ValueError("expires_at must be finite")
        reader = ChunkedReader(stream, self.chunk_size)
        writer = _PutWriter(self, w)
        refs: list[ChunkRef] = []
        placement: dict[str, tuple[str, ...]] = {}
        try:
            for chunk in reader:
                refs.append(ChunkRef(chunk.id, chunk.offset, len(chunk.data)))
                if chunk.id in placement:
                    continue
                order = rank_pairs(chunk.id, self._pairs)
                placement[chunk.id] = tuple(order[:r])
                writer.add(chunk.id, chunk.data, order)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        if expected_hash is not None and reader.file_hash != expected_hash.lower():
            raise ContentMismatchError(f"content hash {reader.file_hash} is not {expected_hash}")
        manifest = Manifest(
            reader.file_hash,
            name,
            reader.size,
            self.chunk_size,
            tuple(refs),
            r,
            placement,
            time.time(),
            None if expires_at is None else float(expires_at),
        )
        old = self.index.get(manifest.file_hash)
        self._store_manifest(manifest, w)
        self.index.put(manifest)
        if old is not None and old.chunk_size != manifest.chunk_size:
            self._delete_unreferenced(old.chunk_ids())
        return manifest

    def _store_manifest(self, manifest: Manifest, quorum: int) -> int:
        """Write the manifest to the r nodes ranked for its file hash; return copies written."""
        data = manifest.to_json()
        fh = manifest.file_hash
        order = rank_pairs(fh, self._pairs)
        r = manifest.replication_factor

        def write(nid: str) -> bool:
            try:
                self._by_id[nid].put_manifest(fh, data)
                return True
            except NodeError as exc:
                log.warning("manifest %s not written to %s: %s", fh, nid, exc)
                return False

        written = [
            nid
            for nid, ok in zip(order[:r], self._executor().map(write, order[:r]), strict=False)
            if ok
        ]
        for nid in order[r:]:
            if len(written) >= r:
                break
            if write(nid):
                written.append(nid)
        if len(written) < quorum:
            raise WriteQuorumError(f"manifest {fh}: only {len(written)} of {quorum} copies written")
        for nid in order:
            if nid not in written:
                # a stale copy left behind loses to the newer created_at on rebuild
                with contextlib.suppress(NodeError):
                    self._by_id[nid].delete_manifest(fh)
        return len(written)

    # manifests ---------------------------------------------------------------------------------

    def _manifest_from_nodes(self, fh: str) -> Manifest | None:
        best: Manifest | None = None
        for nid in rank_pairs(fh, self._pairs):
            try:
                raw = self._by_id[nid].get_manifest(fh)
                if raw is None:
                    continue
                m = Manifest.from_json(raw)
            except (NodeError, ManifestError) as exc:
                log.warning("manifest %s on %s unusable: %s", fh, nid, exc)
                continue
            if m.file_hash == fh and (best is None or m.created_at > best.created_at):
                best = m
        return best

    def manifest(self, file_hash: str) -> Manifest:
        """Return the manifest; InvalidHashError if malformed, UnknownFileError if unknown.

        Falls back to the manifests on the nodes (and re-caches it) when the index lacks it.
        """
        fh = check_hash(file_hash)
        m = self.index.get(fh)
        if m is None:
            m = self._manifest_from_nodes(fh)
            if m is None:
                raise UnknownFileError(f"unknown file {fh}")
            self.index.put(m)
        return m

    def list_files(self, offset: int = 0, limit: int = 100) -> list[Manifest]:
        """Return manifests newest first."""
        return self.index.list(offset, limit)

    def count_files(self) -> int:
        """Return the number of files in the index."""
        return self.index.count()

    # read --------------------------------------------------------------------------------------

    def read(
        self,
        file_hash: str,
        start: int = 0,
        end: int | None = None,
        *,
        on_bad_replica: BadReplicaCallback | None = None,
    ) -> Iterator[bytes]:
        """Return an iterator over the verified bytes [start, end) of the file (end exclusive).

        The hash, the file and the range are checked before this returns (InvalidHashError,
        UnknownFileError, InvalidRangeError). Each chunk is read from its replicas in rendezvous
        order; a replica that is corrupt, missing or unreadable is skipped and reported; if none
        verifies, iteration raises ChunkUnavailableError. Chunks are fetched a few ahead by
        worker threads, so reading and hashing overlap.
        """
        m = self.manifest(file_hash)
        stop = m.size if end is None else end
        for v in (start, stop):
            if not isinstance(v, int) or isinstance(v, bool):
                raise InvalidRangeError(f"range bounds must be ints, got {v!r}")
        if not 0 <= start <= stop <= m.size:
            raise InvalidRangeError(f"range [{start}, {stop}) outside file of {m.size} bytes")
        return self._read_iter(m, start, stop, on_bad_replica)

    def _fetch(
        self, cid: str, preferred: tuple[str, ...]
    ) -> tuple[bytes | None, list[tuple[str, str]]]:
        bad: list[tuple[str, str]] = []
        tried: set[str] = set()
        candidates: Iterator[str] = iter(preferred)
        ranked = False
        while True:
            nid = next(candidates, None)
            if nid is None:
                if ranked:
                    return None, bad
                ranked = True
                candidates = iter(rank_pairs(cid, self._pairs))
                continue
            node = self._by_id.get(nid)
            if node is None or nid in tried:
                continue
            tried.add(nid)
            try:
                return node.get_chunk(cid), bad
            except ChunkMissingError as exc:
                if nid in preferred:
                    bad.append((nid, str(exc)))
            except (CorruptChunkError, NodeError) as exc:
                bad.append((nid, str(exc)))

    def _read_iter(
        self, m: Manifest, start: int, end: int, callback: BadReplicaCallback | None
    ) -> Iterator[bytes]:
        if start >= end:
            return
        first, last = start // m.chunk_size, (end - 1) // m.chunk_size
        refs = m.chunks[first : last + 1]
        pool = self._executor()
        window: deque[Future[tuple[bytes | None, list[tuple[str, str]]]]] = deque()
        nxt = 0

        def fill() -> None:
            nonlocal nxt
            while nxt < len(refs) and len(window) < self.readahead:
                cid = refs[nxt].id
                window.append(pool.submit(self._fetch, cid, m.placement.get(cid, ())))
                nxt += 1

        try:
            fill()
            for ref in refs:
                data, bad = window.popleft().result()
                fill()
                for nid, why in bad:
                    log.warning("bad replica %s on %s skipped: %s", ref.id, nid, why)
                    self._report_bad(ref.id, nid, callback)
                if data is None:
                    raise ChunkUnavailableError(f"chunk {ref.id}: no replica verifies")
                if len(data) != ref.size:  # a verified chunk of another size: a bad manifest
                    raise ChunkUnavailableError(f"chunk {ref.id}: size differs from manifest")
                lo = max(start - ref.offset, 0)
                hi = min(end - ref.offset, ref.size)
                yield data if (lo == 0 and hi == ref.size) else data[lo:hi]
        finally:
            for fut in window:
                fut.cancel()

    # verify ------------------------------------------------------------------------------------

    def _scan_chunk(self, cid: str) -> _Scan:
        """Read and verify the chunk on every node (no side effects)."""
        holders: list[str] = []
        bad: list[str] = []
        nbytes = 0
        replicas = 0
        for node in self.nodes:
            try:
                data = node.get_chunk(cid)
            except ChunkMissingError:
                continue
            except (CorruptChunkError, NodeError):
                bad.append(node.node_id)
                replicas += 1
                continue
            holders.append(node.node_id)
            nbytes += len(data)
            replicas += 1
        return _Scan(tuple(holders), tuple(bad), nbytes, replicas)

    def _scan(self, ids: Sequence[str]) -> dict[str, _Scan]:
        return dict(zip(ids, self._executor().map(self._scan_chunk, ids), strict=False))

    def verify(self, file_hash: str) -> VerifyReport:
        """Read and hash-check every replica of every chunk; return who holds verified copies."""
        m = self.manifest(file_hash)
        scans = self._scan(m.chunk_ids())
        bad: list[tuple[str, str]] = []
        for cid, scan in scans.items():
            for nid in scan.bad:
                bad.append((cid, nid))
                self._report_bad(cid, nid, None)
        chunks = tuple(
            ChunkStatus(i, ref.id, ref.offset, ref.size, scans[ref.id].holders)
            for i, ref in enumerate(m.chunks)
        )
        missing = tuple(cid for cid, s in scans.items() if not s.holders)
        copies = self._manifest_copies(m.file_hash)
        return VerifyReport(
            m.file_hash, m.name, m.size, m.replication_factor, chunks, missing, tuple(bad), copies
        )

    def _manifest_copies(self, fh: str) -> int:
        count = 0
        for node in self.nodes:
            try:
                raw = node.get_manifest(fh)
                if raw is not None and Manifest.from_json(raw).file_hash == fh:
                    count += 1
            except (NodeError, ManifestError):
                continue
        return count

    # repair ------------------------------------------------------------------------------------

    def _targets(self, ids: Sequence[str], base: int) -> dict[str, int]:
        n = len(self.nodes)
        return {cid: min(n, max(base, self.index.chunk_target(cid))) for cid in ids}

    def _delete_bad(self, scans: Mapping[str, _Scan]) -> list[tuple[str, str]]:
        deleted: list[tuple[str, str]] = []
        for cid, scan in scans.items():
            for nid in scan.bad:
                try:
                    if self._by_id[nid].delete_chunk(cid):
                        deleted.append((cid, nid))
                except NodeError as exc:
                    log.warning("could not delete bad replica %s on %s: %s", cid, nid, exc)
        return deleted

    def _repair_chunks(
        self, ids: Sequence[str], targets: Mapping[str, int], scans: dict[str, _Scan] | None = None
    ) -> RepairResult:
        """Delete bad replicas, then plan and execute until the plan is empty (at most 3 rounds)."""
        total = RepairResult()
        for _ in range(3):
            if scans is None:
                scans = self._scan(ids)
            deleted = self._delete_bad(scans)
            plan = plan_repair(ids, {c: s.holders for c, s in scans.items()}, self._pairs, targets)
            if plan.empty:
                total = total.merged(RepairResult(lost=plan.lost, corrupt_deleted=tuple(deleted)))
                break
            total = total.merged(RepairResult(corrupt_deleted=tuple(deleted)))
            total = total.merged(execute_plan(plan, self._by_id))
            scans = None
        return total

    def _repair_manifest_copies(self, m: Manifest) -> int:
        data = m.to_json()
        written = 0
        for nid in rank_pairs(m.file_hash, self._pairs)[: m.replication_factor]:
            node = self._by_id[nid]
            try:
                if node.get_manifest(m.file_hash) != data:
                    node.put_manifest(m.file_hash, data)
                    written += 1
            except NodeError as exc:
                log.warning("manifest %s not repaired on %s: %s", m.file_hash, nid, exc)
        return written

    def repair(self, file_hash: str, replication_factor: int | None = None) -> RepairResult:
        """Bring every chunk of the file back to its target of verified copies on distinct nodes.

        The target of a chunk is the largest of `replication_factor` (default: the manifest's)
        and the targets of other files sharing it. Corrupt replicas are deleted and rewritten
        from a copy that verifies; chunks with no verified copy are returned in `lost`. Also
        rewrites missing or stale manifest copies. Idempotent.
        """
        m = self.manifest(file_hash)
        base = (
            m.replication_factor
            if replication_factor is None
            else self._check_r(replication_factor)
        )
        ids = m.chunk_ids()
        result = self._repair_chunks(ids, self._targets(ids, base))
        manifests = RepairResult(lost=result.lost, failed=result.failed)
        return result.merged(
            RepairResult(manifests_written=self._repair_manifest_copies(m)).merged(manifests)
        )

    def rebalance(self, file_hash: str, replication_factor: int) -> RepairResult:
        """Set the file's replication target to r, then copy up or trim extras to exactly r.

        Extras are removed only after r verified copies exist, and never below the target of
        another file sharing the chunk.
        """
        m = self.manifest(file_hash)
        r = self._check_r(replication_factor)
        placement = {cid: tuple(rank_pairs(cid, self._pairs)[:r]) for cid in m.chunk_ids()}
        new = Manifest(
            m.file_hash,
            m.name,
            m.size,
            m.chunk_size,
            m.chunks,
            r,
            placement,
            m.created_at,
            m.expires_at,
        )
        self._store_manifest(new, 1)
        self.index.put(new)
        ids = new.chunk_ids()
        targets = {cid: min(len(self.nodes), max(1, self.index.chunk_target(cid))) for cid in ids}
        return self._repair_chunks(ids, targets)

    # delete ------------------------------------------------------------------------------------

    def _delete_unreferenced(self, ids: Sequence[str], keep_recent_s: float = 0.0) -> list[str]:
        errors: list[str] = []
        for cid in ids:
            if self.index.chunk_target(cid) != 0:
                continue
            for node in self.nodes:
                try:
                    node.discard_if_stale(cid, keep_recent_s)
                except NodeError as exc:
                    errors.append(str(exc))
        return errors

    def delete(self, file_hash: str, *, keep_recent_s: float = 0.0) -> None:
        """Remove the file's manifest everywhere and every chunk no other file references.

        A replica written or reused by a put within `keep_recent_s` stays for `sweep_orphans`:
        a put still running (not registered yet) may count on it. With the sweep's age here, a
        delete racing an upload of shared content never takes a chunk from under it.
        Raises NodeError (after doing everything it can) if a node could not be cleaned;
        repeating the call is safe.
        """
        m = self.manifest(file_hash)
        self.index.delete(m.file_hash)
        errors: list[str] = []
        for node in self.nodes:
            try:
                node.delete_manifest(m.file_hash)
            except NodeError as exc:
                errors.append(str(exc))
        errors += self._delete_unreferenced(m.chunk_ids(), keep_recent_s)
        if errors:
            raise NodeError(f"delete {m.file_hash} incomplete: {'; '.join(errors[:3])}")

    def sweep_orphans(self, older_than_s: float) -> int:
        """Remove chunk replicas that no manifest references, written or claimed over `older_than_s` ago.

        Orphans come from uploads that failed midway (put() registers nothing then). The
        references are read from the manifests on the nodes (the index is only a cache) and
        the index is asked too; a node that cannot be listed, or a manifest no copy of which
        parses, stops the sweep (NodeError) rather than risk a chunk in use. A put running
        longer than `older_than_s` could lose the chunks it wrote first: keep it above the
        longest upload. Returns the number of replicas removed.
        """
        if not math.isfinite(older_than_s) or older_than_s < 0:
            raise ValueError("older_than_s must be a finite number >= 0")
        holders: dict[str, list[NodeBackend]] = {}
        for node in self.nodes:
            for fh in node.list_manifests():
                holders.setdefault(fh, []).append(node)
        referenced: set[str] = set()
        for fh, nodes in holders.items():
            parsed = failed = 0
            for node in nodes:
                try:
                    raw = node.get_manifest(fh)
                    if raw is None:
                        continue  # deleted meanwhile
                    referenced.update(Manifest.from_json(raw).chunk_ids())
                    parsed += 1
                except (NodeError, ManifestError):
                    failed += 1
            if failed and not parsed:
                raise NodeError(f"orphan sweep stopped: no copy of manifest {fh} is readable")
        removed = 0
        for node in self.nodes:
            for cid in list(node.stale_chunks(older_than_s)):
                if cid in referenced or self.index.chunk_target(cid) != 0:
                    continue
                removed += node.discard_if_stale(cid, older_than_s)
        return removed

    # index -------------------------------------------------------------------------------------

    def rebuild_index(self, index: FileIndex | None = None) -> int:
        """Rebuild `index` (default: the store's own) from the manifests on the nodes.

        The newest copy (by created_at) of each manifest wins; entries with no manifest on any
        node are dropped. Returns the number of files.
        """
        target = self.index if index is None else index
        found: dict[str, Manifest] = {}
        for node in self.nodes:
            try:
                hashes = list(node.list_manifests())
            except NodeError as exc:
                log.warning("rebuild: node %s unreadable: %s", node.node_id, exc)
                continue
            for fh in hashes:
                try:
                    raw = node.get_manifest(fh)
                    if raw is None:
                        continue
                    m = Manifest.from_json(raw)
                except (NodeError, ManifestError) as exc:
                    log.warning("rebuild: manifest %s on %s unusable: %s", fh, node.node_id, exc)
                    continue
                if m.file_hash != fh:
                    continue
                old = found.get(fh)
                if old is None or (m.created_at, m.to_json()) > (old.created_at, old.to_json()):
                    found[fh] = m
        for m in found.values():
            target.put(m)
        for fh in target.all_file_hashes():
            if fh not in found:
                target.delete(fh)
        return len(found)

    # scrub -------------------------------------------------------------------------------------

    def scrub(self, rng: np.random.Generator | random.Random, byte_budget: int) -> ScrubReport:
        """Verify replicas of randomly chosen files and chunks within `byte_budget` bytes read.

        A bad (corrupt, unreadable) or missing replica is repaired at once from a copy that
        verifies; a chunk with no verified copy is counted as lost. With a budget of at least
        r times the stored bytes one pass checks every chunk.
        """
        budget = int(byte_budget)
        files = checked = replicas = nbytes = bad = missing = repaired = lost = 0
        seen: set[str] = set()
        n = len(self.nodes)
        for fh in _shuffled(self.index.all_file_hashes(), rng):
            if budget <= 0:
                break
            m = self.index.get(fh)
            if m is None:
                continue
            files += 1
            for cid in _shuffled(m.chunk_ids(), rng):
                if budget <= 0:
                    break
                if cid in seen:
                    continue
                seen.add(cid)
                scan = self._scan_chunk(cid)
                checked += 1
                replicas += scan.replicas
                nbytes += scan.bytes_read
                budget -= max(scan.bytes_read, 1)
                target = min(n, max(m.replication_factor, self.index.chunk_target(cid)))
                bad += len(scan.bad)
                short = max(0, target - len(scan.holders))
                missing += short
                if scan.bad or short:
                    result = self._repair_chunks([cid], {cid: target}, {cid: scan})
                    repaired += len(result.copied)
                    lost += len(result.lost)
        return ScrubReport(files, checked, replicas, nbytes, bad, missing, repaired, lost)

    # nodes -------------------------------------------------------------------------------------

    def node_census(self) -> list[tuple[NodeStats, list[str]]]:
        """Per node, its figures and its chunk ids from one walk (sketch refresh and /status)."""
        out: list[tuple[NodeStats, list[str]]] = []
        for node in self.nodes:
            kind = str(getattr(node, "kind", "local"))
            try:
                ids, used, free = node.census()
                stats = NodeStats(node.node_id, node.weight, len(ids), used, free, None, kind)
            except NodeError as exc:
                ids, stats = [], NodeStats(node.node_id, node.weight, 0, 0, 0, str(exc), kind)
            out.append((stats, ids))
        return out

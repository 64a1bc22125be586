"""ChunkStore on real directories: round trips, ranges, corruption, node loss, bad input."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from occ_storage.chunking import CHUNK_SIZE
from occ_storage.errors import (
    ChunkUnavailableError,
    CorruptChunkError,
    InvalidHashError,
    InvalidRangeError,
    InvalidReplicationError,
    ManifestError,
    NodeError,
    UnknownFileError,
)
from occ_storage.index import ChunkRef, Manifest, MemoryIndex
from occ_storage.nodes import LocalDirNode
from occ_storage.placement import rank_nodes
from occ_storage.store import ChunkStore

from .conftest import SMALL_CS, make_nodes, payload


def put(store: ChunkStore, data: bytes, r: int = 3, name: str = "f.bin", **kw: object) -> Manifest:
    return store.put(io.BytesIO(data), name, r, **kw)  # type: ignore[arg-type]


def read_all(store: ChunkStore, fh: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(store.read(fh, start, end))


def holders(nodes: list[LocalDirNode], cid: str) -> list[str]:
    """Nodes with a replica that verifies."""
    out = []
    for n in nodes:
        try:
            n.get_chunk(cid)
            out.append(n.node_id)
        except Exception:
            pass
    return out


def present(nodes: list[LocalDirNode], cid: str) -> int:
    return sum(n.has_chunk(cid) for n in nodes)


class Exploding(io.RawIOBase):
    """Yields `good` bytes, then raises (a client that disconnects)."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise ConnectionResetError("client went away")
        n = min(len(b), self.left)
        b[:n] = b"\x07" * n
        self.left -= n
        return n


class NeverRead(io.RawIOBase):
    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        raise AssertionError("the stream must not be read")


# round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cs", [CHUNK_SIZE, SMALL_CS])
@pytest.mark.parametrize("delta", ["0", "1", "cs-1", "cs", "cs+1"])
def test_round_trip_boundary_sizes(tmp_path: Path, cs: int, delta: str) -> None:
    size = {"0": 0, "1": 1, "cs-1": cs - 1, "cs": cs, "cs+1": cs + 1}[delta]
    nodes = make_nodes(tmp_path)
    data = payload(size, seed=size)
    with ChunkStore(nodes, chunk_size=cs) as store:
        m = put(store, data)
        assert m.file_hash == hashlib.sha256(data).hexdigest()
        assert (m.size, m.chunk_size, m.replication_factor) == (size, cs, 3)
        assert len(m.chunks) == -(-size // cs)
        assert read_all(store, m.file_hash) == data
        for ref in m.chunks:
            assert sorted(holders(nodes, ref.id)) == sorted(m.placement[ref.id])
            assert len(set(m.placement[ref.id])) == 3
        report = store.verify(m.file_hash)
        assert report.retrievable and report.missing_chunks == ()
        assert report.manifest_copies == 3
        assert (report.replication_min, report.replication_max) == (3, 3)  # size 0: manifests


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_round_trip_several_mib(tmp_path: Path, sync: str) -> None:
    nodes = make_nodes(tmp_path, sync=sync)
    data = payload(5 * 2**20 + 12345, seed=9)
    with ChunkStore(nodes) as store:
        m = put(store, data)
        assert len(m.chunks) == 21
        assert read_all(store, m.file_hash) == data
        assert read_all(store, m.file_hash.upper()) == data
        d = store.verify(m.file_hash).to_dict()
        assert d["replication"] == {"min": 3, "avg": 3.0, "max": 3}
        assert d["file_name"] == "f.bin" and d["retrievable"] and d["missing_chunks"] == []
        assert len(d["chunks"]) == 21 and d["chunks"][0]["count"] == 3


def test_ranged_reads_at_chunk_boundaries(store: ChunkStore) -> None:
    data = payload(10 * SMALL_CS + 17, seed=1)
    fh = put(store, data).file_hash
    size = len(data)
    cs = SMALL_CS
    ranges = [(0, 0), (0, 1), (cs - 1, cs + 1), (cs, 2 * cs), (cs, cs), (cs - 1, cs), (cs, cs + 1)]
    ranges += [(size - 1, size), (0, size), (size, size), (500, 5000), (10 * cs, size), (3, 2 * cs)]
    for start, end in ranges:
        assert read_all(store, fh, start, end) == data[start:end], (start, end)
    assert read_all(store, fh, 2 * cs) == data[2 * cs :]


@pytest.mark.parametrize(
    "rng", [(-1, 10), (0, 10 * SMALL_CS + 18), (5, 4), (10 * SMALL_CS + 18, None)]
)
def test_out_of_range_raises_before_iteration(
    store: ChunkStore, rng: tuple[int, int | None]
) -> None:
    fh = put(store, payload(10 * SMALL_CS + 17)).file_hash
    with pytest.raises(InvalidRangeError):
        store.read(fh, rng[0], rng[1])  # eager: no next() needed


def test_non_int_range(store: ChunkStore) -> None:
    fh = put(store, b"abc").file_hash
    with pytest.raises(InvalidRangeError):
        store.read(fh, 1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidRangeError):
        store.read(fh, True)


# placement ------------------------------------------------------------------------------------


def test_no_node_holds_a_whole_file(store: ChunkStore, nodes: list[LocalDirNode]) -> None:
    m = put(store, payload(12 * SMALL_CS, seed=3))
    ids = m.chunk_ids()
    assert len(ids) >= 8
    for node in nodes:
        held = sum(node.has_chunk(c) for c in ids)
        assert held < len(ids), node.node_id
    for c in ids:
        assert len(holders(nodes, c)) == 3


def test_storing_twice_adds_no_replicas(store: ChunkStore, nodes: list[LocalDirNode]) -> None:
    data = payload(9 * SMALL_CS + 5, seed=4)
    m1 = put(store, data, name="a")
    files_before = sorted(str(p) for p in Path(nodes[0].root).parent.rglob("*") if p.is_file())
    m2 = put(store, data, name="b")
    files_after = sorted(str(p) for p in Path(nodes[0].root).parent.rglob("*") if p.is_file())
    assert files_before == files_after
    assert m1.file_hash == m2.file_hash
    assert store.count_files() == 1
    assert store.manifest(m1.file_hash).name == "b"
    for c in m1.chunk_ids():
        assert present(nodes, c) == 3
    m3 = put(store, data, r=2)  # the new r becomes the target (no copies removed by put)
    assert store.manifest(m3.file_hash).replication_factor == 2
    assert store.count_files() == 1


def test_repeated_chunks_in_one_file(store: ChunkStore, nodes: list[LocalDirNode]) -> None:
    data = bytes(8 * SMALL_CS)  # eight identical chunks
    m = put(store, data)
    assert len(m.chunks) == 8 and len(m.chunk_ids()) == 1
    assert present(nodes, m.chunks[0].id) == 3
    assert read_all(store, m.file_hash) == data
    assert [c.count for c in store.verify(m.file_hash).chunks] == [3] * 8


def test_quorum_writes_only_w_then_repair_completes(
    store: ChunkStore, nodes: list[LocalDirNode]
) -> None:
    m = put(store, payload(6 * SMALL_CS, seed=5), r=3, quorum=2)
    assert m.replication_factor == 3
    for c in m.chunk_ids():
        assert sorted(holders(nodes, c)) == sorted(m.placement[c][:2])
    assert store.verify(m.file_hash).replication_min == 2
    result = store.repair(m.file_hash)
    assert result.ok and len(result.copied) == len(m.chunk_ids())
    for c in m.chunk_ids():
        assert sorted(holders(nodes, c)) == sorted(m.placement[c])
    assert store.repair(m.file_hash).copied == ()  # idempotent


def test_failing_node_during_put_falls_back(tmp_path: Path) -> None:
    nodes = make_nodes(tmp_path / "nodes")
    broken = tmp_path / "nodes" / "node_002"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"a file where a directory should be")
    with ChunkStore(nodes, chunk_size=SMALL_CS, batch_chunks=2) as store:
        data = payload(20 * SMALL_CS, seed=6)
        m = put(store, data)
        for c in m.chunk_ids():
            hs = holders(nodes, c)
            assert len(hs) == 3 and "node_002" not in hs
        assert read_all(store, m.file_hash) == data


def test_put_fails_without_quorum(tmp_path: Path) -> None:
    nodes = make_nodes(tmp_path / "nodes", 3)
    for i in (1, 2):
        p = tmp_path / "nodes" / f"node_{i:03d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    with ChunkStore(nodes, chunk_size=SMALL_CS) as store:
        with pytest.raises(NodeError):
            put(store, payload(4 * SMALL_CS), r=2)
        assert store.count_files() == 0


def test_stream_failure_registers_nothing(store: ChunkStore) -> None:
    with pytest.raises(ConnectionResetError):
        store.put(Exploding(5 * SMALL_CS + 3), "x", 3)  # type: ignore[arg-type]
    assert store.count_files() == 0
    assert store.rebuild_index(MemoryIndex()) == 0


# corruption and loss -------------------------------------------------------------------------


def test_corrupt_replicas_never_served_and_repaired(
    store: ChunkStore, nodes: list[LocalDirNode]
) -> None:
    data = payload(8 * SMALL_CS + 100, seed=7)
    m = put(store, data)
    by_id = {n.node_id: n for n in nodes}
    c_flip, c_trunc = m.chunks[1].id, m.chunks[8].id
    first = by_id[m.placement[c_flip][0]]
    raw = bytearray(first.chunk_path(c_flip).read_bytes())
    raw[10] ^= 0xFF
    first.chunk_path(c_flip).write_bytes(bytes(raw))
    second = by_id[m.placement[c_trunc][1]]
    second.chunk_path(c_trunc).write_bytes(second.chunk_path(c_trunc).read_bytes()[:-3])
    seen: list[tuple[str, str]] = []
    store.bad_replicas.clear()
    assert read_all(store, m.file_hash) == data  # full read
    assert (
        b"".join(
            store.read(
                m.file_hash,
                SMALL_CS + 5,
                2 * SMALL_CS,
                on_bad_replica=lambda c, n: seen.append((c, n)),
            )
        )
        == data[SMALL_CS + 5 : 2 * SMALL_CS]
    )
    assert set(store.bad_replicas) == {(c_flip, first.node_id)}  # later replicas are not read
    assert seen == [(c_flip, first.node_id)]
    report = store.verify(m.file_hash)
    assert report.retrievable and report.replication_min == 2
    assert set(report.bad_replicas) == {(c_flip, first.node_id), (c_trunc, second.node_id)}
    result = store.repair(m.file_hash)
    assert result.ok
    assert set(result.corrupt_deleted) == {(c_flip, first.node_id), (c_trunc, second.node_id)}
    assert first.get_chunk(c_flip) and second.get_chunk(c_trunc)  # rewritten in place
    for c in m.chunk_ids():
        assert sorted(holders(nodes, c)) == sorted(m.placement[c])
    assert store.verify(m.file_hash).replication_min == 3


def test_corrupt_first_listed_replica_only(store: ChunkStore, nodes: list[LocalDirNode]) -> None:
    data = payload(3 * SMALL_CS, seed=8)
    m = put(store, data)
    by_id = {n.node_id: n for n in nodes}
    for c in m.chunk_ids():
        p = by_id[m.placement[c][0]].chunk_path(c)
        p.write_bytes(b"\0" + p.read_bytes()[1:])
    assert read_all(store, m.file_hash) == data
    result = store.repair(m.file_hash)
    assert result.ok and len(result.copied) == 3
    for c in m.chunk_ids():
        assert by_id[m.placement[c][0]].get_chunk(c)
        assert sorted(holders(nodes, c)) == sorted(m.placement[c])


def test_deleted_node_directory_is_repaired(store: ChunkStore, nodes: list[LocalDirNode]) -> None:
    data = payload(15 * SMALL_CS, seed=10)
    m = put(store, data)
    shutil.rmtree(nodes[1].root)
    assert read_all(store, m.file_hash) == data
    assert store.verify(m.file_hash).replication_min == 2
    store.repair(m.file_hash)
    for c in m.chunk_ids():
        hs = holders(nodes, c)
        assert len(hs) == 3 == len(set(hs))
        assert sorted(hs) == sorted(m.placement[c])  # the replaced disk gets its chunks back
    for nid in rank_nodes(m.file_hash, nodes)[:3]:  # manifest copies restored too
        assert next(n for n in nodes if n.node_id == nid).get_manifest(m.file_hash) == m.to_json()


def test_lose_two_of_five_nodes_no_loss(store: ChunkStore, nodes: list[LocalDirNode]) -> None:
    files = [put(store, payload(7 * SMALL_CS + i, seed=20 + i), name=f"f{i}") for i in range(4)]
    datas = [payload(7 * SMALL_CS + i, seed=20 + i) for i in range(4)]
    shutil.rmtree(nodes[0].root)
    shutil.rmtree(nodes[3].root)
    for m, d in zip(files, datas, strict=True):
        assert read_all(store, m.file_hash) == d
        result = store.repair(m.file_hash)
        assert result.ok and result.lost == ()
        for c in m.chunk_ids():
            assert len(set(holders(nodes, c))) == 3


def test_lose_all_holders_of_a_chunk(store: ChunkStore, nodes: list[LocalDirNode]) -> None:
    m = put(store, payload(5 * SMALL_CS, seed=11))
    victim = m.chunks[2].id
    for n in nodes:
        n.delete_chunk(victim)
    report = store.verify(m.file_hash)
    assert not report.retrievable and report.missing_chunks == (victim,)
    assert report.to_dict()["missing_chunks"] == [victim]
    it = store.read(m.file_hash)
    assert next(it) and next(it)
    with pytest.raises(ChunkUnavailableError):
        next(it)
    # a range avoiding the lost chunk is still served
    assert (
        read_all(store, m.file_hash, 0, 2 * SMALL_CS)
        == payload(5 * SMALL_CS, seed=11)[: 2 * SMALL_CS]
    )
    result = store.repair(m.file_hash)
    assert result.lost == (victim,) and not result.ok


def test_rebalance_up_and_down(store: ChunkStore, nodes: list[LocalDirNode]) -> None:
    data = payload(10 * SMALL_CS, seed=12)
    m = put(store, data)
    store.rebalance(m.file_hash, 4)
    assert store.manifest(m.file_hash).replication_factor == 4
    for c in m.chunk_ids():
        assert present(nodes, c) == 4 == len(set(holders(nodes, c)))
    store.rebalance(m.file_hash, 2)
    for c in m.chunk_ids():
        assert present(nodes, c) == 2 == len(set(holders(nodes, c)))
    assert read_all(store, m.file_hash) == data
    assert store.rebalance(m.file_hash, 2).copied == ()  # idempotent
    with pytest.raises(InvalidReplicationError):
        store.rebalance(m.file_hash, 6)


def test_rebalance_never_trims_below_another_files_target(
    store: ChunkStore, nodes: list[LocalDirNode]
) -> None:
    shared = payload(SMALL_CS, seed=13)
    a = put(store, shared + payload(SMALL_CS, seed=14), r=4, name="a")
    b = put(store, shared + payload(SMALL_CS, seed=15), r=3, name="b")
    store.rebalance(b.file_hash, 1)
    assert present(nodes, a.chunks[0].id) == 4
    assert present(nodes, b.chunks[1].id) == 1


# index, delete, scrub -------------------------------------------------------------------------


def test_rebuild_index_equals_before(store: ChunkStore, nodes: list[LocalDirNode]) -> None:
    hashes = [
        put(store, payload(3 * SMALL_CS + i, seed=30 + i), r=1 + i % 5, name=f"n{i}").file_hash
        for i in range(6)
    ]
    put(store, payload(3 * SMALL_CS, seed=30), r=2, name="renamed")  # re-put: new r and name
    store.rebalance(hashes[1], 5)
    before = store.index
    assert isinstance(before, MemoryIndex)
    rebuilt = MemoryIndex()
    assert store.rebuild_index(rebuilt) == 6
    assert rebuilt == before
    for h in hashes[:3]:  # the store's own index: stale and missing entries fixed
        before.delete(h)
    assert store.rebuild_index() == 6
    assert store.index == rebuilt
    assert [m.file_hash for m in store.list_files(0, 100)] == [
        m.file_hash for m in rebuilt.list(0, 100)
    ]


def test_manifest_falls_back_to_nodes(tmp_path: Path) -> None:
    nodes = make_nodes(tmp_path)
    with ChunkStore(nodes, chunk_size=SMALL_CS) as s1:
        m = put(s1, payload(2000))
    with ChunkStore(nodes, chunk_size=SMALL_CS) as s2:  # empty index
        assert s2.manifest(m.file_hash) == m
        assert s2.count_files() == 1  # re-cached


def test_list_and_count(store: ChunkStore) -> None:
    ms = [put(store, payload(100 + i, seed=i), name=str(i)) for i in range(5)]
    assert store.count_files() == 5
    assert [m.file_hash for m in store.list_files(0, 3)] == [m.file_hash for m in ms[::-1][:3]]
    assert [m.file_hash for m in store.list_files(3, 10)] == [m.file_hash for m in ms[::-1][3:]]


def test_delete_keeps_shared_chunks(store: ChunkStore, nodes: list[LocalDirNode]) -> None:
    shared = payload(SMALL_CS, seed=40)
    a = put(store, shared + payload(2 * SMALL_CS, seed=41), name="a")
    b = put(store, shared + payload(SMALL_CS, seed=42), name="b")
    store.delete(a.file_hash)
    assert store.count_files() == 1
    with pytest.raises(UnknownFileError):
        store.manifest(a.file_hash)
    assert a.chunks[0].id == b.chunks[0].id and present(nodes, a.chunks[0].id) == 3
    assert all(present(nodes, c) == 0 for c in a.chunk_ids()[1:])
    assert all(n.get_manifest(a.file_hash) is None for n in nodes)
    store.delete(b.file_hash)
    assert all(list(n.list_chunks()) == [] and list(n.list_manifests()) == [] for n in nodes)
    with pytest.raises(UnknownFileError):
        store.delete(b.file_hash)


@pytest.mark.parametrize("rng", [random.Random(5), np.random.default_rng(5)])
def test_scrub_finds_and_repairs_bad_replicas(
    store: ChunkStore, nodes: list[LocalDirNode], rng: random.Random | np.random.Generator
) -> None:
    datas = [payload(20 * SMALL_CS, seed=50 + i) for i in range(5)]
    ms = [put(store, d, name=str(i)) for i, d in enumerate(datas)]
    replicas = [(n, c) for m in ms for c in m.chunk_ids() for n in nodes if n.has_chunk(c)]
    pick = random.Random(1).sample(range(len(replicas)), 6)
    for k, i in enumerate(pick):
        node, c = replicas[i]
        p = node.chunk_path(c)
        raw = p.read_bytes()
        p.write_bytes(raw[:-1] if k % 2 else bytes([raw[0] ^ 1]) + raw[1:])
    small = store.scrub(rng, 3 * SMALL_CS)
    assert small.checked == 1
    report = store.scrub(rng, 10**9)
    assert report.checked == 100 and report.files == 5
    assert (
        report.bad + small.bad == 6 and report.repaired + small.repaired == 6 and report.lost == 0
    )
    for node, c in replicas:
        node.get_chunk(c)
    for m, d in zip(ms, datas, strict=True):
        assert read_all(store, m.file_hash) == d
    assert store.scrub(rng, 10**9).bad == 0


def test_node_census_is_one_walk_with_exact_figures(
    store: ChunkStore, nodes: list[LocalDirNode]
) -> None:
    m = put(store, payload(4 * SMALL_CS, seed=60))
    census = store.node_census()
    stats = [s for s, _ in census]
    assert sum(s.chunks for s in stats) == 12
    assert all(s.free_bytes > 0 and s.error is None for s in stats)
    manifest_bytes = sum(
        len(n.get_manifest(m.file_hash) or b"") for n in nodes
    )  # manifests count as used bytes too
    assert sum(s.used_bytes for s in stats) == 12 * SMALL_CS + manifest_bytes
    for (st, ids), node in zip(census, nodes, strict=True):
        assert sorted(ids) == sorted(node.list_chunks())
        assert set(ids) <= set(m.chunk_ids())
        assert st.to_dict()["chunks"] == len(ids)


# bad input ------------------------------------------------------------------------------------

MALFORMED = ["xyz", "../etc/passwd", "a" * 65, "", "g" * 64, "a" * 63]


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_hash(store: ChunkStore, bad: str) -> None:
    for call in (store.manifest, store.read, store.verify, store.repair, store.delete):
        with pytest.raises(InvalidHashError):
            call(bad)
    with pytest.raises(InvalidHashError):
        store.rebalance(bad, 2)


def test_unknown_hash(store: ChunkStore) -> None:
    unknown = hashlib.sha256(b"never stored").hexdigest()
    for call in (store.manifest, store.read, store.verify, store.repair, store.delete):
        with pytest.raises(UnknownFileError):
            call(unknown)
    with pytest.raises(UnknownFileError):
        store.rebalance(unknown, 2)


@pytest.mark.parametrize("r", [0, 6, -1, True, "3"])
def test_bad_replication_checked_before_reading(store: ChunkStore, r: object) -> None:
    with pytest.raises(InvalidReplicationError):
        store.put(NeverRead(), "x", r)  # type: ignore[arg-type]


@pytest.mark.parametrize("w", [0, 4])
def test_bad_quorum(store: ChunkStore, w: int) -> None:
    with pytest.raises(InvalidReplicationError):
        store.put(NeverRead(), "x", 3, quorum=w)  # type: ignore[arg-type]


def test_hostile_names_stay_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    node_root = tmp_path / "nodes"
    nodes = make_nodes(node_root)
    names = [
        "../x",
        "/etc/passwd",
        "a\x00b",
        "n" * 10_000,
        "../../" * 50 + "tmp/evil",
        "ü\u202e.exe",
        "\udcff",
    ]
    with ChunkStore(nodes, chunk_size=SMALL_CS) as store:
        stored = {}
        for i, name in enumerate(names):
            m = put(store, payload(2 * SMALL_CS + i, seed=70 + i), name=name)
            stored[m.file_hash] = name
        rebuilt = MemoryIndex()
        store.rebuild_index(rebuilt)
        for fh, name in stored.items():
            assert store.manifest(fh).name == name
            got = rebuilt.get(fh)
            assert got is not None and got.name == name
    roots = [n.root.resolve() for n in nodes]
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        for f in filenames + dirnames:
            p = (Path(dirpath) / f).resolve()
            if p in roots or p == node_root.resolve() or p == cwd.resolve():
                continue
            assert any(root in p.parents for root in roots), p
            rel = p.relative_to(next(root for root in roots if root in p.parents))
            assert rel.parts[0] in ("chunks", "manifests")
    assert list(cwd.iterdir()) == []


def test_get_chunk_never_returns_corrupt_bytes(
    store: ChunkStore, nodes: list[LocalDirNode]
) -> None:
    m = put(store, payload(SMALL_CS, seed=80), r=1)
    c = m.chunks[0].id
    (holder,) = [n for n in nodes if n.has_chunk(c)]
    holder.chunk_path(c).write_bytes(b"garbage")
    with pytest.raises(CorruptChunkError):
        holder.get_chunk(c)
    with pytest.raises(ChunkUnavailableError):
        read_all(store, m.file_hash)


# manifests and the memory index ---------------------------------------------------------------


def test_manifest_json_round_trip_and_validation(store: ChunkStore) -> None:
    m = put(store, payload(3 * SMALL_CS + 5, seed=90), name="ü/../\x00", expires_at=1e10)
    raw = m.to_json()
    assert Manifest.from_json(raw) == m and Manifest.from_json(raw).to_json() == raw
    assert m.expires_at == 1e10
    import json

    good = json.loads(raw)
    bad_docs: list[bytes] = [b"", b"[]", b"{", b"\xff", raw.replace(b'"version":1', b'"version":2')]
    for key, value in [
        ("file_hash", "../etc/passwd"),
        ("size", m.size + 1),
        ("size", -1),
        ("chunk_size", 0),
        ("replication_factor", 0),
        ("chunks", [[m.chunks[0].id, 5, 10]]),
        ("placement", {"f" * 64: ["node_000"]}),
        ("created_at", "yesterday"),
        ("name", 5),
    ]:
        bad_docs.append(json.dumps({**good, key: value}).encode())
    for doc in bad_docs:
        with pytest.raises(ManifestError):
            Manifest.from_json(doc)


def test_memory_index() -> None:
    idx = MemoryIndex()

    def man(fh: str, r: int, chunks: list[str], t: float) -> Manifest:
        refs = tuple(ChunkRef(c, i * 10, 10) for i, c in enumerate(chunks))
        return Manifest(fh, fh[:4], 10 * len(chunks), 10, refs, r, {}, t)

    a, b, c1, c2 = (hashlib.sha256(bytes([i])).hexdigest() for i in range(4))
    idx.put(man(a, 3, [c1, c2], 1.0))
    idx.put(man(b, 5, [c1], 2.0))
    assert idx.chunk_target(c1) == 5 and idx.chunk_target(c2) == 3
    assert [m.file_hash for m in idx.list(0, 10)] == [b, a] and idx.count() == 2
    idx.put(man(b, 2, [c1], 2.0))  # replaced: the new r is the target
    assert idx.chunk_target(c1) == 3
    idx.delete(a)
    idx.delete(a)
    assert idx.chunk_target(c2) == 0 and idx.chunk_target(c1) == 2
    assert idx.all_file_hashes() == [b] and idx.get(a) is None


def test_corrupt_manifest_copy_is_skipped(store: ChunkStore, nodes: list[LocalDirNode]) -> None:
    m = put(store, payload(2 * SMALL_CS, seed=91))
    holders_ = [n for n in nodes if n.get_manifest(m.file_hash) is not None]
    assert len(holders_) == 3
    holders_[0].manifest_path(m.file_hash).write_bytes(b"{garbage")
    fresh = MemoryIndex()
    assert store.rebuild_index(fresh) == 1 and fresh.get(m.file_hash) == m
    assert store.verify(m.file_hash).manifest_copies == 2
    assert store.repair(m.file_hash).manifests_written == 1
    assert holders_[0].get_manifest(m.file_hash) == m.to_json()


def test_abandoned_read_is_fine(store: ChunkStore) -> None:
    data = payload(40 * SMALL_CS, seed=92)
    fh = put(store, data).file_hash
    it = store.read(fh)
    assert next(it) == data[:SMALL_CS]
    it.close()  # type: ignore[attr-defined]
    assert read_all(store, fh) == data


# reliability catalogue rows 3-8 (small, seeded versions) ---------------------------------------

KILLED_WRITER = """
import io, sys
import numpy as np
from pathlib import Path
from occ_storage.nodes import LocalDirNode
from occ_storage.store import ChunkStore
root = Path(sys.argv[1])
nodes = [LocalDirNode(root / f"node_{i:03d}", f"node_{i:03d}") for i in range(5)]
store = ChunkStore(nodes, chunk_size=16384)
rng = np.random.default_rng(int(sys.argv[2]))
print("ready", flush=True)
while True:
    store.put(io.BytesIO(rng.bytes(2 << 20)), "x", 3)
"""


def test_sigkill_leaves_no_partial_chunk_under_a_final_name(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "nodes"
    repo = Path(__file__).resolve().parents[3]
    rng = random.Random(3)
    for attempt in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(root), str(attempt)],
            cwd=repo,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    nodes = make_nodes(root)
    finals = 0
    for node in nodes:
        for cid in node.list_chunks():
            node.get_chunk(cid)  # raises if a partial chunk sits under its final name
            finals += 1
        for fh in node.list_manifests():
            raw = node.get_manifest(fh)
            assert raw is not None and Manifest.from_json(raw).file_hash == fh
        node.cleanup_temp(0)
    assert finals > 0
    assert not [p for p in root.rglob(".tmp-*")]
    with ChunkStore(nodes, chunk_size=16384) as store:  # every manifest that made it is readable
        for fh in [fh for n in nodes for fh in n.list_manifests()]:
            m = store.manifest(fh)
            assert hashlib.sha256(read_all(store, fh)).hexdigest() == m.file_hash


def test_delete_a_node_directory_during_uploads(
    store: ChunkStore, nodes: list[LocalDirNode]
) -> None:
    class DeletesMidway(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.buf, self.fired = io.BytesIO(data), False

        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:  # type: ignore[override]
            if self.buf.tell() > 10 * SMALL_CS and not self.fired:
                shutil.rmtree(nodes[2].root, ignore_errors=True)
                self.fired = True
            return self.buf.readinto(b)

    datas = [payload(30 * SMALL_CS + i, seed=100 + i) for i in range(4)]
    ms = [put(store, datas[0])]
    ms.append(store.put(DeletesMidway(datas[1]), "mid", 3))  # type: ignore[arg-type]
    ms += [put(store, d) for d in datas[2:]]
    for m, d in zip(ms, datas, strict=True):
        assert read_all(store, m.file_hash) == d
        assert (
            read_all(store, m.file_hash, 5 * SMALL_CS + 3, 17 * SMALL_CS)
            == d[5 * SMALL_CS + 3 : 17 * SMALL_CS]
        )
    for m in ms:
        assert store.repair(m.file_hash).ok
        for c in m.chunk_ids():
            assert len(set(holders(nodes, c))) == 3 == present(nodes, c)


def test_corrupt_two_percent_then_one_scrub_pass(
    store: ChunkStore, nodes: list[LocalDirNode]
) -> None:
    datas = [payload(20 * SMALL_CS, seed=110 + i) for i in range(5)]
    ms = [put(store, d, name=str(i)) for i, d in enumerate(datas)]
    replicas = [(n, c) for m in ms for c in m.chunk_ids() for n in nodes if n.has_chunk(c)]
    assert len(replicas) == 300
    rng = random.Random(7)
    bad = rng.sample(replicas, 6)  # 1% flipped, 1% truncated
    for k, (node, c) in enumerate(bad):
        p = node.chunk_path(c)
        raw = bytearray(p.read_bytes())
        if k < 3:
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        else:
            del raw[rng.randrange(len(raw)) :]
        p.write_bytes(bytes(raw))
    for m, d in zip(ms, datas, strict=True):
        assert read_all(store, m.file_hash) == d
        for _ in range(5):
            a = rng.randrange(len(d))
            b = rng.randrange(a, len(d) + 1)
            assert read_all(store, m.file_hash, a, b) == d[a:b]
    report = store.scrub(np.random.default_rng(1), 10**9)
    assert report.bad == 6 and report.repaired == 6 and report.lost == 0 and report.checked == 100
    for node, c in replicas:
        node.get_chunk(c)


def test_rebalance_and_repair_concurrent_with_uploads(
    store: ChunkStore, nodes: list[LocalDirNode]
) -> None:
    import threading

    shared = payload(4 * SMALL_CS, seed=120)
    x = put(store, shared + payload(SMALL_CS, seed=121), name="x")
    errors: list[BaseException] = []

    def uploader() -> None:
        try:
            for i in range(6):
                put(
                    store,
                    shared[: (i % 4 + 1) * SMALL_CS] + payload(3 * SMALL_CS, seed=130 + i),
                    r=2 + i % 3,
                )
        except BaseException as exc:
            errors.append(exc)

    def rebalancer() -> None:
        try:
            for r in (4, 2, 5, 1, 3):
                store.rebalance(x.file_hash, r)
                store.repair(x.file_hash)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=uploader), threading.Thread(target=rebalancer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for m in store.list_files(0, 100):
        assert store.repair(m.file_hash).ok
    for m in store.list_files(0, 100):
        for c in m.chunk_ids():
            hs = holders(nodes, c)
            assert len(hs) == len(set(hs)) == present(nodes, c) == store.index.chunk_target(c)


# orphan sweep ---------------------------------------------------------------------------------


class CutOff(io.RawIOBase):
    """Yields the bytes of `data`, then raises (a client that disconnects mid-upload)."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if not self.view:
            raise ConnectionResetError("client went away")
        n = min(len(b), len(self.view))
        b[:n] = self.view[:n]
        self.view = self.view[n:]
        return n


def test_sweep_removes_only_the_chunks_of_a_failed_upload(
    store: ChunkStore, nodes: list[LocalDirNode]
) -> None:
    data = payload(20 * SMALL_CS, seed=41)
    kept = put(store, data)
    # a failed upload sharing kept's first 5 chunks, then 40 chunks of its own
    with pytest.raises(ConnectionResetError):
        store.put(CutOff(data[: 5 * SMALL_CS] + payload(40 * SMALL_CS, seed=42)), "x", 3)  # type: ignore[arg-type]
    on_disk = {cid for n in nodes for cid in n.list_chunks()}
    orphans = on_disk - set(kept.chunk_ids())
    replicas = sum(present(nodes, cid) for cid in orphans)
    assert len(orphans) >= 10 and replicas >= len(orphans)  # the batches that reached disk
    assert store.sweep_orphans(3600) == 0  # too recent: might belong to a running upload
    assert store.sweep_orphans(0) == replicas
    assert {cid for n in nodes for cid in n.list_chunks()} == set(kept.chunk_ids())
    assert read_all(store, kept.file_hash) == data
    report = store.verify(kept.file_hash)
    assert (report.replication_min, report.replication_max) == (3, 3)
    assert store.sweep_orphans(0) == 0


def test_sweep_stops_when_no_copy_of_a_manifest_reads(
    store: ChunkStore, nodes: list[LocalDirNode]
) -> None:
    kept = put(store, payload(8 * SMALL_CS, seed=43))
    with pytest.raises(ConnectionResetError):
        store.put(CutOff(payload(30 * SMALL_CS, seed=44)), "x", 3)  # type: ignore[arg-type]
    before = sorted(cid for n in nodes for cid in n.list_chunks())
    for n in nodes:
        if n.manifest_path(kept.file_hash).exists():
            n.manifest_path(kept.file_hash).write_bytes(b"{not json")
    with pytest.raises(NodeError, match="manifest"):
        store.sweep_orphans(0)
    assert sorted(cid for n in nodes for cid in n.list_chunks()) == before


def test_discard_keeps_a_chunk_a_put_claims(
    nodes: list[LocalDirNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = nodes[0]
    data = payload(SMALL_CS, seed=45)
    cid = hashlib.sha256(data).hexdigest()
    path = node.chunk_path(cid)

    def age() -> None:
        old = path.stat().st_mtime - 7200
        os.utime(path, (old, old))

    assert node.put_chunk(cid, data)
    age()
    assert list(node.stale_chunks(3600)) == [cid]
    assert not node.put_chunk(cid, data)  # present: the put claims it instead of writing
    assert list(node.stale_chunks(3600)) == []
    assert not node.discard_if_stale(cid, 3600) and path.exists()
    # the claim lands between the sweep's age check and its move: the chunk is moved back
    age()
    real_rename = os.rename

    def claim_then_rename(src: str, dst: str) -> None:
        assert not node.put_chunk(cid, data)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", claim_then_rename)
    assert not node.discard_if_stale(cid, 3600)
    monkeypatch.undo()
    assert node.get_chunk(cid) == data
    assert [p.name for p in path.parent.iterdir()] == [cid]  # nothing left aside
    age()
    assert node.discard_if_stale(cid, 3600) and not path.exists()
    assert not node.discard_if_stale(cid, 3600)


def test_delete_leaves_a_chunk_a_running_put_reused_to_the_sweep(
    store: ChunkStore, nodes: list[LocalDirNode]
) -> None:
    data = payload(6 * SMALL_CS, seed=46)
    a = put(store, data)
    for n in nodes:  # every replica of A was written long ago
        for cid in n.list_chunks():
            old = n.chunk_path(cid).stat().st_mtime - 7200
            os.utime(n.chunk_path(cid), (old, old))
    shared = a.chunks[0].id
    for n in nodes:  # an upload of other content starting with A's first chunk reuses it now
        if n.has_chunk(shared):
            assert not n.put_chunk(shared, data[:SMALL_CS])
    store.delete(a.file_hash, keep_recent_s=3600)
    assert present(nodes, shared) == 3  # the running upload can still register it
    assert all(present(nodes, cid) == 0 for cid in a.chunk_ids()[1:])
    assert store.sweep_orphans(3600) == 0
    assert store.sweep_orphans(0) == 3  # unreferenced once that upload is gone

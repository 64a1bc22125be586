"""Benchmark of ChunkStore put/read against the disk's raw fdatasync write speed and SHA-256 speed.

    python bench/store.py [--size-mib 512] [--nodes 5] [--r 3] [--dir PATH]
    python bench/store.py --nodes-file nodes.json [--size-mib 128] [--r 3]

With --nodes-file the nodes come from that file (workers/nodes_config.py; S3 nodes too) and the
yardstick is raw boto3 PUT/GET of chunk-sized objects to the first S3 node's endpoint
(bench/s3_raw.py): targets put*r/raw PUT >= 0.5 and get/raw GET >= 0.5.

A seeded generated file (never held in memory) is streamed through ChunkStore.put into
LocalDirNode directories under a temporary directory, then read back with read() (every
chunk verified). In the same run it measures a raw write of the same number of bytes
(1 MiB os.write blocks to a new file, one fdatasync) and single-core SHA-256 over 256 KiB
blocks, and prints a table with the targets put*r/raw >= 0.5 and get/sha256 >= 0.5.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from occ_storage.nodes import LocalDirNode
from occ_storage.store import ChunkStore

MiB = 1 << 20
BLOCK = MiB
PAGE = 4096


class GeneratedStream(io.RawIOBase):
    """`size` seeded pseudo-random bytes, made 1 MiB at a time; every 4 KiB page is unique."""

    def __init__(self, size: int, seed: int, label: str = "put") -> None:
        self.size, self.pos, self.label = size, 0, label
        rng = np.random.default_rng(seed)
        self.pool = np.frombuffer(rng.bytes(8 * MiB), dtype=np.uint8)
        self.offsets = rng.integers(0, 7 * MiB // 8, size=size // BLOCK + 1) * 8
        self.block_no = -1
        self.block = np.empty(BLOCK, dtype=np.uint8)
        self.next_report = size // 8

    def readable(self) -> bool:
        return True

    def _load(self, b: int) -> None:
        off = int(self.offsets[b])
        self.block[:] = self.pool[off : off + BLOCK]
        words = self.block.view(np.uint64)
        words[:: PAGE // 8] = np.arange(
            b * (BLOCK // PAGE), (b + 1) * (BLOCK // PAGE), dtype=np.uint64
        )
        self.block_no = b

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        out = memoryview(buf).cast("B")
        n = min(len(out), self.size - self.pos)
        done = 0
        while done < n:
            b, within = divmod(self.pos, BLOCK)
            if b != self.block_no:
                self._load(b)
            k = min(n - done, BLOCK - within)
            out[done : done + k] = self.block[within : within + k].data
            done += k
            self.pos += k
        if self.pos >= self.next_report and self.size:
            print(f"  {self.label}: {self.pos / MiB:7.0f} / {self.size / MiB:.0f} MiB", flush=True)
            self.next_report += self.size // 8
        return n


def raw_write_mb_s(path: Path, size: int) -> float:
    """Write `size` bytes to a new file in 1 MiB os.write calls, one fdatasync; MB/s.

    The file is kept (the caller deletes it at the end) so the put that follows cannot reuse
    its just-freed blocks: both measure writes to new blocks.
    """
    block = np.random.default_rng(1).bytes(BLOCK)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        left = size
        while left > 0:
            left -= os.write(fd, block[: min(BLOCK, left)])
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return size / (time.perf_counter() - t0) / 1e6


def sha256_mb_s(total: int = 512 * MiB) -> float:
    """Single-core hashlib SHA-256 over 256 KiB blocks (a new hash per block, like chunk ids); MB/s."""
    data = np.random.default_rng(2).bytes(256 * 1024)
    n = max(1, total // len(data))
    t0 = time.perf_counter()
    for _ in range(n):
        hashlib.sha256(data).digest()
    return n * len(data) / (time.perf_counter() - t0) / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--r", type=int, default=3)
    ap.add_argument(
        "--dir", type=Path, default=None, help="parent of the temp dir (default: $TMPDIR)"
    )
    ap.add_argument("--chunk-size", type=int, default=262144)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument(
        "--sync", choices=["auto", "fsync", "syncfs"], default="auto", help="LocalDirNode sync"
    )
    ap.add_argument("--nodes-file", type=Path, default=None, help="nodes file (S3 nodes)")
    args = ap.parse_args(argv)
    if args.nodes_file is not None:
        return s3_main(args)
    size = args.size_mib * MiB
    base = Path(tempfile.mkdtemp(prefix="occ-bench-store-", dir=args.dir))
    print(
        f"bench/store.py: {args.size_mib} MiB, {args.nodes} nodes, r={args.r}, dir {base}",
        flush=True,
    )
    try:
        print("measuring SHA-256 ...", flush=True)
        sha = sha256_mb_s()
        print("measuring raw write + fdatasync ...", flush=True)
        raw = raw_write_mb_s(base / "raw.bin", size)
        nodes = [
            LocalDirNode(base / f"node_{i:03d}", f"node_{i:03d}", sync=args.sync)
            for i in range(args.nodes)
        ]
        with ChunkStore(nodes, chunk_size=args.chunk_size) as store:
            print(f"put ... (node sync mode: {nodes[0].sync})", flush=True)
            t0 = time.perf_counter()
            manifest = store.put(GeneratedStream(size, args.seed), "bench.bin", args.r)  # type: ignore[arg-type]
            put_s = time.perf_counter() - t0
            print("get ...", flush=True)
            t0 = time.perf_counter()
            got = 0
            for piece in store.read(manifest.file_hash):
                got += len(piece)
            get_s = time.perf_counter() - t0
            if got != size:
                raise SystemExit(f"read returned {got} bytes, expected {size}")
            print("checking the bytes read (untimed) ...", flush=True)
            check = hashlib.sha256()
            for piece in store.read(manifest.file_hash):
                check.update(piece)
            if check.hexdigest() != manifest.file_hash:
                raise SystemExit("read returned wrong bytes")
    finally:
        print("cleaning up ...", flush=True)
        shutil.rmtree(base, ignore_errors=True)
    put_mb = size / put_s / 1e6
    get_mb = size / get_s / 1e6
    rows = [
        ("put MB/s (file bytes)", f"{put_mb:.0f}", ""),
        (f"put MB/s x r (r={args.r})", f"{put_mb * args.r:.0f}", ""),
        ("raw write+fdatasync MB/s (new blocks)", f"{raw:.0f}", ""),
        ("ratio put x r / raw", f"{put_mb * args.r / raw:.2f}", _verdict(put_mb * args.r / raw)),
        ("get MB/s (verified, page cache)", f"{get_mb:.0f}", ""),
        ("sha256 MB/s (1 core, 256 KiB)", f"{sha:.0f}", ""),
        ("ratio get / sha256", f"{get_mb / sha:.2f}", _verdict(get_mb / sha)),
    ]
    _print_table(rows)
    ok = put_mb * args.r / raw >= 0.5 and get_mb / sha >= 0.5
    return 0 if ok else 1


def s3_main(args: argparse.Namespace) -> int:
    """put/get through the configured nodes beside raw boto3 PUT/GET to the same endpoint."""
    from bench.s3_raw import raw_put_get_mb_s
    from occ_storage.s3node import S3Node
    from workers.nodes_config import build_nodes, load_node_specs

    size = args.size_mib * MiB
    base = Path(tempfile.mkdtemp(prefix="occ-bench-s3-", dir=args.dir))
    env = {**os.environ, "NODES_FILE": str(args.nodes_file)}
    nodes = build_nodes(load_node_specs(env, base), [])
    s3_nodes = [n for n in nodes if isinstance(n, S3Node)]
    if not s3_nodes:
        raise SystemExit("the nodes file lists no S3 node")
    print(
        f"bench/store.py: {args.size_mib} MiB, {len(nodes)} nodes ({len(s3_nodes)} S3), r={args.r}"
    )
    try:
        print("raw boto3 PUT/GET ...", flush=True)
        raw_put, raw_get = raw_put_get_mb_s(s3_nodes[0], size, args.chunk_size)
        with ChunkStore(nodes, chunk_size=args.chunk_size) as store:
            print("put ...", flush=True)
            t0 = time.perf_counter()
            stream = GeneratedStream(size, args.seed + time.time_ns() % 1_000_000)
            manifest = store.put(stream, "bench.bin", args.r)  # type: ignore[arg-type]
            put_s = time.perf_counter() - t0
            print("get ...", flush=True)
            t0 = time.perf_counter()
            check = hashlib.sha256()
            for piece in store.read(manifest.file_hash):
                check.update(piece)
            get_s = time.perf_counter() - t0
            if check.hexdigest() != manifest.file_hash:
                raise SystemExit("read returned wrong bytes")
        # the stored copies stay (use throw-away buckets); a per-run seed keeps reruns from
        # measuring deduplication instead of writes
    finally:
        shutil.rmtree(base, ignore_errors=True)
    put_mb, get_mb = size / put_s / 1e6, size / get_s / 1e6
    rows = [
        ("put MB/s (file bytes)", f"{put_mb:.1f}", ""),
        (f"put MB/s x r (r={args.r})", f"{put_mb * args.r:.1f}", ""),
        ("raw boto3 PUT MB/s", f"{raw_put:.1f}", ""),
        (
            "ratio put x r / raw PUT",
            f"{put_mb * args.r / raw_put:.2f}",
            _verdict(put_mb * args.r / raw_put),
        ),
        ("get MB/s (verified, incl. hashing)", f"{get_mb:.1f}", ""),
        ("raw boto3 GET MB/s", f"{raw_get:.1f}", ""),
        ("ratio get / raw GET", f"{get_mb / raw_get:.2f}", _verdict(get_mb / raw_get)),
    ]
    _print_table(rows)
    return 0 if put_mb * args.r / raw_put >= 0.5 and get_mb / raw_get >= 0.5 else 1


def _print_table(rows: list[tuple[str, str, str]]) -> None:
    print()
    print("| figure | value | target / note |")
    print("|---|---:|---|")
    for name, value, note in rows:
        print(f"| {name} | {value} | {note} |")


def _verdict(ratio: float) -> str:
    return f"target >= 0.5: {'PASS' if ratio >= 0.5 else 'FAIL'}"


if __name__ == "__main__":
    raise SystemExit(main())

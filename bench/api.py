"""End-to-end upload/download throughput through gunicorn (raw PUT and multipart POST).

Starts its own redis-server and gunicorn on free loopback ports with a temporary STORAGE_DIR,
uploads N MiB files, downloads them back, and prints MB/s beside the disk's raw fdatasync write
speed measured in the same run (upload MB/s x write quorum / raw is the disk-bound ratio).

    python bench/api.py [--size-mib 256] [--repeat 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client.streams import FilePart, MultipartStream

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(fn, timeout: float) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if fn():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError("server did not start")


def raw_fdatasync_mbps(directory: Path, size: int) -> float:
    """Write `size` new bytes in 1 MiB blocks and fdatasync: the disk's sequential write limit."""
    block = os.urandom(MIB)
    path = directory / "raw.bin"
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(size // MIB):
            os.write(fd, block)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    path.unlink()
    return size / dt / 1e6


def make_file(path: Path, seed: int, size: int) -> str:
    """Write a seeded file of `size` bytes in 1 MiB blocks; returns its SHA-256."""
    h = hashlib.sha256()
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            block = rng.randbytes(MIB)
            h.update(block)
            f.write(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None, help="where to put the temporary data")
    args = ap.parse_args()
    size = args.size_mib * MIB
    tmp = Path(tempfile.mkdtemp(prefix="occ-bench-api-", dir=args.dir))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        rport, port = free_port(), free_port()
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(rport),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp),
                ],
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        env = {
            **os.environ,
            "REDIS_URL": f"redis://127.0.0.1:{rport}/0",
            "STORAGE_DIR": str(tmp / "storage"),
            "MAX_UPLOAD_SIZE": str(size + MIB),
            "PYTHONPATH": str(ROOT),
        }
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "gunicorn"),
                    "--config",
                    "scripts/gunicorn.conf.py",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    str(args.workers),
                    "--access-logfile",
                    "/dev/null",
                    "api.wsgi:app",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{base}/health", timeout=1).ok, 60)
        print(f"measuring raw fdatasync write of {args.size_mib} MiB ...", file=sys.stderr)
        raw = raw_fdatasync_mbps(tmp, size)
        rows = []
        for mode in ("raw PUT", "multipart POST"):
            up, down = [], []
            for i in range(args.repeat):
                src = tmp / f"src-{mode[:3]}-{i}"
                digest = make_file(src, 1000 * len(mode) + i, size)
                print(
                    f"{mode}: upload {i + 1}/{args.repeat} ({args.size_mib} MiB) ...",
                    file=sys.stderr,
                )
                t0 = time.perf_counter()
                if mode == "raw PUT":
                    with open(src, "rb") as f:
                        resp = requests.put(
                            f"{base}/upload?name=b{i}&replication_factor=3", data=f, timeout=600
                        )
                else:
                    body = MultipartStream(
                        fields=[("replication_factor", "3")], files=[FilePart("file", src)]
                    )
                    resp = requests.post(
                        f"{base}/upload",
                        data=body,
                        headers={
                            "Content-Type": body.content_type,
                            "Content-Length": str(len(body)),
                        },
                        timeout=600,
                    )
                resp.raise_for_status()
                assert resp.json()["file_hash"] == digest
                src.unlink()
                up.append(size / (time.perf_counter() - t0) / 1e6)
                fh = resp.json()["file_hash"]
                t0 = time.perf_counter()
                got = 0
                with requests.get(f"{base}/download/{fh}", stream=True, timeout=600) as r:
                    for part in r.iter_content(MIB):
                        got += len(part)
                down.append(got / (time.perf_counter() - t0) / 1e6)
                requests.delete(f"{base}/files/{fh}", timeout=600)
            rows.append((mode, max(up), max(down)))
        quorum = 2
        print()
        print(
            f"file size {args.size_mib} MiB, r = 3 (write quorum {quorum} in the request), best of {args.repeat}"
        )
        print(f"raw fdatasync write: {raw:8.1f} MB/s")
        print(f"{'mode':16} {'upload MB/s':>12} {'x quorum / raw':>15} {'download MB/s':>14}")
        for mode, u, d in rows:
            print(f"{mode:16} {u:12.1f} {u * quorum / raw:15.2f} {d:14.1f}")
        print("seed claims: upload ~10 MB/s, download ~50 MB/s")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Node backend interface, and the local-directory backend (atomic, sharded, hash-verified).

Over ~400 lines because LocalDirNode's verbs share one durability scheme (temp file, fsync or
syncfs, rename, directory sync) and one sharded path layout; apart they would drift.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import math
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from occ_storage.chunking import HASH_RE
from occ_storage.errors import (
    ChunkMissingError,
    CorruptChunkError,
    InvalidHashError,
    InvalidNodeError,
    NodeError,
)

TEMP_PREFIX = ".tmp-"
_MANIFEST_SUFFIX = ".json"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_fdatasync = getattr(os, "fdatasync", os.fsync)
SYNC_MODES = ("auto", "fsync", "syncfs")


def _load_syncfs() -> Callable[[int], None] | None:
    """syncfs(2) through libc (Linux), or None where it does not exist."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return syncfs


_syncfs = _load_syncfs()


class NodeBackend(Protocol):
    """One storage node. Chunk ids and file hashes are lowercase 64-hex SHA-256 digests.

    Writes are copy-if-absent and atomic (a reader never sees a partial chunk under its final
    name); `get_chunk` always verifies the SHA-256 of what it returns. Every failure of the
    backend is raised as a NodeError (or one of the typed chunk errors), never a raw OSError.
    """

    @property
    def node_id(self) -> str: ...

    @property
    def weight(self) -> float: ...

    def put_chunks(self, batch: Sequence[tuple[str, bytes]]) -> int:
        """Durably store every absent chunk of `batch` (id = sha256(data)); return how many were new."""
        ...

    def put_chunk(self, chunk_id: str, data: bytes) -> bool:
        """Durably store one chunk if absent; return True if it was newly written."""
        ...

    def get_chunk(self, chunk_id: str) -> bytes:
        """Return the verified bytes; raise ChunkMissingError or CorruptChunkError."""
        ...

    def has_chunk(self, chunk_id: str) -> bool:
        """Return True if a replica is present (not verified)."""
        ...

    def list_chunks(self) -> Iterator[str]:
        """Yield the id of every chunk present on the node."""
        ...

    def delete_chunk(self, chunk_id: str) -> bool:
        """Remove the replica; return True if there was one."""
        ...

    def stale_chunks(self, older_than_s: float) -> Iterator[str]:
        """Yield the id of every chunk last written or claimed more than `older_than_s` ago."""
        ...

    def discard_if_stale(self, chunk_id: str, older_than_s: float) -> bool:
        """Remove the replica unless a put claimed it meanwhile; return True if removed."""
        ...

    def chunk_size_on_disk(self, chunk_id: str) -> int:
        """Return the stored size in bytes; raise ChunkMissingError if absent."""
        ...

    def used_bytes(self) -> int:
        """Return the bytes used by chunks and manifests."""
        ...

    def census(self) -> tuple[list[str], int, int]:
        """Return (chunk ids, used bytes, free bytes) from one walk of the node."""
        ...

    def free_bytes(self) -> int:
        """Return the bytes still free for the node."""
        ...

    def put_manifest(self, file_hash: str, data: bytes) -> None:
        """Durably store (or replace) the manifest of `file_hash`."""
        ...

    def get_manifest(self, file_hash: str) -> bytes | None:
        """Return the stored manifest bytes, or None if absent."""
        ...

    def list_manifests(self) -> Iterator[str]:
        """Yield the file hash of every manifest present on the node."""
        ...

    def delete_manifest(self, file_hash: str) -> bool:
        """Remove the manifest; return True if there was one."""
        ...

    def cleanup_temp(self, older_than_s: float) -> int:
        """Remove orphan temporary files older than `older_than_s` seconds; return how many."""
        ...


def check_id(value: object) -> str:
    """Return `value` if it is a lowercase 64-hex id, else raise InvalidHashError (before any path)."""
    if not isinstance(value, str) or HASH_RE.fullmatch(value) is None:
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise InvalidHashError(f"not a lowercase SHA-256 hex digest: {shown!r}")
    return value


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in ``path`` durable (fsync of the directory)."""
    fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class NodeBase:
    """What every node backend shares: a non-empty id and a finite weight >= 0, read-only."""

    def __init__(self, node_id: str, weight: float) -> None:
        if not isinstance(node_id, str) or not node_id:
            raise InvalidNodeError(f"node id must be a non-empty string, got {node_id!r}")
        weight = float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise InvalidNodeError(f"node {node_id!r}: weight must be finite and >= 0")
        self._node_id = node_id
        self._weight = weight

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def weight(self) -> float:
        return self._weight


class LocalDirNode(NodeBase):
    """A node in a local directory: chunks/ab/cd/<hash> and manifests/ab/<hash>.json.

    Paths are derived only from validated hashes. A write goes to `.tmp-*` in the target
    directory, is fsynced, renamed into place, and the directory is fsynced; `put_chunks`
    batches this (all temps, one fsync each, all renames, one fsync per touched directory).
    If the node directory disappears (a replaced disk), reads see missing chunks and writes
    recreate the directories.

    `sync`: "fsync" (fdatasync per file, fsync per touched directory), "syncfs" (Linux: one
    syncfs(2) after the temps are written and one after the renames), or "auto" (syncfs where
    available, else fsync).
    """

    def __init__(
        self, root: str | os.PathLike[str], node_id: str, weight: float = 1.0, *, sync: str = "auto"
    ) -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}, got {sync!r}")
        super().__init__(node_id, weight)
        self.root = Path(root)
        self._root = os.path.abspath(os.fspath(root))
        self._chunks = os.path.join(self._root, "chunks")
        self._manifests = os.path.join(self._root, "manifests")
        # syncfs: one syncfs(2) for the data of a whole batch and one for its renames instead of an
        # fsync per file and per directory. Same guarantee, far fewer device flushes (1.5-2x the
        # put throughput on the benchmark VM); it also flushes other dirty data of that filesystem.
        self.kind = "local"
        self.sync = "syncfs" if sync in ("auto", "syncfs") and _syncfs is not None else "fsync"
        self._syncfs = _syncfs if self.sync == "syncfs" else None

    def __repr__(self) -> str:
        return f"LocalDirNode({self._root!r}, node_id={self._node_id!r}, weight={self._weight})"

    # paths -------------------------------------------------------------------------------------

    def _chunk_file(self, chunk_id: str) -> str:
        cid = check_id(chunk_id)
        return os.path.join(self._chunks, cid[:2], cid[2:4], cid)

    def _manifest_file(self, file_hash: str) -> str:
        fh = check_id(file_hash)
        return os.path.join(self._manifests, fh[:2], fh + _MANIFEST_SUFFIX)

    def chunk_path(self, chunk_id: str) -> Path:
        """Return where the chunk lives on disk (for tests and tools)."""
        return Path(self._chunk_file(chunk_id))

    def manifest_path(self, file_hash: str) -> Path:
        """Return where the manifest lives on disk (for tests and tools)."""
        return Path(self._manifest_file(file_hash))

    def _error(self, what: str, exc: OSError) -> NodeError:
        return NodeError(f"node {self._node_id}: {what}: {exc.strerror or exc}")

    # writes ------------------------------------------------------------------------------------

    def _make_dirs(self, path: str, to_sync: set[str]) -> None:
        """Create `path` and missing parents; remember each parent whose entries changed."""
        try:
            os.mkdir(path)
        except FileExistsError:
            return
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                raise
            self._make_dirs(parent, to_sync)
            try:
                os.mkdir(path)
            except FileExistsError:
                return
        to_sync.add(os.path.dirname(path))

    def _open_temp(self, final: str, to_sync: set[str]) -> tuple[int, str]:
        directory, name = os.path.split(final)
        tmp = os.path.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(6)}-{name}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC
        try:
            return os.open(tmp, flags, 0o644), tmp
        except FileNotFoundError:
            self._make_dirs(directory, to_sync)
            return os.open(tmp, flags, 0o644), tmp

    def _write_files(self, items: Sequence[tuple[str, bytes]], overwrite: bool) -> int:
        """Atomically write (final path, data) items with batched fsyncs; return files written."""
        to_sync: set[str] = set()
        pending: list[tuple[int, str, str]] = []  # fd, tmp, final
        renamed: list[str] = []
        seen: set[str] = set()
        try:
            for final, data in items:
                if final in seen:
                    continue
                seen.add(final)
                if not overwrite:
                    try:
                        os.utime(final)  # present: claimed for this put (see discard_if_stale)
                        continue
                    except (FileNotFoundError, NotADirectoryError):
                        pass
                fd, tmp = self._open_temp(final, to_sync)
                pending.append((fd, tmp, final))
                _write_all(fd, data)
            if pending and self._syncfs is not None:
                self._syncfs(pending[0][0])
            for i, (fd, tmp, final) in enumerate(pending):
                if self._syncfs is None:
                    _fdatasync(fd)
                os.close(fd)
                pending[i] = (-1, tmp, final)
            for _, tmp, final in pending:
                os.replace(tmp, final)
                renamed.append(tmp)
                to_sync.add(os.path.dirname(final))
            if self._syncfs is not None and pending:
                fd = os.open(
                    os.path.dirname(pending[0][2]), os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
                )
                try:
                    self._syncfs(fd)
                finally:
                    os.close(fd)
                # the parent of a re-created root may live on another filesystem
                to_sync = {d for d in to_sync if not d.startswith(self._root + os.sep)}
            for directory in to_sync:
                fsync_dir(directory)
        except OSError as exc:
            for fd, tmp, _ in pending:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                if tmp not in renamed:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
            raise self._error("write failed", exc) from exc
        return len(pending)

    def put_chunks(self, batch: Sequence[tuple[str, bytes]]) -> int:
        return self._write_files([(self._chunk_file(cid), data) for cid, data in batch], False)

    def put_chunk(self, chunk_id: str, data: bytes) -> bool:
        return self.put_chunks([(chunk_id, data)]) == 1

    def put_manifest(self, file_hash: str, data: bytes) -> None:
        self._write_files([(self._manifest_file(file_hash), bytes(data))], True)

    # reads -------------------------------------------------------------------------------------

    def _read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb", buffering=0) as f:
                return f.readall()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._error("read failed", exc) from exc

    def get_chunk(self, chunk_id: str) -> bytes:
        data = self._read(self._chunk_file(chunk_id))
        if data is None:
            raise ChunkMissingError(f"node {self._node_id}: chunk {chunk_id} missing")
        if hashlib.sha256(data).digest() != bytes.fromhex(chunk_id):
            raise CorruptChunkError(f"node {self._node_id}: chunk {chunk_id} fails verification")
        return data

    def _stat(self, path: str) -> os.stat_result | None:
        try:
            return os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._error("stat failed", exc) from exc

    def has_chunk(self, chunk_id: str) -> bool:
        return self._stat(self._chunk_file(chunk_id)) is not None

    def chunk_size_on_disk(self, chunk_id: str) -> int:
        st = self._stat(self._chunk_file(chunk_id))
        if st is None:
            raise ChunkMissingError(f"node {self._node_id}: chunk {chunk_id} missing")
        return st.st_size

    def get_manifest(self, file_hash: str) -> bytes | None:
        return self._read(self._manifest_file(file_hash))

    def _unlink(self, path: str) -> bool:
        try:
            os.unlink(path)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise self._error("delete failed", exc) from exc

    def delete_chunk(self, chunk_id: str) -> bool:
        return self._unlink(self._chunk_file(chunk_id))

    def stale_chunks(self, older_than_s: float) -> Iterator[str]:
        cutoff = time.time() - older_than_s
        for entry in self._walk(self._chunks, 2):
            try:
                if HASH_RE.fullmatch(entry.name) and entry.stat().st_mtime <= cutoff:
                    yield entry.name
            except OSError:
                continue  # removed while walking

    def discard_if_stale(self, chunk_id: str, older_than_s: float) -> bool:
        """Move the chunk aside, then delete it only if no put touched it before the move.

        A put that finds a chunk present claims it with utime(2). Either the claim comes first
        (the moved file is fresh: it is moved back) or the move does (the claim fails and the
        put writes a new copy), so a chunk a put relies on is never removed.
        """
        final = self._chunk_file(chunk_id)
        trash = os.path.join(
            os.path.dirname(final), f"{TEMP_PREFIX}gc-{secrets.token_hex(6)}-{chunk_id}"
        )
        try:
            os.rename(final, trash)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise self._error("discard failed", exc) from exc
        try:
            if os.stat(trash).st_mtime > time.time() - older_than_s:
                os.replace(trash, final)  # claimed meanwhile: keep it
                return False
            os.unlink(trash)
            return True
        except OSError as exc:
            raise self._error("discard failed", exc) from exc

    def delete_manifest(self, file_hash: str) -> bool:
        return self._unlink(self._manifest_file(file_hash))

    # walks -------------------------------------------------------------------------------------

    def _walk(self, top: str, depth: int) -> Iterator[os.DirEntry[str]]:
        """Yield the file entries `depth` directory levels below `top` (missing dirs: nothing)."""
        try:
            with os.scandir(top) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._error("listing failed", exc) from exc
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if depth == 0:
                if not is_dir:
                    yield entry
            elif is_dir:
                yield from self._walk(entry.path, depth - 1)

    def list_chunks(self) -> Iterator[str]:
        for entry in self._walk(self._chunks, 2):
            if HASH_RE.fullmatch(entry.name):
                yield entry.name

    def list_manifests(self) -> Iterator[str]:
        for entry in self._walk(self._manifests, 1):
            name = entry.name
            if name.endswith(_MANIFEST_SUFFIX) and HASH_RE.fullmatch(
                name[: -len(_MANIFEST_SUFFIX)]
            ):
                yield name[: -len(_MANIFEST_SUFFIX)]

    def _entries(self) -> Iterator[os.DirEntry[str]]:
        yield from self._walk(self._chunks, 2)
        yield from self._walk(self._manifests, 1)

    def used_bytes(self) -> int:
        total = 0
        for entry in self._entries():
            try:
                total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # removed while walking
        return total

    def census(self) -> tuple[list[str], int, int]:
        ids: list[str] = []
        used = 0
        for entry in self._entries():
            if entry.path.startswith(self._chunks + os.sep) and HASH_RE.fullmatch(entry.name):
                ids.append(entry.name)
            try:
                used += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # removed while walking
        return ids, used, self.free_bytes()

    def free_bytes(self) -> int:
        path = self._root
        while not os.path.isdir(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        try:
            return int(shutil.disk_usage(path).free)
        except OSError as exc:
            raise self._error("disk usage failed", exc) from exc

    def cleanup_temp(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in self._entries():
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._error("temp cleanup failed", exc) from exc
        return removed

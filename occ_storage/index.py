"""File manifests (JSON, stored on the nodes) and the file index interface with an in-memory index."""

from __future__ import annotations

import builtins
import json
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from occ_storage.chunking import HASH_RE
from occ_storage.errors import ManifestError

MANIFEST_VERSION = 1


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of a file: its id, its offset in the file and its size."""

    id: str
    offset: int
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a file is made of and where its chunks should live (target placement at put time)."""

    file_hash: str
    name: str
    size: int
    chunk_size: int
    chunks: tuple[ChunkRef, ...]
    replication_factor: int
    placement: dict[str, tuple[str, ...]] = field(default_factory=dict)
    created_at: float = 0.0
    expires_at: float | None = None

    def chunk_ids(self) -> list[str]:
        """Return the distinct chunk ids in file order."""
        return list(dict.fromkeys(c.id for c in self.chunks))

    def with_replication(self, r: int) -> Manifest:
        """Return a copy with a new replication target (placement unchanged)."""
        return Manifest(
            self.file_hash,
            self.name,
            self.size,
            self.chunk_size,
            self.chunks,
            r,
            dict(self.placement),
            self.created_at,
            self.expires_at,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form (chunks as [id, offset, size] triples)."""
        return {
            "version": MANIFEST_VERSION,
            "file_hash": self.file_hash,
            "name": self.name,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "chunks": [[c.id, c.offset, c.size] for c in self.chunks],
            "replication_factor": self.replication_factor,
            "placement": {k: list(v) for k, v in self.placement.items()},
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }

    def to_json(self) -> bytes:
        """Return stable JSON (sorted keys, compact, ASCII: any name, even a lone surrogate, encodes)."""
        return json.dumps(
            self.to_dict(),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        ).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse and validate a manifest; raise ManifestError if it is malformed or inconsistent."""
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise ManifestError("manifest is not a JSON object")
        try:
            return cls._from_obj(obj)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ManifestError):
                raise
            raise ManifestError(f"malformed manifest: {exc!r}") from exc

    @classmethod
    def _from_obj(cls, obj: Mapping[str, Any]) -> Manifest:
        def need(cond: bool, what: str) -> None:
            if not cond:
                raise ManifestError(f"malformed manifest: {what}")

        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(obj.get("version") == MANIFEST_VERSION, "unknown version")
        file_hash, name, size = obj["file_hash"], obj["name"], obj["size"]
        chunk_size, r = obj["chunk_size"], obj["replication_factor"]
        need(isinstance(file_hash, str) and HASH_RE.fullmatch(file_hash) is not None, "file_hash")
        need(isinstance(name, str), "name")
        need(is_int(size) and size >= 0, "size")
        need(is_int(chunk_size) and chunk_size > 0, "chunk_size")
        need(is_int(r) and r >= 1, "replication_factor")
        chunks: list[ChunkRef] = []
        offset = 0
        for item in obj["chunks"]:
            need(isinstance(item, list) and len(item) == 3, "chunk entry")
            cid, off, csize = item
            need(isinstance(cid, str) and HASH_RE.fullmatch(cid) is not None, "chunk id")
            need(is_int(off) and off == offset, "chunk offsets")
            need(is_int(csize) and 0 < csize <= chunk_size, "chunk size")
            chunks.append(ChunkRef(cid, off, csize))
            offset += csize
        need(offset == size, "chunk sizes do not add up to the file size")
        ids = {c.id for c in chunks}
        placement: dict[str, tuple[str, ...]] = {}
        raw_placement = obj["placement"]
        need(isinstance(raw_placement, dict), "placement")
        for cid, nodes in raw_placement.items():
            need(cid in ids, "placement of an unknown chunk")
            need(isinstance(nodes, list) and all(isinstance(n, str) for n in nodes), "placement")
            placement[cid] = tuple(nodes)
        created_at, expires_at = obj["created_at"], obj.get("expires_at")
        need(isinstance(created_at, int | float) and math.isfinite(created_at), "created_at")
        need(expires_at is None or isinstance(expires_at, int | float), "expires_at")
        return cls(
            file_hash,
            name,
            size,
            chunk_size,
            tuple(chunks),
            r,
            placement,
            float(created_at),
            None if expires_at is None else float(expires_at),
        )


class FileIndex(Protocol):
    """Where manifests are looked up by file hash (a cache: rebuildable from the nodes)."""

    def get(self, file_hash: str) -> Manifest | None: ...

    def put(self, manifest: Manifest) -> None: ...

    def delete(self, file_hash: str) -> None: ...

    def list(self, offset: int, limit: int) -> builtins.list[Manifest]:
        """Return manifests newest first (by created_at)."""
        ...

    def count(self) -> int: ...

    def chunk_target(self, chunk_id: str) -> int:
        """Return the highest replication factor of the manifests using the chunk (0 if none)."""
        ...

    def all_file_hashes(self) -> builtins.list[str]: ...


class MemoryIndex:
    """FileIndex in process memory (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, Manifest] = {}
        self._chunk_refs: dict[str, dict[str, int]] = {}  # chunk id -> {file hash: r}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MemoryIndex):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    __hash__ = None  # type: ignore[assignment]

    def snapshot(self) -> dict[str, Manifest]:
        """Return a copy of file hash -> manifest."""
        with self._lock:
            return dict(self._files)

    def _unlink(self, manifest: Manifest) -> None:
        for cid in manifest.chunk_ids():
            refs = self._chunk_refs.get(cid)
            if refs is not None:
                refs.pop(manifest.file_hash, None)
                if not refs:
                    del self._chunk_refs[cid]

    def get(self, file_hash: str) -> Manifest | None:
        with self._lock:
            return self._files.get(file_hash)

    def put(self, manifest: Manifest) -> None:
        with self._lock:
            old = self._files.get(manifest.file_hash)
            if old is not None:
                self._unlink(old)
            self._files[manifest.file_hash] = manifest
            for cid in manifest.chunk_ids():
                self._chunk_refs.setdefault(cid, {})[manifest.file_hash] = (
                    manifest.replication_factor
                )

    def delete(self, file_hash: str) -> None:
        with self._lock:
            old = self._files.pop(file_hash, None)
            if old is not None:
                self._unlink(old)

    def list(self, offset: int, limit: int) -> builtins.list[Manifest]:
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must be >= 0")
        with self._lock:
            ordered = sorted(self._files.values(), key=lambda m: (-m.created_at, m.file_hash))
        return ordered[offset : offset + limit]

    def count(self) -> int:
        with self._lock:
            return len(self._files)

    def chunk_target(self, chunk_id: str) -> int:
        with self._lock:
            return max(self._chunk_refs.get(chunk_id, {}).values(), default=0)

    def all_file_hashes(self) -> builtins.list[str]:
        with self._lock:
            return list(self._files)

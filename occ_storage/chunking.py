"""Split streams into content-addressed chunks (id = SHA-256 of the chunk) without holding a file."""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from occ_storage.errors import InvalidHashError

CHUNK_SIZE = 262144
HASH_RE = re.compile(r"[0-9a-f]{64}")
_ANY_CASE_HASH_RE = re.compile(r"[0-9a-fA-F]{64}")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def check_hash(value: object) -> str:
    """Return `value` as a lowercase 64-hex SHA-256 id; raise InvalidHashError for anything else."""
    if not isinstance(value, str) or _ANY_CASE_HASH_RE.fullmatch(value) is None:
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise InvalidHashError(f"not a SHA-256 hex digest: {shown!r}")
    return value.lower()


def check_chunk_size(chunk_size: int) -> int:
    """Return `chunk_size` if it is a positive int, else raise ValueError."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a stream: its SHA-256 id, its bytes and its offset in the stream."""

    id: str
    data: bytes
    offset: int


def read_full(stream: BinaryIO, view: memoryview) -> int:
    """Fill `view` from `stream`, looping over short reads (sockets, pipes); return bytes read.

    Fewer than len(view) bytes means end of stream.
    """
    readinto = getattr(stream, "readinto", None)
    want = len(view)
    got = 0
    while got < want:
        if readinto is not None:
            n = readinto(view[got:])
        else:
            data = stream.read(want - got)
            n = None if data is None else len(data)
            if n:
                view[got : got + n] = data
        if n is None:
            raise BlockingIOError("non-blocking stream returned no data")
        if n == 0:
            break
        got += n
    return got


class ChunkedReader:
    """Iterate a stream as Chunks while computing the whole-file SHA-256 and size.

    `file_hash` and `size` are available once iteration has finished (`done` is True).
    Reads go into one reusable buffer of exactly `chunk_size` bytes.
    """

    def __init__(self, stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> None:
        self.stream = stream
        self.chunk_size = check_chunk_size(chunk_size)
        self.size = 0
        self.done = False
        self._file = hashlib.sha256()
        self._started = False

    @property
    def file_hash(self) -> str:
        """SHA-256 hex of the whole stream; only valid after iteration finished."""
        if not self.done:
            raise RuntimeError("file_hash is only known after the whole stream was read")
        return self._file.hexdigest()

    def __iter__(self) -> Iterator[Chunk]:
        if self._started:
            raise RuntimeError("a ChunkedReader can be iterated only once")
        self._started = True
        buf = bytearray(self.chunk_size)
        view = memoryview(buf)
        feed: _Feeder | None = None
        try:
            while True:
                n = read_full(self.stream, view)
                if n == 0:
                    break
                data = bytes(view[:n])
                if feed is None and n == self.chunk_size:
                    feed = _Feeder(self._file)  # more than one chunk may follow
                if feed is None:
                    self._file.update(data)
                else:
                    feed.put(data)
                yield Chunk(hashlib.sha256(data).hexdigest(), data, self.size)
                self.size += n
                if n < self.chunk_size:
                    break
        finally:
            if feed is not None:
                feed.close()
        self.done = True


class _Feeder:
    """Feeds one hash, in order, from a thread of its own.

    hashlib releases the GIL on large buffers, so the whole-file hash runs on another core
    beside the chunk hash, instead of both (two SHA-256 passes over every byte) on the thread
    that reads the stream: that thread was the bottleneck of a large upload (bench/README.md).
    At most `depth` chunks wait for it.
    """

    def __init__(self, h: Any, depth: int = 8) -> None:
        self._h = h
        self._q: queue.Queue[bytes | None] = queue.Queue(depth)
        self._thread = threading.Thread(target=self._run, name="occ-file-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._q.get()) is not None:
            self._h.update(data)

    def put(self, data: bytes) -> None:
        self._q.put(data)

    def close(self) -> None:
        """Wait until every chunk given is hashed."""
        self._q.put(None)
        self._thread.join()


def iter_chunks(stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[Chunk]:
    """Yield the chunks of `stream` (the last one may be short; an empty stream yields none)."""
    yield from ChunkedReader(stream, chunk_size)

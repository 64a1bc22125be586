"""Streaming chunker: exact chunk boundaries, short reads, whole-file hash and size."""

from __future__ import annotations

import hashlib
import io
import threading
from typing import Any

import pytest

from occ_storage.chunking import CHUNK_SIZE, ChunkedReader, check_hash, iter_chunks
from occ_storage.errors import InvalidHashError

from .conftest import payload


class Trickle(io.RawIOBase):
    """A socket-like stream: readinto returns at most `step` bytes."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.step, len(self.data) - self.pos)
        b[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


class ReadOnly:
    """A stream with read() only."""

    def __init__(self, data: bytes) -> None:
        self.buf = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self.buf.read(min(n, 100))


@pytest.mark.parametrize("cs", [CHUNK_SIZE, 1024])
@pytest.mark.parametrize("kind", ["0", "1", "cs-1", "cs", "cs+1", "3cs+17"])
def test_round_trip_sizes(cs: int, kind: str) -> None:
    size = {"0": 0, "1": 1, "cs-1": cs - 1, "cs": cs, "cs+1": cs + 1, "3cs+17": 3 * cs + 17}[kind]
    data = payload(size, seed=size)
    reader = ChunkedReader(io.BytesIO(data), cs)
    chunks = list(reader)
    assert b"".join(c.data for c in chunks) == data
    assert len(chunks) == -(-size // cs)
    for c in chunks:
        assert c.id == hashlib.sha256(c.data).hexdigest()
        assert data[c.offset : c.offset + len(c.data)] == c.data
        assert 0 < len(c.data) <= cs
    assert reader.size == size
    assert reader.file_hash == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("step", [1, 7, 1000, 5000])
def test_short_reads_give_exact_chunks(step: int) -> None:
    data = payload(10_000, seed=step)
    ref = [c.id for c in iter_chunks(io.BytesIO(data), 1024)]
    assert [c.id for c in iter_chunks(Trickle(data, step), 1024)] == ref  # type: ignore[arg-type]
    assert [c.id for c in iter_chunks(ReadOnly(data), 1024)] == ref  # type: ignore[arg-type]


def test_file_hash_only_after_iteration() -> None:
    reader = ChunkedReader(io.BytesIO(b"abc"), 2)
    with pytest.raises(RuntimeError):
        _ = reader.file_hash
    it = iter(reader)
    next(it)
    with pytest.raises(RuntimeError):
        _ = reader.file_hash
    list(it)
    assert reader.file_hash == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(RuntimeError):
        list(reader)  # a reader is single-use


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_chunk_size(bad: object) -> None:
    with pytest.raises(ValueError):
        ChunkedReader(io.BytesIO(b""), bad)  # type: ignore[arg-type]


def test_check_hash() -> None:
    h = hashlib.sha256(b"x").hexdigest()
    assert check_hash(h) == h
    assert check_hash(h.upper()) == h
    for bad in ["xyz", "../etc/passwd", h + "a", h[:-1], h[:-1] + "g", "", None, 5, h + "\n"]:
        with pytest.raises(InvalidHashError):
            check_hash(bad)


def feeder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "occ-file-hash"]


def test_the_file_hash_thread_ends_with_the_stream_or_its_abandonment() -> None:
    """The whole-file hash of a multi-chunk stream is fed in a thread of its own; the thread
    ends when the stream does, when a read fails, and when the reader is dropped midway."""
    data = payload(10 * 1024 + 5, seed=3)
    reader = ChunkedReader(io.BytesIO(data), 1024)
    assert [c.data for c in reader][-1] == data[-5:]
    assert reader.file_hash == hashlib.sha256(data).hexdigest() and feeder_threads() == []

    class Failing(io.BytesIO):
        def readinto(self, b: Any) -> int:
            if self.tell() >= 3000:
                raise OSError("client went away")
            return super().readinto(b)

    with pytest.raises(OSError):
        list(ChunkedReader(Failing(data), 1024))
    assert feeder_threads() == []
    it = iter(ChunkedReader(io.BytesIO(data), 1024))
    next(it), next(it)
    it.close()  # GeneratorExit at the yield: what a dropped upload does
    assert feeder_threads() == []

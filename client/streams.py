"""Request bodies read from files in blocks: streaming multipart/form-data and raw file bodies.

Neither holds a file whole in memory; both have an exact length (``requests`` sends it as
Content-Length) and report progress through a callback.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from client.errors import ClientError

BLOCK_SIZE = 64 * 1024  # the most read from a file at once

Progress = Callable[[int], None]  # called with the number of bytes just sent or received


class BlockBody:
    """A body of a known ``length`` that ``requests`` iterates in blocks of ``block_size``."""

    length: int
    block_size: int

    def read(self, size: int | None = -1) -> bytes:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        while True:
            block = self.read(self.block_size)
            if not block:
                return
            yield block


def _quote_header_value(value: str) -> str:
    """Escape a name or filename for a Content-Disposition parameter (as browsers do)."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


@dataclass
class FilePart:
    """A file part: the form field name, the path to read, and the filename sent."""

    name: str
    path: Path
    filename: str = ""
    content_type: str = "application/octet-stream"
    size: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.filename:
            self.filename = self.path.name
        self.size = os.stat(self.path).st_size


Opener = Callable[[Path], BinaryIO]


def _open_binary(path: Path) -> BinaryIO:
    return open(path, "rb")


class MultipartStream(BlockBody):
    """A multipart/form-data body read in blocks: a file-like object with an exact length.

    ``requests`` sends it with ``Content-Length: len(stream)``; files are opened one at a time,
    read at most ``block_size`` bytes at a time and never held whole in memory. ``progress`` is
    called with the number of file bytes each time a block of a file is read. A file whose size
    changed since the stream was built raises ClientError (the length would be wrong).
    """

    def __init__(
        self,
        fields: Sequence[tuple[str, str]] = (),
        files: Sequence[FilePart] = (),
        boundary: str | None = None,
        block_size: int = BLOCK_SIZE,
        progress: Progress | None = None,
        opener: Opener = _open_binary,
    ) -> None:
        self.boundary = boundary or secrets.token_hex(16)
        self.block_size = block_size
        self.progress = progress
        self.opener = opener
        self.files = list(files)
        b = self.boundary.encode("ascii")
        self._segments: list[bytes | FilePart] = []
        for name, value in fields:
            self._segments.append(
                b"--"
                + b
                + b"\r\n"
                + f'Content-Disposition: form-data; name="{_quote_header_value(name)}"\r\n\r\n'.encode()
                + value.encode("utf-8")
                + b"\r\n"
            )
        for part in self.files:
            self._segments.append(
                b"--"
                + b
                + b"\r\n"
                + (
                    f'Content-Disposition: form-data; name="{_quote_header_value(part.name)}"; '
                    f'filename="{_quote_header_value(part.filename)}"\r\n'
                    f"Content-Type: {part.content_type}\r\n\r\n"
                ).encode()
            )
            self._segments.append(part)
            self._segments.append(b"\r\n")
        self._segments.append(b"--" + b + b"--\r\n")
        self.length = sum(len(s) if isinstance(s, bytes) else s.size for s in self._segments)
        self._index = 0
        self._offset = 0  # within the current bytes segment, or bytes read of the current file
        self._current: BinaryIO | None = None
        self.sent = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _next_segment(self) -> None:
        self._index += 1
        self._offset = 0

    def _read_file(self, part: FilePart, n: int) -> bytes:
        if self._current is None:
            self._current = self.opener(part.path)
        want = min(n, self.block_size, part.size - self._offset)
        data = self._current.read(want) if want > 0 else b""
        if want > 0 and not data:
            self.close()
            raise ClientError(f"{part.path} became shorter while it was being uploaded")
        self._offset += len(data)
        if self._offset >= part.size:
            extra = self._current.read(1)
            self.close()
            if extra:
                raise ClientError(f"{part.path} grew while it was being uploaded")
            self._next_segment()
        if data and self.progress is not None:
            self.progress(len(data))
        return data

    def read(self, size: int | None = -1) -> bytes:
        """Return up to ``size`` bytes of the body (all that is left if size is None or < 0)."""
        limit = self.length if size is None or size < 0 else size
        out: list[bytes] = []
        got = 0
        while got < limit and self._index < len(self._segments):
            seg = self._segments[self._index]
            if isinstance(seg, bytes):
                piece = seg[self._offset : self._offset + (limit - got)]
                self._offset += len(piece)
                if self._offset >= len(seg):
                    self._next_segment()
            else:
                if seg.size == 0:
                    self._next_segment()
                    continue
                piece = self._read_file(seg, limit - got)
            out.append(piece)
            got += len(piece)
        data = b"".join(out)
        self.sent += len(data)
        return data

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None


class ProgressReader(BlockBody):
    """A file opened for a raw (non-multipart) body: read in blocks, progress reported, exact length."""

    def __init__(
        self, path: Path, block_size: int = BLOCK_SIZE, progress: Progress | None = None
    ) -> None:
        self.path = Path(path)
        self.length = os.stat(self.path).st_size
        self.block_size = block_size
        self.progress = progress
        self._f: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 - closed by close()

    def read(self, size: int | None = -1) -> bytes:
        n = self.block_size if size is None or size < 0 else min(size, self.block_size)
        data = self._f.read(n)
        if data and self.progress is not None:
            self.progress(len(data))
        return data

    def close(self) -> None:
        self._f.close()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK_SIZE):
            h.update(block)
    return h.hexdigest()

"""Staging of a paid upload's files: durable, private attempt directories renamed into place once accepted."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from occ_protocol.formats import is_quote_id
from occ_storage.nodes import fsync_dir
from workers.services.paid.errors import FileMismatchError
from workers.settings import Settings

COPY_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class StagedFile:
    """One staged upload part: its index in the quote, client name (metadata only), size, SHA-256."""

    index: int
    name: str
    length: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quotes_dir(settings: Settings) -> Path:
    return settings.staging_dir / "quotes"


def quote_dir(settings: Settings, quote_id: str) -> Path:
    """Where a quote's accepted files are staged: <staging>/quotes/<quoteId>/<index>."""
    if not is_quote_id(quote_id):
        raise ValueError("malformed quote id")
    return quotes_dir(settings) / quote_id.lower()


def safe_name(name: str | None, fallback: str) -> str:
    """A client file name reduced to a base name (metadata only, never a path)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "").strip()
    return base[:255] or fallback


def _place(stream: IO[bytes], dest: Path, limit: int) -> tuple[int, str]:
    """Put one part at ``dest`` (hard link of its temp file when possible), fsync, return (size, sha256)."""
    src = getattr(stream, "name", None)
    linked = False
    if isinstance(src, str) and os.path.isabs(src):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()
        try:
            if os.stat(src).st_size > limit:
                raise FileMismatchError("a file is larger than quoted")
            os.link(src, dest)  # same filesystem: the bytes are moved, not copied
            linked = True
        except OSError:
            linked = False
    digest = hashlib.sha256()
    size = 0
    if linked:
        with open(dest, "rb") as f:
            while block := f.read(COPY_BLOCK):
                size += len(block)
                digest.update(block)
            os.fsync(f.fileno())
    else:
        stream.seek(0)
        with open(dest, "xb") as out:
            while block := stream.read(COPY_BLOCK):
                size += len(block)
                if size > limit:
                    raise FileMismatchError("a file is larger than quoted")
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    if size > limit:
        raise FileMismatchError("a file is larger than quoted")
    return size, digest.hexdigest()


def stage_files(
    settings: Settings,
    quote_id: str,
    parts: Sequence[tuple[str | None, IO[bytes]]],
    max_lengths: Sequence[int],
) -> tuple[Path, list[StagedFile]]:
    """Stage upload parts durably in a private attempt directory; return (directory, files).

    Each part i is checked against ``max_lengths[i]`` while it is hashed (FileMismatchError if
    larger). commit_staging() later renames the directory to quote_dir(); on any error here
    the directory is removed.
    """
    attempt = quotes_dir(settings) / f".attempt-{quote_id.lower()}-{secrets.token_hex(8)}"
    attempt.mkdir(parents=True)
    try:
        staged = []
        for i, ((name, stream), limit) in enumerate(zip(parts, max_lengths, strict=True)):
            try:
                size, sha = _place(stream, attempt / str(i), limit)
            except FileMismatchError:
                raise FileMismatchError(
                    f"file {i + 1} is larger than the {limit} bytes quoted"
                ) from None
            staged.append(StagedFile(i, safe_name(name, f"{quote_id}-{i}"), size, sha))
        fsync_dir(attempt)
    except BaseException:
        shutil.rmtree(attempt, ignore_errors=True)
        raise
    return attempt, staged


def commit_staging(attempt: Path, final: Path) -> None:
    """Rename the attempt directory to the quote's staging directory, durably."""
    if final.exists():  # only the quote's one accepted upload gets here: anything there is stale
        shutil.rmtree(final, ignore_errors=True)
    os.rename(attempt, final)
    fsync_dir(final.parent)


def remove_staging(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

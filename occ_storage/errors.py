"""Typed errors of the occ_storage library; they carry no HTTP codes (api/errors.py maps them)."""


class OccStorageError(Exception):
    """Base class of every error raised by occ_storage."""


class InvalidHashError(OccStorageError, ValueError):
    """A hash is not 64 lowercase/uppercase hex characters."""


class UnknownFileError(OccStorageError, KeyError):
    """No manifest for this file hash."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep plain messages
        return str(self.args[0]) if self.args else "unknown file"


class InvalidRangeError(OccStorageError, ValueError):
    """A byte range outside the file."""


class InvalidReplicationError(OccStorageError, ValueError):
    """A replication factor outside 1..number of nodes."""


class ChunkUnavailableError(OccStorageError):
    """No replica of a chunk verifies: the data cannot be served."""


class CorruptChunkError(OccStorageError):
    """A replica's bytes do not hash to its id."""


class ChunkMissingError(OccStorageError):
    """A node does not hold the requested chunk."""


class NodeError(OccStorageError):
    """A node backend failed (I/O error, node directory gone, ...)."""


class SketchMismatchError(OccStorageError, ValueError):
    """Sketches with a different key, N' or tau cannot be merged."""


class SketchSaturatedError(OccStorageError):
    """The sketch has no empty register (Z_0 = 0): resize N'."""


class ManifestError(OccStorageError, ValueError):
    """A manifest is malformed or inconsistent (bad JSON, bad hashes, sizes that do not add up)."""


class InvalidNodeError(OccStorageError, ValueError):
    """A node set is unusable: duplicate node ids, a negative or non-finite weight, no nodes."""


class WriteQuorumError(NodeError):
    """Fewer nodes than the write quorum accepted a chunk or a manifest: nothing is acknowledged."""


class ContentMismatchError(OccStorageError, ValueError):
    """The stored stream's SHA-256 is not the one the caller expected (nothing was registered)."""

"""LCRS sketches: a keyed register map, exact per-node counts and the merged, censored sum."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from occ_storage.errors import InvalidHashError, SketchMismatchError

__all__ = [
    "MAX_N_PRIME",
    "MergedSketch",
    "NodeSketch",
    "key_id_of",
    "register_id",
    "register_ids",
]

#: N' must fit the multiply-shift map and a uint32 register id.
MAX_N_PRIME = 2**32 - 1
_MIN_KEY_BYTES = 16
_NODE_MAGIC = b"OCCN"
_MERGED_MAGIC = b"OCCM"
_VERSION = 1
# magic, version, key id, N' (and tau for the merged sketch), little-endian
_NODE_HEADER = struct.Struct("<4sB8sI")
_MERGED_HEADER = struct.Struct("<4sB8sIIB")

U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or not _MIN_KEY_BYTES <= len(key) <= 64:
        raise ValueError(f"the register key must be {_MIN_KEY_BYTES}..64 bytes (BLAKE2b key)")


def _check_n_prime(n_prime: int) -> None:
    if not isinstance(n_prime, int | np.integer) or not 1 <= int(n_prime) <= MAX_N_PRIME:
        raise ValueError(f"N' must be an integer in 1..{MAX_N_PRIME}, got {n_prime!r}")


def key_id_of(key: bytes) -> bytes:
    """Return the 8-byte public id of a register key: BLAKE2b(key, person='occ-keyid')[:8].

    Sketches carry this id, never the key, so mismatched keys are detected on merge.
    """
    _check_key(key)
    return hashlib.blake2b(bytes(key), digest_size=8, person=b"occ-keyid").digest()


def _chunk_bytes(chunk_id: str | bytes) -> bytes:
    # A hex string and its raw digest name the same chunk, so both map to the same register.
    if isinstance(chunk_id, bytes | bytearray):
        return bytes(chunk_id)
    try:
        return bytes.fromhex(chunk_id)
    except ValueError:
        raise InvalidHashError(f"chunk id is not hex: {chunk_id[:80]!r}") from None


def _multiply_shift(prf: npt.NDArray[np.uint64], n_prime: int) -> U32:
    """j = (prf * N') >> 64 without 128-bit integers (N' < 2^32, so no term overflows)."""
    n = np.uint64(n_prime)
    hi = prf >> np.uint64(32)
    lo = prf & np.uint64(0xFFFFFFFF)
    j = (hi * n + ((lo * n) >> np.uint64(32))) >> np.uint64(32)
    return j.astype(np.uint32)


def register_ids(chunk_ids: Iterable[str | bytes], key: bytes, n_prime: int) -> U32:
    """Return the register of every chunk: j(c) = floor(PRF_K(c) * N' / 2^64) (occ-storage.md §3).

    PRF_K is keyed BLAKE2b with an 8-byte output read big-endian; the multiply-shift maps it to
    0..N'-1 without modulo bias beyond 2^-32. A chunk id is its SHA-256 digest, raw bytes or hex
    (both give the same register). Compute this once per chunk at ingest and store it.
    """
    _check_key(key)
    _check_n_prime(n_prime)
    k = bytes(key)
    blake = hashlib.blake2b
    digests = b"".join(
        blake(_chunk_bytes(c), key=k, digest_size=8, person=b"occ-register").digest()
        for c in chunk_ids
    )
    prf = np.frombuffer(digests, dtype=">u8").astype(np.uint64)
    return _multiply_shift(prf, int(n_prime))


def register_id(chunk_id: str | bytes, key: bytes, n_prime: int) -> int:
    """Return the register of one chunk (see `register_ids`)."""
    return int(register_ids([chunk_id], key, n_prime)[0])


def _as_registers(regs: npt.ArrayLike, n_prime: int) -> npt.NDArray[np.intp]:
    arr = np.asarray(regs)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError("register ids must be integers")
    out = arr.astype(np.intp, copy=False)
    if out.size and (int(out.min()) < 0 or int(out.max()) >= n_prime):
        raise ValueError(f"register id outside 0..{n_prime - 1}")
    return out


@dataclass(eq=False)
class NodeSketch:
    """Exact per-node register counts x_v[j] (uint16), for one key and N'.

    Local to its node: never published. Counts are exact so a removal undoes an add.
    """

    key_id: bytes
    n_prime: int
    counts: U16 = field(repr=False)

    def __post_init__(self) -> None:
        _check_n_prime(self.n_prime)
        self.n_prime = int(self.n_prime)
        if len(self.key_id) != 8:
            raise ValueError("key_id must be 8 bytes")
        self.key_id = bytes(self.key_id)
        counts = np.asarray(self.counts)
        if counts.shape != (self.n_prime,):
            raise ValueError(f"counts must have shape ({self.n_prime},)")
        self.counts = np.array(counts, dtype=np.uint16, copy=True)

    @classmethod
    def empty(cls, n_prime: int, key_id: bytes) -> NodeSketch:
        """Return a sketch of a node holding no chunk."""
        _check_n_prime(n_prime)
        return cls(key_id, int(n_prime), np.zeros(int(n_prime), dtype=np.uint16))

    @classmethod
    def from_registers(cls, regs: npt.ArrayLike, n_prime: int, key_id: bytes) -> NodeSketch:
        """Rebuild a node sketch from its chunks' stored register ids (one numpy.bincount)."""
        _check_n_prime(n_prime)
        counts = np.bincount(_as_registers(regs, int(n_prime)), minlength=int(n_prime))
        if counts.size and int(counts.max()) > np.iinfo(np.uint16).max:
            raise OverflowError("more than 65535 chunks in one register of a node: raise N'")
        return cls(key_id, int(n_prime), counts.astype(np.uint16))

    def add(self, reg: int) -> None:
        """Count one more chunk with register `reg` on this node."""
        j = int(reg)
        if not 0 <= j < self.n_prime:
            raise ValueError(f"register id outside 0..{self.n_prime - 1}")
        if self.counts[j] == np.iinfo(np.uint16).max:
            raise OverflowError("node register counter would overflow uint16")
        self.counts[j] += np.uint16(1)

    def remove(self, reg: int) -> None:
        """Count one chunk fewer with register `reg` (the chunk left this node)."""
        j = int(reg)
        if not 0 <= j < self.n_prime:
            raise ValueError(f"register id outside 0..{self.n_prime - 1}")
        if self.counts[j] == 0:
            raise ValueError(f"register {j} is already 0: removing a chunk never added")
        self.counts[j] -= np.uint16(1)

    def update(self, regs: npt.ArrayLike, *, remove: bool = False) -> None:
        """Add (or remove) many chunks at once from their stored register ids."""
        delta = np.bincount(_as_registers(regs, self.n_prime), minlength=self.n_prime)
        current = self.counts.astype(np.int64)
        new = current - delta if remove else current + delta
        if new.size and int(new.min()) < 0:
            raise ValueError("removing chunks never added (a register would go below 0)")
        if new.size and int(new.max()) > np.iinfo(np.uint16).max:
            raise OverflowError("node register counter would overflow uint16")
        self.counts = new.astype(np.uint16)

    @property
    def total(self) -> int:
        """Number of chunks counted on this node."""
        return int(self.counts.sum(dtype=np.int64))

    def to_bytes(self) -> bytes:
        """Serialise (header + little-endian uint16 counts); for the node's own storage."""
        header = _NODE_HEADER.pack(_NODE_MAGIC, _VERSION, self.key_id, self.n_prime)
        return header + self.counts.astype("<u2").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeSketch:
        """Inverse of `to_bytes`."""
        if len(data) < _NODE_HEADER.size:
            raise ValueError("node sketch bytes too short")
        magic, version, key_id, n_prime = _NODE_HEADER.unpack_from(data)
        if magic != _NODE_MAGIC or version != _VERSION:
            raise ValueError("not a node sketch (bad magic or version)")
        body = data[_NODE_HEADER.size :]
        if len(body) != 2 * n_prime:
            raise ValueError("node sketch body has the wrong length")
        counts = np.frombuffer(body, dtype="<u2").astype(np.uint16)
        return cls(key_id, n_prime, counts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeSketch):
            return NotImplemented
        return (
            self.key_id == other.key_id
            and self.n_prime == other.n_prime
            and bool(np.array_equal(self.counts, other.counts))
        )

    __hash__ = None  # type: ignore[assignment]


def _bytes_dtype(tau: int) -> str:
    return "<u1" if tau <= 0xFF else ("<u2" if tau <= 0xFFFF else "<u4")


@dataclass(eq=False)
class MergedSketch:
    """The published sketch: min(S, tau) with S = sum over nodes of x_v (summed in uint32).

    It depends only on the chunk set and the replica counts, never on which node holds a
    replica, and holds no chunk id. Merging two merged sketches is exact for the censored
    values because min(min(a, t) + min(b, t), t) = min(a + b, t).
    """

    key_id: bytes
    n_prime: int
    tau: int
    counts: U32 = field(repr=False)

    def __post_init__(self) -> None:
        _check_n_prime(self.n_prime)
        self.n_prime = int(self.n_prime)
        self.tau = int(self.tau)
        if not 1 <= self.tau <= 0xFFFF_FFFF:
            raise ValueError("tau must be >= 1")
        if len(self.key_id) != 8:
            raise ValueError("key_id must be 8 bytes")
        self.key_id = bytes(self.key_id)
        counts = np.asarray(self.counts)
        if counts.shape != (self.n_prime,):
            raise ValueError(f"counts must have shape ({self.n_prime},)")
        if counts.size and np.issubdtype(counts.dtype, np.signedinteger) and counts.min() < 0:
            raise ValueError("register sums cannot be negative")
        self.counts = np.minimum(counts.astype(np.uint32), np.uint32(self.tau))

    @classmethod
    def from_sum(cls, total: npt.ArrayLike, n_prime: int, key_id: bytes, tau: int) -> MergedSketch:
        """Publish an aggregated sum S (e.g. the output of secure aggregation) as min(S, tau)."""
        return cls(key_id, n_prime, tau, np.asarray(total, dtype=np.uint32))

    @classmethod
    def from_nodes(cls, nodes: Iterable[NodeSketch], tau: int) -> MergedSketch:
        """Sum node sketches in uint32 and censor at tau; all must share key id and N'."""
        it = iter(nodes)
        try:
            first = next(it)
        except StopIteration:
            raise ValueError("no node sketch to merge") from None
        acc = first.counts.astype(np.uint32)
        for node in it:
            if node.key_id != first.key_id or node.n_prime != first.n_prime:
                raise SketchMismatchError(
                    "node sketches differ in key id or N' "
                    f"({first.key_id.hex()}/{first.n_prime} vs {node.key_id.hex()}/{node.n_prime})"
                )
            np.add(acc, node.counts, out=acc, casting="unsafe")
        return cls(first.key_id, first.n_prime, tau, acc)

    def merge(self, other: MergedSketch) -> MergedSketch:
        """Return the merged sketch of two disjoint node groups (same key id, N' and tau)."""
        if (self.key_id, self.n_prime, self.tau) != (other.key_id, other.n_prime, other.tau):
            raise SketchMismatchError(
                "merged sketches differ in key id, N' or tau "
                f"({self.key_id.hex()}/{self.n_prime}/{self.tau} vs "
                f"{other.key_id.hex()}/{other.n_prime}/{other.tau})"
            )
        total = self.counts.astype(np.uint32) + other.counts.astype(np.uint32)
        return MergedSketch(self.key_id, self.n_prime, self.tau, total)

    def level_counts(self) -> npt.NDArray[np.int64]:
        """Return Z_0..Z_tau: the number of registers with each published value (Z_tau: >= tau).

        These are exact counts of the published sketch; everything else is estimated from them.
        """
        return np.bincount(self.counts, minlength=self.tau + 1).astype(np.int64)

    def to_bytes(self) -> bytes:
        """Serialise: header (key id, N', tau, width) + little-endian censored counts."""
        dt = _bytes_dtype(self.tau)
        width = np.dtype(dt).itemsize
        header = _MERGED_HEADER.pack(
            _MERGED_MAGIC, _VERSION, self.key_id, self.n_prime, self.tau, width
        )
        return header + self.counts.astype(dt).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> MergedSketch:
        """Inverse of `to_bytes`."""
        if len(data) < _MERGED_HEADER.size:
            raise ValueError("merged sketch bytes too short")
        magic, version, key_id, n_prime, tau, width = _MERGED_HEADER.unpack_from(data)
        if magic != _MERGED_MAGIC or version != _VERSION or width not in (1, 2, 4):
            raise ValueError("not a merged sketch (bad magic, version or width)")
        body = data[_MERGED_HEADER.size :]
        if len(body) != width * n_prime:
            raise ValueError("merged sketch body has the wrong length")
        counts = np.frombuffer(body, dtype=f"<u{width}")
        if counts.size and int(counts.max()) > tau:
            raise ValueError("merged sketch holds a value above tau")
        return cls(key_id, n_prime, tau, counts.astype(np.uint32))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MergedSketch):
            return NotImplemented
        return (
            (self.key_id, self.n_prime, self.tau) == (other.key_id, other.n_prime, other.tau)
        ) and bool(np.array_equal(self.counts, other.counts))

    __hash__ = None  # type: ignore[assignment]

"""A node on an S3 bucket (Ceph RGW, MinIO, Garage, AWS S3), through an S3 client passed in.

The client is any object with boto3's S3 client methods (`S3Client` below); this library never
imports boto3. Keys come only from validated hashes, under an optional per-node prefix:

    <prefix>chunks/<chunk id>            the chunk bytes (content-addressed)
    <prefix>manifests/<file hash>.json   a manifest copy
    <prefix>claims/<chunk id>/<token>    empty; its LastModified = when a put reused the chunk
    <prefix>trash/<chunk id>.<token>     a chunk the orphan sweep moved aside (see discard_if_stale)

A chunk PUT sends Content-MD5 (every S3 store verifies it and answers BadDigest otherwise) and,
unless `checksum_sha256=False`, x-amz-checksum-sha256 (verified by AWS, MinIO and Ceph >= 19;
Ceph 16 in Debian 12 ignores it). It is durable when the store answers 200. Every GET verifies
the SHA-256 as LocalDirNode does. Listings are paginated (1000 keys a page) and streamed.

Over ~400 lines because every verb shares the claim protocol below; apart they would drift.

Orphan-sweep safety without mtime/utime/rename (S3 has no atomic rename):
  put of a chunk already present:  HEAD chunk (or, with `conditional_put`, PUT If-None-Match: *
      answered 412) -> PUT a new claim -> HEAD chunk again; only a chunk found by that HEAD is
      counted as stored (else it is written). `conditional_put` saves a request per new chunk;
      enable it only on stores that honour If-None-Match on PUT (Ceph RGW 16 does: tested; AWS
      S3 since 2024-08; MinIO): a store that ignored it would overwrite without a claim.
  sweep (discard_if_stale):  HEAD chunk and list its claims (both older than the age, else keep)
      -> COPY chunk -> trash -> DELETE chunk -> list claims again; if one is fresh (newer than the
      trash copy's time minus the age, both server clocks) COPY trash -> chunk back; DELETE trash.
  A put relies on a chunk only if its second HEAD (after its claim) saw it. If that HEAD came
  before the sweep's DELETE, the claim precedes the sweep's claim check, which then sees it and
  restores the chunk; if it came after, the put saw no chunk and wrote a new copy. A sweep that
  dies between DELETE and restore leaves the trash object, which `cleanup_temp` restores.
  Each claim has its own key (never overwritten), so deleting an expired claim cannot remove a
  fresh one; claims live `claim_ttl_s` (default 2 days, above the gateway's 1-day sweep age).

Over ~400 lines because every verb shares the claim/trash protocol above and one thread pool for the client.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from occ_storage.chunking import HASH_RE
from occ_storage.errors import ChunkMissingError, CorruptChunkError, InvalidNodeError, NodeError
from occ_storage.nodes import NodeBase, check_id

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})
# S3 LastModified is truncated to whole seconds (up to 1 s early) and the store's clock may lag
# ours: an object counts as fresh for SLACK_S beyond the age asked for
SLACK_S = 2.0
UNLIMITED_BYTES = 1 << 60  # free_bytes of a node without a configured capacity


class S3Client(Protocol):
    """The part of boto3's S3 client a node uses (keyword arguments as in boto3)."""

    def put_object(self, **kwargs: Any) -> Any: ...
    def get_object(self, **kwargs: Any) -> Any: ...
    def head_object(self, **kwargs: Any) -> Any: ...
    def delete_object(self, **kwargs: Any) -> Any: ...
    def copy_object(self, **kwargs: Any) -> Any: ...
    def list_objects_v2(self, **kwargs: Any) -> Any: ...
    def head_bucket(self, **kwargs: Any) -> Any: ...


def _error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError (or the HTTP status), else ''."""
    resp = getattr(exc, "response", None)
    if not isinstance(resp, dict):
        return ""
    code = str(resp.get("Error", {}).get("Code", "") or "")
    if code:
        return code
    return str(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", "") or "")


def _epoch(value: object) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    raise NodeError(f"unexpected LastModified {value!r}")


class S3Node(NodeBase):
    """A storage node on one bucket (and key prefix) of an S3 endpoint."""

    kind = "s3"

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        node_id: str,
        weight: float = 1.0,
        *,
        prefix: str = "",
        pool_size: int = 8,
        capacity_bytes: int | None = None,
        checksum_sha256: bool = True,
        endpoint: str = "",
        claim_ttl_s: float = 2 * 86400,
        down_for_s: float = 2.0,
        conditional_put: bool | None = False,
    ) -> None:
        super().__init__(node_id, weight)
        if not bucket:
            raise InvalidNodeError(f"node {node_id!r}: bucket must be set")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self.capacity_bytes = capacity_bytes
        self.checksum_sha256 = checksum_sha256
        self.claim_ttl_s = float(claim_ttl_s)
        self.down_for_s = float(down_for_s)
        self.conditional_put = conditional_put
        self._down_until = 0.0
        self._pool_size = max(1, int(pool_size))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._lock = threading.Lock()

    def probe_conditional_put(self) -> bool | None:
        """Return whether the store refuses a second ``PUT If-None-Match: *`` of one key (412);
        None if the store could not be asked (unreachable).

        Ceph RGW, MinIO and AWS S3 refuse it; a store that ignores the header would overwrite,
        so only a 412 says yes. The probe object is deleted afterwards.
        """
        key = self._key("probe", secrets.token_hex(32))  # keys are built from hash-shaped ids
        try:
            if not self._put_object(key, b"", IfNoneMatch="*"):
                return False
            return not self._put_object(key, b"", IfNoneMatch="*")
        except NodeError:
            return None
        finally:
            with contextlib.suppress(NodeError):
                self._delete(key)

    def _use_conditional_put(self) -> bool:
        """``conditional_put`` None means "auto": probe once, at the first write that needs it."""
        if self.conditional_put is None:
            answer = self.probe_conditional_put()
            if answer is None:
                return False  # unreachable now: HEAD + PUT this time, ask again later
            self.conditional_put = answer
        return self.conditional_put

    def __repr__(self) -> str:
        where = f"{self.endpoint}/" if self.endpoint else ""
        return f"S3Node({where}{self.bucket}/{self.prefix}, node_id={self._node_id!r})"

    # plumbing ----------------------------------------------------------------------------------

    def _key(self, kind: str, ident: str) -> str:
        cid = check_id(ident)
        if kind == "manifests":
            return f"{self.prefix}manifests/{cid}.json"
        return f"{self.prefix}{kind}/{cid}"

    def _fail(self, what: str, exc: BaseException) -> NodeError:
        if isinstance(exc, NodeError):
            return exc
        code = _error_code(exc)
        detail = code or type(exc).__name__
        return NodeError(f"node {self._node_id}: {what} failed: {detail}")

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self._pool_size, thread_name_prefix="occ-s3")
                self._pool_pid = os.getpid()
            return self._pool

    def _call(self, op: str, **kwargs: Any) -> Any:
        """One client call. A failure without an S3 answer (refused, timed out after botocore's
        retries) marks the endpoint down for `down_for_s`: calls then fail at once, so an
        unreachable node costs one timeout, not one per chunk, and is treated as failed."""
        if time.monotonic() < self._down_until:
            raise NodeError(f"node {self._node_id}: endpoint unreachable (retrying shortly)")
        try:
            return getattr(self.client, op)(**kwargs)
        except Exception as exc:
            if not _error_code(exc):
                self._down_until = time.monotonic() + self.down_for_s
            raise

    def _head(self, key: str) -> dict[str, Any] | None:
        """HEAD the key: its response, or None if absent."""
        try:
            resp: dict[str, Any] = self._call("head_object", Bucket=self.bucket, Key=key)
            return resp
        except Exception as exc:
            if _error_code(exc) in _MISSING_CODES:
                return None
            raise self._fail("head", exc) from exc

    def _delete(self, key: str) -> None:
        try:
            self._call("delete_object", Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._fail("delete", exc) from exc

    def _copy(self, src: str, dst: str, **conditions: Any) -> bool:
        """Server-side copy; False if a condition failed or the source is absent."""
        try:
            self._call(
                "copy_object",
                Bucket=self.bucket,
                Key=dst,
                CopySource={"Bucket": self.bucket, "Key": src},
                **conditions,
            )
            return True
        except Exception as exc:
            if _error_code(exc) in _PRECONDITION_CODES | _MISSING_CODES:
                return False
            raise self._fail("copy", exc) from exc

    def _list(self, kind: str) -> Iterator[tuple[str, int, float]]:
        """Yield (name after the kind prefix, size, LastModified epoch), page by page."""
        start = f"{self.prefix}{kind}/"
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": start, "MaxKeys": 1000}
            if token:
                args["ContinuationToken"] = token
            try:
                page = self._call("list_objects_v2", **args)
            except Exception as exc:
                raise self._fail("listing", exc) from exc
            for obj in page.get("Contents", ()):
                yield obj["Key"][len(start) :], int(obj["Size"]), _epoch(obj["LastModified"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    # writes ------------------------------------------------------------------------------------

    def _put_object(
        self, key: str, data: bytes, *, sha256: bytes | None = None, **extra: Any
    ) -> bool:
        """PUT; False if a condition (If-None-Match) refused it because the key exists."""
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ContentMD5": base64.b64encode(
                hashlib.md5(data, usedforsecurity=False).digest()
            ).decode(),
            **extra,
        }
        if sha256 is not None and self.checksum_sha256:
            args["ChecksumSHA256"] = base64.b64encode(sha256).decode()
        try:
            self._call("put_object", **args)
            return True
        except Exception as exc:
            if "IfNoneMatch" in extra and _error_code(exc) in _PRECONDITION_CODES:
                return False
            raise self._fail("write", exc) from exc

    def _put_one(self, chunk_id: str, data: bytes) -> bool:
        key = self._key("chunks", chunk_id)
        digest = hashlib.sha256(data).digest()
        if digest != bytes.fromhex(chunk_id):
            raise CorruptChunkError(f"node {self._node_id}: data does not hash to {chunk_id}")
        conditional = self._use_conditional_put()
        cond = {"IfNoneMatch": "*"} if conditional else {}
        if conditional:  # one request for a new chunk; 412 means present
            if self._put_object(key, data, sha256=digest, **cond):
                return True
        elif self._head(key) is None:
            self._put_object(key, data, sha256=digest)
            return True
        claim = f"{self._key('claims', chunk_id)}/{time.time_ns()}-{secrets.token_hex(4)}"
        self._put_object(claim, b"")  # present: claim it, then look again
        if self._head(key) is not None:
            return False
        self._put_object(key, data, sha256=digest, **cond)  # swept meanwhile: write it
        return True

    def put_chunks(self, batch: Sequence[tuple[str, bytes]]) -> int:
        unique = dict(batch)
        if len(unique) == 1:
            ((cid, data),) = unique.items()
            return int(self._put_one(cid, data))
        results = self._executor().map(lambda item: self._put_one(*item), unique.items())
        return sum(int(r) for r in results)

    def put_chunk(self, chunk_id: str, data: bytes) -> bool:
        return self._put_one(chunk_id, data)

    def put_manifest(self, file_hash: str, data: bytes) -> None:
        self._put_object(
            self._key("manifests", file_hash), bytes(data), ContentType="application/json"
        )

    # reads -------------------------------------------------------------------------------------

    def _get(self, key: str) -> bytes | None:
        try:
            resp = self._call("get_object", Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in _MISSING_CODES:
                return None
            raise self._fail("read", exc) from exc
        body = resp["Body"]
        try:
            data: bytes = body.read()
            return data
        except Exception as exc:
            raise self._fail("read", exc) from exc
        finally:
            body.close()

    def get_chunk(self, chunk_id: str) -> bytes:
        data = self._get(self._key("chunks", chunk_id))
        if data is None:
            raise ChunkMissingError(f"node {self._node_id}: chunk {chunk_id} missing")
        if hashlib.sha256(data).digest() != bytes.fromhex(chunk_id):
            raise CorruptChunkError(f"node {self._node_id}: chunk {chunk_id} fails verification")
        return data

    def has_chunk(self, chunk_id: str) -> bool:
        return self._head(self._key("chunks", chunk_id)) is not None

    def chunk_size_on_disk(self, chunk_id: str) -> int:
        head = self._head(self._key("chunks", chunk_id))
        if head is None:
            raise ChunkMissingError(f"node {self._node_id}: chunk {chunk_id} missing")
        return int(head["ContentLength"])

    def get_manifest(self, file_hash: str) -> bytes | None:
        return self._get(self._key("manifests", file_hash))

    def list_chunks(self) -> Iterator[str]:
        for name, _, _ in self._list("chunks"):
            if HASH_RE.fullmatch(name):
                yield name

    def list_manifests(self) -> Iterator[str]:
        for name, _, _ in self._list("manifests"):
            if name.endswith(".json") and HASH_RE.fullmatch(name[:-5]):
                yield name[:-5]

    def used_bytes(self) -> int:
        return sum(size for kind in ("chunks", "manifests") for _, size, _ in self._list(kind))

    def census(self) -> tuple[list[str], int, int]:
        ids: list[str] = []
        used = 0
        for name, size, _ in self._list("chunks"):
            used += size
            if HASH_RE.fullmatch(name):
                ids.append(name)
        used += sum(size for _, size, _ in self._list("manifests"))
        if self.capacity_bytes is None:
            return ids, used, UNLIMITED_BYTES
        return ids, used, max(0, self.capacity_bytes - used)

    def free_bytes(self) -> int:
        if self.capacity_bytes is None:
            self.ping()
            return UNLIMITED_BYTES
        return max(0, self.capacity_bytes - self.used_bytes())

    def ping(self) -> None:
        """Raise NodeError unless the bucket answers."""
        try:
            self._call("head_bucket", Bucket=self.bucket)
        except Exception as exc:
            raise self._fail("head bucket", exc) from exc

    # delete and sweep --------------------------------------------------------------------------

    def delete_chunk(self, chunk_id: str) -> bool:
        key = self._key("chunks", chunk_id)
        if self._head(key) is None:
            return False
        self._delete(key)
        return True

    def delete_manifest(self, file_hash: str) -> bool:
        key = self._key("manifests", file_hash)
        if self._head(key) is None:
            return False
        self._delete(key)
        return True

    def _last_claim(self, chunk_id: str) -> float | None:
        """The LastModified of the newest claim on the chunk, or None."""
        times = [lm for _, _, lm in self._list(f"claims/{check_id(chunk_id)}")]
        return max(times) if times else None

    def stale_chunks(self, older_than_s: float) -> Iterator[str]:
        cutoff = time.time() - older_than_s - SLACK_S
        claims = {name.split("/", 1)[0] for name, _, lm in self._list("claims") if lm > cutoff}
        for name, _, lm in self._list("chunks"):
            if HASH_RE.fullmatch(name) and lm <= cutoff and name not in claims:
                yield name

    def discard_if_stale(self, chunk_id: str, older_than_s: float) -> bool:
        """Move the chunk to trash, delete it, and restore it if a put claimed it meanwhile.

        See the module docstring for why a chunk a put relies on is never lost.
        """
        key = self._key("chunks", chunk_id)
        trash = f"{self.prefix}trash/{check_id(chunk_id)}.{secrets.token_hex(6)}"
        head = self._head(key)
        if head is None:
            return False
        cutoff = time.time() - older_than_s - SLACK_S
        claimed = self._last_claim(chunk_id)
        if _epoch(head["LastModified"]) > cutoff or (claimed is not None and claimed > cutoff):
            return False  # written or claimed within the age: not stale
        if not self._copy(key, trash):
            return False  # gone meanwhile
        # from here on a failure leaves the trash object, which cleanup_temp restores
        head = self._head(trash)
        if head is None:
            raise NodeError(f"node {self._node_id}: trash copy of {chunk_id} vanished")
        moved_at = _epoch(head["LastModified"])
        self._delete(key)
        claimed = self._last_claim(chunk_id)  # a put that reused the chunk since the first look
        if claimed is not None and claimed >= moved_at - older_than_s - SLACK_S:
            if not self._copy(trash, key):
                raise NodeError(f"node {self._node_id}: restore of {chunk_id} failed")
            self._delete(trash)
            return False
        self._delete(trash)
        return True

    def cleanup_temp(self, older_than_s: float) -> int:
        """Restore chunks a failed sweep left in trash over `older_than_s` ago; drop expired claims."""
        now = time.time()
        cutoff = now - older_than_s
        done = 0
        for name, _, lm in list(self._list("trash")):
            cid = name.split(".", 1)[0]
            if lm > cutoff or not HASH_RE.fullmatch(cid):
                continue
            src = f"{self.prefix}trash/{name}"
            if self._head(self._key("chunks", cid)) is None:
                self._copy(src, self._key("chunks", cid))
            self._delete(src)
            done += 1
        for name, _, lm in list(self._list("claims")):
            if lm <= now - self.claim_ttl_s:
                self._delete(f"{self.prefix}claims/{name}")
                done += 1
        return done

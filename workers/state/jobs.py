"""The one owner of job keys, status codes and forward-only transitions (atomic Lua scripts in Redis)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from occ_protocol.status import Status
from workers import metrics
from workers.state import keys

# Forward-only compare-and-set: moves the status only to a strictly larger code, and never out
# of a final one (ARGV[4] lists the final codes, space-separated and padded).
FINAL_CODES = " " + " ".join(str(int(s)) for s in Status if s.final) + " "
_ADVANCE = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return -1 end
if tonumber(ARGV[1]) <= tonumber(cur) then return 0 end
if string.find(ARGV[4], ' ' .. cur .. ' ', 1, true) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'reason', ARGV[3]) end
return 1
"""

# Nonce check-and-set (protocol.md §2): passes only if nonce > last, then last := nonce.
_NONCE = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
local n = tonumber(ARGV[1])
if n > last then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0
"""

# Create a job only if absent (a re-submitted id never resets a job).
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
if KEYS[2] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2]) end
return 1
"""


class Jobs:
    """Job records in Redis: create, read, advance (forward only), count deliveries."""

    def __init__(self, client: redis.Redis) -> None:
        self.r: Any = client  # redis-py types replies as bytes | str | ...; ours are bytes
        self._advance = client.register_script(_ADVANCE)
        self._nonce = client.register_script(_NONCE)
        self._create = client.register_script(_CREATE)

    def create(
        self,
        job_id: str,
        kind: str,
        status: Status,
        data: dict[str, Any] | None = None,
        owner: str = "",
    ) -> bool:
        """Create the job unless it exists; returns whether it was created."""
        now = time.time()
        fields = {
            "id": job_id,
            "kind": kind,
            "created_at": f"{now:.6f}",
            "updated_at": f"{now:.6f}",
            "status": int(status),
            "deliveries": 0,
            "data": json.dumps(data or {}, sort_keys=True),
            "owner": owner.lower(),
        }
        # ARGV layout: id first pair, so ARGV[2] is the id and ARGV[4] the created_at
        argv: list[Any] = []
        for k in ("id", "created_at", "kind", "status", "updated_at", "deliveries", "data"):
            argv += [k, fields[k]]
        argv += ["owner", fields["owner"]]
        history = keys.history(owner) if owner else ""
        # _CREATE uses ARGV[2] (id) as the member and ARGV[4] (created_at) as the score
        created = bool(self._create(keys=[keys.job(job_id), history], args=argv))
        if created:
            metrics.JOBS.labels(status=str(int(status))).inc()
        return created

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hgetall(keys.job(job_id))
        if not raw:
            return None
        out: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        out["status"] = int(out.get("status", 0))
        out["deliveries"] = int(out.get("deliveries", 0))
        out["data"] = json.loads(out.get("data") or "{}")
        for k in ("created_at", "updated_at", "polled_at"):
            out[k] = float(out.get(k, 0.0))
        return out

    def touch(self, job_id: str) -> None:
        """Record that a live task is polling the job (the sweeper leaves it alone meanwhile)."""
        self.r.hset(keys.job(job_id), "polled_at", f"{time.time():.6f}")

    def status(self, job_id: str) -> int:
        raw = self.r.hget(keys.job(job_id), "status")
        return int(raw) if raw is not None else int(Status.NO_SUCH_QUOTE)

    def advance(self, job_id: str, status: Status, reason: str = "") -> bool:
        """Move to `status` if it is larger than the current, non-final one; returns whether it moved."""
        res = self._advance(
            keys=[keys.job(job_id)], args=[int(status), f"{time.time():.6f}", reason, FINAL_CODES]
        )
        moved = int(res) == 1
        if moved:
            metrics.JOBS.labels(status=str(int(status))).inc()
        return moved

    def update_data(self, job_id: str, **fields: Any) -> None:
        """Merge fields into the job's data (used for write-ahead records)."""
        with self.r.pipeline() as p:
            while True:
                try:
                    p.watch(keys.job(job_id))
                    cur = json.loads(p.hget(keys.job(job_id), "data") or b"{}")
                    cur.update(fields)
                    p.multi()
                    p.hset(keys.job(job_id), "data", json.dumps(cur, sort_keys=True))
                    p.execute()
                    return
                except redis.WatchError:
                    continue

    def cas_data(self, job_id: str, field: str, expected: Any, new: Any) -> tuple[bool, Any]:
        """Set data[field] to `new` only if it equals `expected` (None: absent).

        Returns (whether it was set, the value now in place); write-ahead records use it so
        that two deliveries of one task can never both record a transaction.
        """
        key = keys.job(job_id)
        with self.r.pipeline() as p:
            while True:
                try:
                    p.watch(key)  # type: ignore[no-untyped-call,unused-ignore]
                    raw = p.hget(key, "data")
                    if raw is None:
                        p.unwatch()
                        return False, None
                    cur = json.loads(raw or b"{}")
                    if cur.get(field) != expected:
                        p.unwatch()
                        return False, cur.get(field)
                    cur[field] = new
                    p.multi()
                    p.hset(key, "data", json.dumps(cur, sort_keys=True))
                    p.execute()
                    return True, new
                except redis.WatchError:
                    continue

    def count_attempt(self, job_id: str, stage: str) -> int:
        """Count one more delivery of one stage's task (payment, store, refund); returns the count."""
        return int(self.r.hincrby(keys.job(job_id), f"deliveries_{stage}", 1))

    def count_delivery(self, job_id: str) -> int:
        """Count one more delivery of the job's task; returns the new count."""
        return int(self.r.hincrby(keys.job(job_id), "deliveries", 1))

    def claim_nonce(self, address: str, nonce: str) -> bool:
        """Atomic nonce check-and-set per user address; True when nonce > last."""
        return int(self._nonce(keys=[keys.nonce(address)], args=[nonce])) == 1

    def history(self, owner: str, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        key = keys.history(owner)
        total = int(self.r.zcard(key))
        ids = self.r.zrevrange(key, offset, offset + limit - 1)
        jobs = [j for j in (self.get(i.decode()) for i in ids) if j is not None]
        return total, jobs

    def stuck(self, kind: str, older_than: float, limit: int = 100) -> list[dict[str, Any]]:
        """Jobs of `kind` in a non-final status neither updated nor polled for `older_than` s."""
        out = []
        cutoff = time.time() - older_than
        for key in self.r.scan_iter(match=keys.JOB_PATTERN, count=500):
            job = self.get(key.decode()[len(keys.JOB_PREFIX) :])
            if job is None or job["kind"] != kind:
                continue
            if max(job["updated_at"], job["polled_at"]) > cutoff:
                continue
            try:
                final = Status(job["status"]).final
            except ValueError:
                final = False
            if not final and job["status"] != Status.QUOTED:
                out.append(job)
                if len(out) >= limit:
                    break
        return out

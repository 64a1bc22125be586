"""The paid flow's steps once a quote's files are staged: charge (write-ahead), store, refund, expire.

Each step takes a quote id, re-reads the job, skips it when its status is final or elsewhere,
counts its delivery per stage (poison limit) and never repeats a side effect: a payment or
refund transaction is prepared and signed once, recorded in the job with a compare-and-set
before it is broadcast, and a re-delivered task only re-broadcasts the recorded bytes (same
hash, idempotent). Status moves only forward (workers/state/jobs.py). A step that waits for
something outside (confirmations, a microservice, a busy lock) raises PollLater; the thin
Celery tasks in workers/tasks/paid.py turn it into a retry and queue the next step by name.

Over ~400 lines on purpose: the four steps share the job re-read, delivery count and
write-ahead transaction rules above; split by step, those rules would be spread over files.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from occ_protocol.status import Status
from occ_storage.errors import ContentMismatchError, NodeError, UnknownFileError
from workers.chain import gateway
from workers.chain.payments import (
    BroadcastError,
    BroadcastResult,
    ChainUnavailableError,
    CheckStatus,
    NonceConflictError,
    PaymentState,
    PreparedTx,
    TokenPayments,
    TransferWouldRevertError,
)
from workers.remote.client import RemoteStorageClient
from workers.remote.guard import RemoteError
from workers.remote.staged import STAGED_URL_TTL_S, staged_file_url
from workers.runtime import Runtime
from workers.services import storage
from workers.services.paid.errors import QuoteRequestError
from workers.services.paid.quotes import (
    OCC_TYPE,
    QUOTE_KIND,
    find_option,
    payment_options,
    registry,
)
from workers.services.paid.staging import quote_dir, quotes_dir, remove_staging
from workers.settings import ConfigError, Settings
from workers.state import keys
from workers.state.locks import LockBusyError, renewed_lock

log = logging.getLogger("workers.paid")

MAX_ATTEMPTS = {"payment": 200, "store": 60, "refund": 200}
MAX_RETRIES = 8  # autoretries of a transient error before a chunk-store failure is refunded
PAYMENT_GRACE_S = 300  # an upload accepted just before expiry may still be charged this long after
QUOTE_LOCK_TTL_S = 5  # renewed while held: a killed store blocks its re-delivery this long
REMOTE_DEADLINE_S = STAGED_URL_TTL_S  # staged-file URLs stay valid until the deadline
REDRIVE_AFTER_S = 600
STAGING_ORPHAN_AGE_S = 3600

TRANSIENT: tuple[type[BaseException], ...] = (
    ChainUnavailableError,
    NonceConflictError,
    LockBusyError,
    NodeError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def payments_for(rt: Runtime, data: dict[str, Any]) -> TokenPayments:
    """The TokenPayments of a quote's chain and token (its RPC checked to serve that chain)."""
    option = find_option(payment_options(rt.settings), int(data["chainId"]), data["tokenAddress"])
    return gateway.payments_for(rt, option)


class PollLater(Exception):
    """The step waits for something outside; the task runs it again after ``extra`` seconds more."""

    def __init__(self, extra: float = 0.0) -> None:
        super().__init__(f"poll again (+{extra} s)")
        self.extra = extra


def _job(rt: Runtime, quote_id: str) -> dict[str, Any] | None:
    job = rt.jobs.get(quote_id)
    if job is None or job.get("kind") != QUOTE_KIND:
        log.warning("unknown quote", extra={"quote_id": quote_id})
        return None
    return job


def _fail_unpaid(rt: Runtime, quote_id: str, status: Status, reason: str) -> None:
    """A final failure before any payment: record it and drop the staged files."""
    if rt.jobs.advance(quote_id, status, reason):
        log.warning(
            "payment failed: %s", reason, extra={"quote_id": quote_id, "event": status.name}
        )
    remove_staging(quote_dir(rt.settings, quote_id))


def _fail_paid(rt: Runtime, quote_id: str, status: Status, reason: str) -> None:
    """A storing failure after payment: record it, move to REFUNDING and queue the refund."""
    rt.jobs.update_data(
        quote_id,
        failure={"status": int(status), "name": status.name, "reason": reason, "at": time.time()},
    )
    if rt.jobs.advance(quote_id, Status.REFUNDING, f"{status.name}: {reason}"):
        log.error("storing failed after payment: %s", reason, extra={"quote_id": quote_id})
    rt.enqueue("refund_payment", quote_id)


def _send(
    rt: Runtime,
    quote_id: str,
    pay: TokenPayments,
    field: str,
    prepare: Callable[[], PreparedTx],
    on_recorded: Callable[[], None],
) -> PreparedTx:
    """Return the quote's recorded transaction in ``field``, preparing and recording it first if none.

    Under the gateway nonce lock: re-read, prepare, compare-and-set the record, then broadcast.
    A recorded transaction is only ever re-broadcast; if its nonce was taken by another mined
    transaction (DROPPED, so it can never be mined) a new one replaces it by compare-and-set.
    """
    job = rt.jobs.get(quote_id) or {}
    record = job.get("data", {}).get(field)
    if record is None:
        with pay.nonce_guard():
            record = (rt.jobs.get(quote_id) or {}).get("data", {}).get(field)
            if record is None:
                _, record = rt.jobs.cas_data(quote_id, field, None, prepare().to_dict())
            on_recorded()
            prepared = PreparedTx.from_dict(record)
            result = pay.broadcast(prepared)
    else:
        prepared = PreparedTx.from_dict(record)
        result = pay.broadcast(prepared)
    if result is BroadcastResult.DROPPED:
        with pay.nonce_guard():
            fresh = prepare().to_dict()
            replaced, current = rt.jobs.cas_data(quote_id, field, record, fresh)
            if replaced:
                log.warning(
                    "tx %s dropped, replaced", prepared.tx_hash, extra={"quote_id": quote_id}
                )
            prepared = PreparedTx.from_dict(current)
            pay.broadcast(prepared)
    return prepared


# --- payment ----------------------------------------------------------------------------------


def charge(rt: Runtime, quote_id: str) -> None:
    """Charge the quote (allowance, balance, write-ahead transferFrom, confirmations), then queue storing."""
    job = _job(rt, quote_id)
    if job is None:
        return
    status = Status(job["status"])
    if status.final or status < Status.PAYMENT_QUEUED:
        return
    if status >= Status.STORE_QUEUED:
        if status < Status.DONE:
            rt.enqueue("store_paid", quote_id)  # paid already: make sure storing was queued
        return
    data = job["data"]
    record = data.get("payment_tx")
    if rt.jobs.count_attempt(quote_id, "payment") > MAX_ATTEMPTS["payment"]:
        if record is None:
            _fail_unpaid(
                rt, quote_id, Status.PAYMENT_REJECTED, "payment task delivered too many times"
            )
        else:
            rt.jobs.advance(
                quote_id,
                Status.PAYMENT_TIMEOUT,
                f"payment {record['tx_hash']} unresolved after many attempts: needs an operator",
            )
        return
    user, amount = data["userAddress"], int(data["tokenAmount"])

    if record is None:
        if time.time() > float(data["expiresAt"]) + PAYMENT_GRACE_S:
            _fail_unpaid(rt, quote_id, Status.QUOTE_EXPIRED, "quote expired before payment")
            return
        rt.jobs.advance(quote_id, Status.PAYMENT_CHECKING)
        missing = _staged_problem(rt, quote_id, data)
        if missing:
            _fail_unpaid(rt, quote_id, Status.STAGED_FILE_MISSING, missing)
            return
        if amount == 0:
            _mark_paid(rt, quote_id, None)
            return
        try:
            pay = payments_for(rt, data)
        except (ConfigError, QuoteRequestError) as exc:
            log.error("payments misconfigured: %s", exc, extra={"quote_id": quote_id})
            _fail_unpaid(
                rt, quote_id, Status.PAYMENT_REJECTED, "the gateway cannot take payments now"
            )
            return
        if _check_fails(rt, quote_id, pay, user, amount):
            return
    else:
        pay = payments_for(rt, data)

    try:
        prepared = _send(
            rt,
            quote_id,
            pay,
            "payment_tx",
            lambda: pay.prepare_payment(user, amount, tag=quote_id),
            lambda: _advance(rt, quote_id, Status.PAYMENT_SENT),
        )
    except TransferWouldRevertError:
        if _check_fails(rt, quote_id, pay, user, amount):  # changed since the check
            return
        raise PollLater(2.0) from None
    except BroadcastError:
        _fail_unpaid(
            rt, quote_id, Status.PAYMENT_REJECTED, "the node refused the gateway's transfer"
        )
        return

    verdict = pay.verify_payment(prepared.tx_hash, user, amount, tag=quote_id)
    if verdict.state is PaymentState.PAID:
        _mark_paid(rt, quote_id, prepared.tx_hash)
    elif verdict.state is PaymentState.REVERTED:
        _fail_unpaid(
            rt, quote_id, Status.TRANSFER_REVERTED, f"transfer {prepared.tx_hash} reverted"
        )
    elif verdict.state is PaymentState.WRONG_TRANSFER:
        _fail_unpaid(rt, quote_id, Status.PAYMENT_REJECTED, verdict.reason)
    else:
        if verdict.state is PaymentState.CONFIRMING:
            rt.jobs.advance(quote_id, Status.PAYMENT_CONFIRMING)
        raise PollLater()


def _advance(rt: Runtime, quote_id: str, status: Status) -> None:
    rt.jobs.advance(quote_id, status)


def _check_fails(rt: Runtime, quote_id: str, pay: TokenPayments, user: str, amount: int) -> bool:
    """Check allowance and balance; on a shortfall record the final status and return True."""
    check = pay.check(user, amount)
    if check.ok:
        return False
    bad = (
        Status.ALLOWANCE_TOO_LOW
        if check.status is CheckStatus.ALLOWANCE_TOO_LOW
        else Status.BALANCE_TOO_LOW
    )
    _fail_unpaid(rt, quote_id, bad, f"{bad.name.lower().replace('_', ' ')} for {amount}")
    return True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _staged_problem(rt: Runtime, quote_id: str, data: dict[str, Any]) -> str | None:
    """Why the staged files cannot be stored (checked before charging), or None."""
    files = (data.get("upload") or {}).get("files")
    if not files or len(files) != len(data.get("lengths", [])):
        return "no staged upload recorded"
    base = quote_dir(rt.settings, quote_id)
    for f in files:
        path = base / str(f["index"])
        if not path.is_file() or path.stat().st_size != int(f["length"]):
            return f"staged file {int(f['index']) + 1} is missing or truncated"
    return None


def _mark_paid(rt: Runtime, quote_id: str, tx_hash: str | None) -> None:
    if tx_hash is not None:
        key = keys.paid_tx(tx_hash)
        rt.redis.set(key, quote_id, nx=True)
        owner = rt.redis.get(key)
        if owner is None or _text(owner) != quote_id:
            _fail_unpaid(
                rt, quote_id, Status.PAYMENT_REJECTED, "transaction already paid another quote"
            )
            return
    rt.jobs.update_data(quote_id, paid={"tx_hash": tx_hash, "at": time.time()})
    rt.jobs.advance(quote_id, Status.STORE_QUEUED)
    log.info("payment confirmed", extra={"quote_id": quote_id, "event": tx_hash})
    rt.enqueue("store_paid", quote_id)


# --- storing ----------------------------------------------------------------------------------


def store(rt: Runtime, quote_id: str, attempt: int) -> None:
    """Store a paid quote's staged files (occ: the chunk store; others: their microservice)."""
    job = _job(rt, quote_id)
    if job is None:
        return
    status = Status(job["status"])
    if status.final or status < Status.STORE_QUEUED:
        return
    if status == Status.REFUNDING:
        rt.enqueue("refund_payment", quote_id)
        return
    # polling a microservice is bounded by REMOTE_DEADLINE_S; a crash loop by the delivery count
    polling = status == Status.REMOTE_PENDING and job["data"].get("remote_uploaded")
    if not polling and rt.jobs.count_attempt(quote_id, "store") > MAX_ATTEMPTS["store"]:
        _fail_paid(rt, quote_id, Status.STORE_INTERNAL_ERROR, "store task delivered too many times")
        return
    try:
        with renewed_lock(rt.redis, keys.quote_lock(quote_id), 0, QUOTE_LOCK_TTL_S):
            _store_or_refund(rt, quote_id, job["data"], attempt)
    except LockBusyError:
        # another delivery is storing it, or died doing so and its lock lapses within the TTL
        raise PollLater(2.0) from None


def _store_or_refund(rt: Runtime, quote_id: str, data: dict[str, Any], attempt: int) -> None:
    try:
        if data.get("type") == OCC_TYPE:
            _store_occ(rt, quote_id, data)
        else:
            _store_remote(rt, quote_id, data)
    except PollLater:
        raise
    except TRANSIENT as exc:
        # a remote upload may still complete: never refund it on a blip (the sweeper re-drives)
        if data.get("type") != OCC_TYPE or attempt < MAX_RETRIES:
            raise  # autoretry with backoff and jitter
        _fail_paid(
            rt, quote_id, Status.STORE_INTERNAL_ERROR, f"storage unavailable ({type(exc).__name__})"
        )
    except Exception as exc:  # a bug or a disk error: the user paid, so refund rather than loop
        log.exception("storing failed", extra={"quote_id": quote_id})
        _fail_paid(
            rt, quote_id, Status.STORE_INTERNAL_ERROR, f"internal error ({type(exc).__name__})"
        )


def _merged_expiry(rt: Runtime, file_hash: str, paid_until: float) -> float | None:
    """Expiry for a paid file: content stored before without expiry keeps none; else the later one."""
    try:
        manifest = rt.store.manifest(file_hash)
    except UnknownFileError:
        return paid_until
    if manifest.expires_at is None:
        return None
    return max(float(manifest.expires_at), paid_until)


def _store_occ(rt: Runtime, quote_id: str, data: dict[str, Any]) -> None:
    rt.jobs.advance(quote_id, Status.STORING)
    files = (data.get("upload") or {}).get("files") or []
    if not files or len(files) != len(data.get("lengths", [])):
        _fail_paid(rt, quote_id, Status.STAGED_FILE_MISSING, "no staged upload recorded")
        return
    stored: list[dict[str, Any]] = list(data.get("stored", []))
    paid_until = time.time() + int(data["duration"])
    base = quote_dir(rt.settings, quote_id)
    for f in files[len(stored) :]:
        n = int(f["index"]) + 1
        path, sha, size = base / str(f["index"]), str(f["sha256"]), int(f["length"])
        try:
            if path.stat().st_size != size:
                _fail_paid(
                    rt, quote_id, Status.STAGED_FILE_MISSING, f"staged file {n} is truncated"
                )
                return
            expires_at = _merged_expiry(rt, sha, paid_until)
            # hashed once on the way in (staging); the store's own hash verifies it once more
            with open(path, "rb") as stream:
                storage.store_upload(
                    rt,
                    stream,
                    f["name"],
                    rt.settings.replication_factor,
                    expires_at=expires_at,
                    expected_hash=sha,
                )
        except FileNotFoundError:
            _fail_paid(rt, quote_id, Status.STAGED_FILE_MISSING, f"staged file {n} is missing")
            return
        except ContentMismatchError:
            _fail_paid(rt, quote_id, Status.STAGED_FILE_MISSING, f"staged file {n} is corrupt")
            return
        stored.append(
            {"file_hash": sha, "length": size, "expires_at": paid_until, "name": f["name"]}
        )
        rt.jobs.update_data(quote_id, stored=stored)
        if expires_at is not None:
            rt.redis.zadd(keys.PAID_EXPIRY, {sha: expires_at}, gt=True)
    rt.jobs.advance(quote_id, Status.DONE)
    remove_staging(base)
    log.info("paid upload stored", extra={"quote_id": quote_id})


def private_base_url(settings: Settings) -> str:
    """The private API as microservices reach it (PRIVATE_BASE_URL, else 127.0.0.1:PRIVATE_PORT)."""
    return settings.private_base_url or f"http://127.0.0.1:{settings.private_port}"


def _store_remote(rt: Runtime, quote_id: str, data: dict[str, Any]) -> None:
    record = registry(rt).get(str(data["type"]))
    if record is None:
        _fail_paid(
            rt, quote_id, Status.BACKEND_FAILED, f"storage {data['type']!r} is not registered"
        )
        return
    rt.jobs.advance(quote_id, Status.REMOTE_PENDING)
    upload = data.get("upload") or {}
    started = float(data.get("remote_uploaded") or time.time())
    if time.time() - started > REMOTE_DEADLINE_S:
        _fail_paid(rt, quote_id, Status.BACKEND_FAILED, "storage did not finish in time")
        return
    try:
        with RemoteStorageClient.for_settings(record["url"], rt.settings) as client:
            if not data.get("remote_uploaded"):
                problem = _staged_problem(rt, quote_id, data)
                if problem:
                    _fail_paid(rt, quote_id, Status.STAGED_FILE_MISSING, problem)
                    return
                # a re-delivery asks first: the service may have received the upload already
                if client.get_status(quote_id) < Status.PAYMENT_QUEUED:
                    base = private_base_url(rt.settings)
                    files = [
                        {
                            "url": staged_file_url(base, quote_id, int(f["index"]), rt.sketch_key),
                            "length": int(f["length"]),
                            "sha256": f["sha256"],
                            "content_type": "application/octet-stream",
                        }
                        for f in upload["files"]
                    ]
                    client.upload(quote_id, upload["nonce"], upload["signature"], files)
                rt.jobs.update_data(quote_id, remote_uploaded=time.time())
            status = client.get_status(quote_id)
            if status == Status.DONE:
                links = client.get_link(quote_id)
                rt.jobs.update_data(quote_id, links=links)
                rt.jobs.advance(quote_id, Status.DONE)
                remove_staging(quote_dir(rt.settings, quote_id))
                return
    except RemoteError as exc:
        if exc.status_code is not None and 400 <= exc.status_code < 500:
            _fail_paid(rt, quote_id, Status.BACKEND_FAILED, f"storage refused the upload: {exc}")
            return
        log.warning("storage unreachable: %s", exc, extra={"quote_id": quote_id})
        raise PollLater(2.0) from None
    if 200 <= status < 300 or 401 <= status <= 499:
        _fail_paid(rt, quote_id, Status.BACKEND_FAILED, f"storage reported status {status}")
        return
    raise PollLater()


# --- refunds ----------------------------------------------------------------------------------


def refund(rt: Runtime, quote_id: str) -> None:
    """Return the payment of a quote whose storing failed (write-ahead transferFrom treasury -> user)."""
    job = _job(rt, quote_id)
    if job is None or job["status"] != Status.REFUNDING:
        return
    data = job["data"]
    if rt.jobs.count_attempt(quote_id, "refund") > MAX_ATTEMPTS["refund"]:
        rt.jobs.advance(
            quote_id, Status.REFUND_FAILED, "refund unresolved after many attempts: operator needed"
        )
        return
    user, amount = data["userAddress"], int(data["tokenAmount"])
    if amount == 0 or not (data.get("paid") or {}).get("tx_hash"):
        rt.jobs.advance(quote_id, Status.REFUNDED, "nothing was charged")
        remove_staging(quote_dir(rt.settings, quote_id))
        return
    pay = payments_for(rt, data)
    tag = f"refund:{quote_id}"
    try:
        prepared = _send(
            rt,
            quote_id,
            pay,
            "refund_tx",
            lambda: pay.prepare_refund(user, amount, tag=tag),
            lambda: None,
        )
    except (TransferWouldRevertError, BroadcastError):
        rt.jobs.advance(
            quote_id, Status.REFUND_FAILED, "the refund cannot be sent: operator needed"
        )
        return
    verdict = pay.verify_refund(prepared.tx_hash, user, amount, tag=tag)
    if verdict.state is PaymentState.PAID:
        rt.jobs.update_data(quote_id, refunded={"tx_hash": prepared.tx_hash, "at": time.time()})
        failure = data.get("failure") or {}
        cause = (
            f"{failure.get('name', 'failure')}: {failure.get('reason', '')}; " if failure else ""
        )
        rt.jobs.advance(quote_id, Status.REFUNDED, f"{cause}refunded in {prepared.tx_hash}")
        remove_staging(quote_dir(rt.settings, quote_id))
        log.info("payment refunded", extra={"quote_id": quote_id, "event": prepared.tx_hash})
    elif verdict.state in (PaymentState.REVERTED, PaymentState.WRONG_TRANSFER):
        rt.jobs.advance(
            quote_id, Status.REFUND_FAILED, f"refund {prepared.tx_hash}: {verdict.reason}"
        )
    else:
        raise PollLater()


# --- sweeping and expiry -----------------------------------------------------------------------


def redrive_paid_jobs(rt: Runtime, older_than: float = REDRIVE_AFTER_S) -> int:
    """Re-enqueue paid jobs stuck in a non-final status >= 100 for ``older_than`` s; returns how many.

    A job is re-driven at most once per ``older_than`` (a Redis marker), and duplicates are
    harmless: every task re-reads the job and repeats no side effect.
    """
    count = 0
    for job in rt.jobs.stuck(QUOTE_KIND, older_than=older_than):
        status = int(job["status"])
        if 100 <= status < 200:
            task = "process_payment"
        elif 300 <= status < 400:
            task = "store_paid"
        elif status == Status.REFUNDING:
            task = "refund_payment"
        else:
            continue
        if not rt.redis.set(
            keys.paid_redriven(job["id"]), "1", nx=True, ex=max(1, int(older_than))
        ):
            continue
        rt.enqueue(task, job["id"])
        count += 1
    return count


def _clean_staging(rt: Runtime, now: float) -> int:
    """Remove abandoned attempt directories and staged files of quotes that are final or gone."""
    root = quotes_dir(rt.settings)
    if not root.is_dir():
        return 0
    removed = 0
    for path in root.iterdir():
        try:
            if now - path.stat().st_mtime < STAGING_ORPHAN_AGE_S:
                continue
        except OSError:
            continue
        if not path.name.startswith(".attempt-"):
            job = rt.jobs.get(path.name)
            if job is not None and not Status(job["status"]).final:
                continue
        remove_staging(path)
        removed += 1
    return removed


def expire_files(rt: Runtime, now: float | None = None) -> int:
    """Delete paid files whose paid duration plus PAID_GRACE_PERIOD ran out by ``now``; returns how many.

    Content stored again since without an expiry (a direct upload), or paid for longer by
    another quote, is kept. Also removes staging left behind by abandoned or final quotes.
    """
    now = time.time() if now is None else now
    grace = rt.settings.paid_grace_period
    removed = 0
    for raw in rt.redis.zrangebyscore(keys.PAID_EXPIRY, "-inf", now - grace, start=0, num=1000):
        file_hash = _text(raw)
        try:
            manifest = rt.store.manifest(file_hash)
        except UnknownFileError:
            rt.redis.zrem(keys.PAID_EXPIRY, file_hash)
            continue
        if manifest.expires_at is None:
            rt.redis.zrem(keys.PAID_EXPIRY, file_hash)
            continue
        if float(manifest.expires_at) + grace > now:
            rt.redis.zadd(keys.PAID_EXPIRY, {file_hash: float(manifest.expires_at)})
            continue
        with contextlib.suppress(UnknownFileError):
            storage.delete_file(rt, file_hash)
        rt.redis.zrem(keys.PAID_EXPIRY, file_hash)
        removed += 1
        log.info("paid file expired", extra={"file_hash": file_hash, "task": "expire_paid_files"})
    _clean_staging(rt, now)
    return removed

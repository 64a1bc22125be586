"""The paid upload (POST /upload with quoteId, nonce, signature), its links (getLink) and history."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from occ_protocol.status import Status
from workers.services.paid.errors import (
    FileMismatchError,
    NotReadyError,
    QuoteExpiredError,
    QuoteUsedError,
    StorageUnavailableError,
)
from workers.services.paid.ledger import Ledger, check_signature, claim_nonce
from workers.services.paid.quotes import OCC_TYPE, load_quote, registry
from workers.services.paid.staging import commit_staging, quote_dir, remove_staging, stage_files

if TYPE_CHECKING:
    from workers.runtime import Runtime

log = logging.getLogger("workers.paid")

MAX_HISTORY_SCAN = 10_000


def accept_upload(
    rt: Runtime,
    quote_id: str,
    nonce: str,
    signature: str,
    get_parts: Callable[[], Sequence[tuple[str | None, IO[bytes]]]],
    now: float | None = None,
) -> dict[str, Any]:
    """Accept the one upload of a quote: check, claim the nonce, stage durably, queue the payment.

    Order (protocol.md §2, §3): quote exists, not expired, signature by its owner, not used
    yet, then the nonce (atomic), then the parts (``get_parts`` parses the body only now) are
    staged with fsync, then the forward-only CAS QUOTED -> PAYMENT_QUEUED decides between
    concurrent uploads (the loser's staged files are removed), the consumption is written to
    the ledger and the payment task is queued. Returns {"message", "quoteId"}.
    """
    settings = rt.settings
    job = load_quote(rt, quote_id)
    qid = job["id"]
    data = job["data"]
    if (time.time() if now is None else now) > float(data["expiresAt"]):
        raise QuoteExpiredError("Quote expired")
    check_signature(quote_id, nonce, signature, data["userAddress"])
    ledger = Ledger.for_settings(settings)
    if job["status"] != Status.QUOTED or ledger.consumed(qid):
        raise QuoteUsedError("This quote already received its upload")
    if data["type"] != OCC_TYPE and registry(rt).get(data["type"]) is None:
        raise StorageUnavailableError(f"Storage {data['type']!r} is not available now")
    claim_nonce(rt, data["userAddress"], nonce)

    parts = get_parts()
    lengths = [int(n) for n in data["lengths"]]
    if len(parts) != len(lengths):
        raise FileMismatchError(f"expected {len(lengths)} file part(s) as quoted, got {len(parts)}")
    attempt, staged = stage_files(settings, qid, parts, lengths)
    try:
        if not rt.jobs.advance(qid, Status.PAYMENT_QUEUED):
            raise QuoteUsedError("This quote already received its upload")
    except BaseException:
        remove_staging(attempt)
        raise
    ledger.record_consumed(qid, nonce)
    commit_staging(attempt, quote_dir(settings, qid))
    rt.jobs.update_data(
        qid,
        upload={
            "nonce": nonce,
            "signature": signature,
            "files": [f.to_dict() for f in staged],
            "uploadedAt": time.time(),
        },
    )
    rt.enqueue("process_payment", qid)
    log.info("paid upload accepted", extra={"quote_id": qid})
    return {"message": "Files received: payment is being processed", "quoteId": qid}


def build_links(data: Mapping[str, Any], public_base: str) -> list[dict[str, Any]]:
    """Return the DDO ``files`` objects of a stored quote (protocol.md §7), in upload order."""
    if data.get("type") != OCC_TYPE:
        return [dict(link) for link in data.get("links", [])]
    base = public_base.rstrip("/")
    links = []
    for f in data.get("stored", []):
        link: dict[str, Any] = {
            "type": "url",
            "url": f"{base}/download/{f['file_hash']}",
            "method": "GET",
            "fileHash": f["file_hash"],
            "length": int(f["length"]),
        }
        if f.get("expires_at") is not None:
            link["expiresAt"] = int(f["expires_at"])
        links.append(link)
    return links


def get_links(
    rt: Runtime, quote_id: str, nonce: str, signature: str, public_base: str
) -> list[dict[str, Any]]:
    """Return the links of a stored quote for its owner, with a fresh nonce (protocol.md §7)."""
    job = load_quote(rt, quote_id)
    data = job["data"]
    check_signature(quote_id, nonce, signature, data["userAddress"])
    if job["status"] != Status.DONE:
        raise NotReadyError(job["status"])
    claim_nonce(rt, data["userAddress"], nonce)
    return build_links(data, public_base)


def history_entry(job: Mapping[str, Any]) -> dict[str, Any]:
    data = job["data"]
    return {
        "quoteId": job["id"],
        "type": data.get("type"),
        "status": int(job["status"]),
        "tokenAmount": str(data.get("tokenAmount", "0")),
        "chainId": data.get("chainId"),
        "tokenAddress": data.get("tokenAddress"),
        "createdAt": int(job["created_at"]),
        "expiresAt": data.get("expiresAt"),
        "files": [{"length": int(n)} for n in data.get("lengths", [])],
    }


def get_history(
    rt: Runtime,
    user_address: str,
    nonce: str,
    signature: str,
    page: int,
    page_size: int,
    storage: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Return (total, one page of the user's quotes, newest first), for a fresh signed nonce.

    The signed text uses an empty quoteId (protocol.md §1). ``storage`` filters by type.
    """
    check_signature("", nonce, signature, user_address, "userAddress")
    claim_nonce(rt, user_address, nonce)
    offset = (page - 1) * page_size
    if storage is None:
        total, jobs = rt.jobs.history(user_address, offset, page_size)
        return total, [history_entry(j) for j in jobs]
    _, every = rt.jobs.history(user_address, 0, MAX_HISTORY_SCAN)
    matching = [history_entry(j) for j in every if j["data"].get("type") == storage]
    return len(matching), matching[offset : offset + page_size]

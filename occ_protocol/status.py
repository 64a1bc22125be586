"""Job status codes of protocol.md §4, shared by the gateway and its client."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """Job status codes of protocol.md §4; every transition goes to a larger number."""

    NO_SUCH_QUOTE = 0
    QUOTED = 1
    PAYMENT_QUEUED = 100
    PAYMENT_CHECKING = 101
    PAYMENT_SENT = 102
    PAYMENT_CONFIRMING = 103
    ALLOWANCE_TOO_LOW = 200
    BALANCE_TOO_LOW = 201
    TRANSFER_REVERTED = 202
    PAYMENT_TIMEOUT = 203
    QUOTE_EXPIRED = 204
    PAYMENT_REJECTED = 205  # delivered past its limit / invalid payment record
    STORE_QUEUED = 300
    STORING = 301
    REMOTE_PENDING = 302
    REPLICATING = 303  # quorum written, remaining copies in progress
    DONE = 400
    STORE_INTERNAL_ERROR = 401
    FILE_MISMATCH = 402
    STAGED_FILE_MISSING = 403
    BACKEND_FAILED = 404
    REFUNDING = 410
    REFUNDED = 411
    REFUND_FAILED = 412

    @property
    def final(self) -> bool:
        return (
            self == Status.DONE
            or 200 <= self < 300
            or self
            in {
                Status.STORE_INTERNAL_ERROR,
                Status.FILE_MISMATCH,
                Status.STAGED_FILE_MISSING,
                Status.BACKEND_FAILED,
                Status.REFUNDED,
                Status.REFUND_FAILED,
            }
        )


STATUS_TABLE_MARKDOWN = "\n".join(
    ["| code | name |", "|---|---|"] + [f"| {s.value} | {s.name} |" for s in Status]
)


def status_name(code: int) -> str:
    """Return the name of a status code; a code without a name gets its range's meaning."""
    try:
        return Status(code).name
    except ValueError:
        pass
    if 1 <= code < 100:
        return "WAITING_FOR_FILES"
    if 100 <= code < 200:
        return "PROCESSING_PAYMENT"
    if 200 <= code < 300:
        return "PAYMENT_FAILED"
    if 300 <= code < 400:
        return "STORING"
    if 400 < code < 500:
        return "STORAGE_FAILED"
    return "UNKNOWN"


def is_final(code: int) -> bool:
    """Return True for DONE (400), a payment failure (2xx) or a storage failure (4xx but
    REFUNDING); also for codes without a name, by their range."""
    return (
        code == Status.DONE or 200 <= code < 300 or (400 < code < 500 and code != Status.REFUNDING)
    )

"""Errors of the paid flow: each ``str(err)`` is safe to show a client (api/errors.py maps them to HTTP)."""

from __future__ import annotations


class PaidError(Exception):
    """A paid-upload request was refused; ``str(err)`` is safe to show a client."""


class QuoteRequestError(PaidError):
    """A getQuote body is invalid; ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class UnknownQuoteError(PaidError):
    """No such quote."""


class QuoteExpiredError(PaidError):
    """The quote's time to upload has run out."""


class MalformedSignatureError(PaidError):
    """The nonce or signature is not well-formed (hex, 65 bytes, v, low s)."""


class WrongSignerError(PaidError):
    """A well-formed signature by someone other than the quote's owner."""


class QuoteUsedError(PaidError):
    """The quote already received its upload (one upload per quote, ever)."""


class NonceUsedError(PaidError):
    """The nonce is not greater than the last one accepted for this address."""


class FileMismatchError(PaidError):
    """The uploaded files do not match the quote (count, or larger than quoted)."""


class NotReadyError(PaidError):
    """The quote's files are not stored yet (links exist only at status 400)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"Files are not stored yet (status {status})")
        self.status = status


class StorageUnavailableError(PaidError):
    """The storage type's microservice is not registered now, or failed to answer."""

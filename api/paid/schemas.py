"""Marshmallow schemas of the paid-upload protocol (protocol.md §1): requests, answers, query strings."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import validate

from api.validation import RequestSchema, format_field
from occ_protocol.formats import ADDRESS_RE, NONCE_RE, QUOTE_ID_RE
from workers.services.paid import MAX_FILES

MAX_CHAIN_ID = 2**63 - 1
ADDRESS_ERROR = "must be 0x followed by 40 hex characters"
NONCE_ERROR = "must be 1 to 13 decimal digits"
QUOTE_ID_ERROR = "must be 32 hexadecimal characters"
SIGNATURE_DOC = (
    'EIP-191 `personal_sign` by the owner of the text `"0x" + sha256_hex(quoteId + nonce)` '
    "(protocol.md §2): 0x-hex, 65 bytes (r, s, v), low s"
)


def quote_id_field(**kwargs: Any) -> ma.fields.String:
    return format_field(QUOTE_ID_RE, QUOTE_ID_ERROR, **kwargs)


def nonce_field(**kwargs: Any) -> ma.fields.String:
    kwargs.setdefault(
        "metadata", {"description": "Greater than the last nonce this wallet used (unix seconds)"}
    )
    return format_field(NONCE_RE, NONCE_ERROR, **kwargs)


def signature_field(description: str = SIGNATURE_DOC, **kwargs: Any) -> ma.fields.String:
    return ma.fields.String(
        validate=validate.Length(min=1, max=200), metadata={"description": description}, **kwargs
    )


class StrictInteger(ma.fields.Integer):
    """A JSON integer (no strings, floats or booleans)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ma.ValidationError("must be an integer")
        return int(super()._deserialize(value, attr, data, **kwargs))


class ChainId(ma.fields.Integer):
    """A chain id given as a JSON number or a numeric string (Ocean's client sends both)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_CHAIN_ID:
            raise ma.ValidationError("must be a positive integer (number or numeric string)")
        return value


class QuoteFileSchema(RequestSchema):
    length = StrictInteger(
        required=True,
        validate=validate.Range(min=1, error="must be a positive integer"),
        metadata={"description": "File size in bytes"},
    )


class QuotePaymentSchema(RequestSchema):
    chainId = ChainId(required=True)
    tokenAddress = format_field(ADDRESS_RE, ADDRESS_ERROR, required=True)


class QuoteRequestSchema(RequestSchema):
    """POST /getQuote body."""

    error_prefix = "Invalid quote request"

    type = ma.fields.String(
        required=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "`occ` (built in) or a registered storage type"},
    )
    files = ma.fields.List(
        ma.fields.Nested(QuoteFileSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_FILES, error=f"must list 1 to {MAX_FILES} files"),
    )
    duration = StrictInteger(
        required=True,
        validate=validate.Range(min=0, error="must be a number of seconds >= 0"),
        metadata={"description": "Seconds to store for (> 0 for occ, at most MAX_DURATION)"},
    )
    payment = ma.fields.Nested(QuotePaymentSchema, required=True)
    userAddress = format_field(ADDRESS_RE, ADDRESS_ERROR, required=True)


class QuoteSchema(ma.Schema):
    quoteId = ma.fields.String()
    tokenAmount = ma.fields.String(
        metadata={"description": "Decimal string, in the token's smallest unit"}
    )
    approveAddress = ma.fields.String()
    chainId = ma.fields.Integer()
    tokenAddress = ma.fields.String()
    expiresAt = ma.fields.Integer(metadata={"description": "Unix seconds; upload before this"})


class TokenSchema(ma.Schema):
    title = ma.fields.String(metadata={"description": "Token symbol"})
    value = ma.fields.String(metadata={"description": "Token contract address"})


class PaymentMethodSchema(ma.Schema):
    chainId = ma.fields.Integer()
    acceptedTokens = ma.fields.List(ma.fields.Nested(TokenSchema))


class StorageSchema(ma.Schema):
    type = ma.fields.String()
    description = ma.fields.String()
    payment = ma.fields.List(ma.fields.Nested(PaymentMethodSchema))


class QuoteIdQuerySchema(RequestSchema):
    error_prefix = "Invalid status request"

    quoteId = quote_id_field(required=True)


class SignedQuerySchema(QuoteIdQuerySchema):
    """quoteId, nonce and the owner's EIP-191 signature of "0x" + sha256(quoteId + nonce)."""

    error_prefix = "Invalid signed request"

    nonce = nonce_field(required=True)
    signature = signature_field(required=True)


class HistoryQuerySchema(RequestSchema):
    error_prefix = "Invalid history request"

    userAddress = format_field(ADDRESS_RE, ADDRESS_ERROR, required=True)
    nonce = nonce_field(required=True)
    signature = signature_field('Signature of "0x" + sha256("" + nonce)', required=True)
    page = ma.fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    pageSize = ma.fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    storage = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=64))


class StatusSchema(ma.Schema):
    status = ma.fields.Integer(
        metadata={"description": "Status code (table in the API description)"}
    )


class UploadAcceptedSchema(ma.Schema):
    message = ma.fields.String()
    quoteId = ma.fields.String()


class LinkSchema(ma.Schema):
    """A DDO `files` object: occ `url` objects, or what the storage returned (CID, transactionHash...)."""

    class Meta:
        unknown = ma.INCLUDE

    type = ma.fields.String()
    url = ma.fields.String()
    method = ma.fields.String()
    fileHash = ma.fields.String()
    length = ma.fields.Integer()
    expiresAt = ma.fields.Integer(metadata={"description": "Unix seconds the file is paid until"})


class HistoryFileSchema(ma.Schema):
    length = ma.fields.Integer()


class HistoryEntrySchema(ma.Schema):
    quoteId = ma.fields.String()
    type = ma.fields.String()
    status = ma.fields.Integer()
    tokenAmount = ma.fields.String()
    chainId = ma.fields.Integer()
    tokenAddress = ma.fields.String()
    createdAt = ma.fields.Integer()
    expiresAt = ma.fields.Integer()
    files = ma.fields.List(ma.fields.Nested(HistoryFileSchema))

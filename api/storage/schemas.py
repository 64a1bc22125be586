"""Marshmallow schemas of the storage resource (the seed's fields, plus pagination and jobs)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import validate

from api.paid.schemas import SIGNATURE_DOC, nonce_field, quote_id_field, signature_field
from api.validation import RequestSchema


class UploadFormSchema(RequestSchema):
    error_prefix = "Invalid upload"

    replication_factor = ma.fields.Integer(
        load_default=None,
        allow_none=True,
        # checked against NUM_NODES in the view (a 400 naming the range); documented here
        metadata={
            "description": "Copies to keep (1..NUM_NODES); default REPLICATION_FACTOR",
            "minimum": 1,
        },
    )


class UploadFileSchema(ma.Schema):
    file = ma.fields.Raw(required=True, metadata={"type": "string", "format": "binary"})


class RawUploadQuerySchema(RequestSchema):
    error_prefix = "Invalid upload"

    # the name travels in the request line (8190 bytes at most in gunicorn and nginx): keep it short
    name = ma.fields.String(load_default="", validate=validate.Length(max=255))
    replication_factor = ma.fields.Integer(
        load_default=None, allow_none=True, metadata={"minimum": 1}
    )


class UploadQuerySchema(RequestSchema):
    """POST /upload's query: empty for a direct upload; quoteId, nonce and signature for a paid
    upload (protocol.md §1, parts file1..fileN)."""

    error_prefix = "Invalid upload request"

    quoteId = quote_id_field(
        load_default=None,
        metadata={"description": "Paid upload: the quote (with nonce and signature)"},
    )
    nonce = nonce_field(
        load_default=None,
        metadata={"description": "Paid upload: greater than the wallet's last nonce (seconds)"},
    )
    signature = signature_field(f"Paid upload: {SIGNATURE_DOC}", load_default=None)

    @ma.validates_schema
    def _paid_needs_all(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("quoteId") is not None:
            for name in ("nonce", "signature"):
                if data.get(name) is None:
                    raise ma.ValidationError("required for a paid upload (with quoteId)", name)


class UploadResultSchema(ma.Schema):
    success = ma.fields.Boolean()
    file_hash = ma.fields.String()
    file_name = ma.fields.String()
    file_size = ma.fields.Integer()
    chunks = ma.fields.Integer()
    replication_factor = ma.fields.Integer()
    durable_copies = ma.fields.Integer(
        metadata={"description": "Copies of every chunk already durable (the write quorum)"}
    )
    distribution = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.List(ma.fields.String())
    )
    job_id = ma.fields.String(allow_none=True)


class FilesQuerySchema(RequestSchema):
    error_prefix = "Invalid page"

    page = ma.fields.Integer(load_default=1, validate=validate.Range(min=1, max=10**6))
    per_page = ma.fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class FileSummarySchema(ma.Schema):
    file_hash = ma.fields.String()
    file_name = ma.fields.String()
    file_size = ma.fields.Integer()
    chunks = ma.fields.Integer()
    replication_factor = ma.fields.Integer()
    retrievable = ma.fields.Boolean()
    min_replication = ma.fields.Integer()
    avg_replication = ma.fields.Float()
    created_at = ma.fields.Float()
    expires_at = ma.fields.Float(allow_none=True)


class FilesSchema(ma.Schema):
    total_files = ma.fields.Integer()
    page = ma.fields.Integer()
    per_page = ma.fields.Integer()
    files = ma.fields.List(ma.fields.Nested(FileSummarySchema))


class RebalanceSchema(ma.Schema):
    error_prefix = "Invalid rebalance request"

    replication_factor = ma.fields.Integer(
        required=True,
        strict=True,
        metadata={"description": "Copies to keep (1..NUM_NODES)", "minimum": 1},
    )


class JobAcceptedSchema(ma.Schema):
    success = ma.fields.Boolean()
    file_hash = ma.fields.String()
    replication_factor = ma.fields.Integer()
    job_id = ma.fields.String()
    status = ma.fields.Integer()
    status_url = ma.fields.String()


class VerifySchema(ma.Schema):
    file_hash = ma.fields.String()
    file_name = ma.fields.String()
    file_size = ma.fields.Integer()
    replication_factor = ma.fields.Integer()
    retrievable = ma.fields.Boolean()
    missing_chunks = ma.fields.List(ma.fields.String())
    replication = ma.fields.Dict()
    bad_replicas = ma.fields.List(ma.fields.List(ma.fields.String()))
    manifest_copies = ma.fields.Integer()
    chunks = ma.fields.List(ma.fields.Dict())

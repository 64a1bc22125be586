"""Schemas of the private API: the registration record (protocol.md §6), staged-file query."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from marshmallow import validate

from api.validation import RequestSchema, format_field
from workers.state.registry import InvalidRecordError, normalize_payment, validate_type

TOKEN_RE = re.compile(r"[0-9a-fA-F]{64}")  # HMAC-SHA256 hex (workers.remote.staged_token)


class PaymentField(ma.fields.Field):  # type: ignore[type-arg]
    """payment / paymentMethods: [{chainId, acceptedTokens}], normalised by workers.registry."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        try:
            return normalize_payment(value, attr or "payment")
        except InvalidRecordError as exc:
            where = exc.field.removeprefix(attr or "payment").lstrip(".")
            raise ma.ValidationError(f"{where}: {exc.reason}" if where else exc.reason) from None


class StorageTypeField(ma.fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        try:
            return validate_type(value)
        except InvalidRecordError as exc:
            raise ma.ValidationError(exc.reason) from None


class StrictInteger(ma.fields.Integer):
    """An integer JSON number (no strings, floats or booleans)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ma.ValidationError("must be an integer number of seconds")
        return int(super()._deserialize(value, attr, data, **kwargs))


class RegisterSchema(RequestSchema):
    """A registration record; unknown fields are ignored here but still covered by the signature."""

    error_prefix = "Malformed registration"

    type = StorageTypeField(required=True)
    description = ma.fields.String(required=True, validate=validate.Length(max=1024))
    url = ma.fields.String(
        required=True,
        validate=[
            validate.Length(max=2048),
            validate.URL(
                schemes={"http", "https"}, require_tld=False, error="must be an http(s) URL"
            ),
        ],
    )
    payment = PaymentField(load_default=None, metadata={"type": "array", "items": {}})
    paymentMethods = PaymentField(  # the wire name
        load_default=None, metadata={"type": "array", "items": {}}
    )
    timestamp = StrictInteger(required=True, metadata={"description": "Unix seconds"})
    signature = ma.fields.String(
        load_default=None,
        metadata={"description": "EIP-191 signature of the canonical JSON of the other fields"},
    )

    @ma.validates_schema
    def _one_payment(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("payment") is None and data.get("paymentMethods") is None:
            raise ma.ValidationError("payment (or paymentMethods) is required", "payment")
        if data.get("payment") is not None and data.get("paymentMethods") is not None:
            raise ma.ValidationError("give payment or paymentMethods, not both", "payment")


class RegisteredSchema(ma.Schema):
    message = ma.fields.String()
    storage = ma.fields.Dict()
    ttl = ma.fields.Integer()


class StagedQuerySchema(RequestSchema):
    """The signed URL's query (workers.remote.staged_file_url): any flaw is a 403."""

    error_prefix = "Invalid or expired token for this staged file"

    expires = ma.fields.Integer(
        required=True, strict=False, validate=validate.Range(min=0, max=10**12)
    )
    token = format_field(TOKEN_RE, "must be 64 hexadecimal characters", required=True)


class HealthSchema(ma.Schema):
    status = ma.fields.String()

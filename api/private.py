"""The private API (own port, default 5001, never routed by nginx): registration and staged files.

gunicorn target: ``api.private:create_private_app()``.

- ``POST /register`` (protocol.md §6): a signed record {type, description, url,
  payment | paymentMethods, timestamp, signature} -> 201 created, 200 refreshed; 400 malformed
  (the message names the field), 401 unsigned / bad signature / stale timestamp, 403 signer not
  on REGISTRY_ALLOWLIST, 409 replayed registration.
- ``GET /staged/<quote_id>/<index>?expires=<unix>&token=<hmac>``: a staged file of a paid
  upload, for the microservice that stores it (URLs built by workers.remote.staged_file_url);
  403 bad or expired token.
- ``GET /health``: liveness of the private API and its Redis.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

import marshmallow as ma
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import validate
from werkzeug.wsgi import wrap_file

from api.errors import ApiError, register_error_handlers
from occ_protocol.signatures import (
    SignatureError,
    canonical_json,
    normalize_address,
    recover_signer,
    same_address,
    verify_record,
)
from workers.logs import configure_logging
from workers.registry import (
    InvalidRecordError,
    Registry,
    RegistryReplayError,
    normalize_payment,
    validate_type,
)
from workers.remote import RemoteAddressError, check_staged_token, check_url
from workers.runtime import Runtime, get_runtime, set_runtime
from workers.settings import Settings

log = logging.getLogger("api.private")

MAX_BODY_BYTES = 64 * 1024
STAGED_QUOTE_ID_RE = re.compile(r"[0-9a-fA-F]{32}")
TOKEN_RE = re.compile(r"[0-9a-fA-F]{64}")
EXPIRES_RE = re.compile(r"[0-9]{1,12}")

bp = Blueprint("private", __name__)


# --- schema -------------------------------------------------------------------------------------


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


class RegisterSchema(ma.Schema):
    """A registration record; unknown fields are ignored here but still covered by the signature."""

    class Meta:
        unknown = ma.EXCLUDE

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
    payment = PaymentField(load_default=None)
    paymentMethods = PaymentField(load_default=None)  # the wire name
    timestamp = StrictInteger(required=True)
    signature = ma.fields.String(load_default=None)

    @ma.validates_schema
    def _one_payment(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("payment") is None and data.get("paymentMethods") is None:
            raise ma.ValidationError("payment (or paymentMethods) is required", "payment")
        if data.get("payment") is not None and data.get("paymentMethods") is not None:
            raise ma.ValidationError("give payment or paymentMethods, not both", "payment")


def _first_error(messages: Any, prefix: str = "") -> tuple[str, str]:
    """(field path, message) of the first validation error, for a message naming the field."""
    if isinstance(messages, dict):
        for key in sorted(messages, key=str):
            if not prefix:
                path = str(key)
            else:
                path = f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{key}"
            return _first_error(messages[key], path)
    if isinstance(messages, list) and messages:
        first = messages[0]
        return (prefix, first) if isinstance(first, str) else _first_error(first, prefix)
    return prefix or "body", str(messages)


# --- views -------------------------------------------------------------------------------------


def _runtime() -> Runtime:
    rt: Runtime = current_app.extensions["occ"]
    return rt


@bp.post("/register")
def register() -> ResponseReturnValue:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "Malformed registration: the body must be a JSON object")
    try:
        data = RegisterSchema().load(body)
    except ma.ValidationError as err:
        field, reason = _first_error(err.messages)
        errors = err.messages if isinstance(err.messages, dict) else {"body": err.messages}
        where = f"{field}{reason}" if reason.startswith("[") else f"{field}: {reason}"
        raise ApiError(400, f"Malformed registration: {where}", errors=errors) from None
    settings = _runtime().settings
    try:
        check_url(data["url"], settings.allow_loopback_services)
    except RemoteAddressError as exc:
        raise ApiError(
            400, f"Malformed registration: url: {exc}", errors={"url": [str(exc)]}
        ) from None

    signature = body.get("signature")
    if not isinstance(signature, str) or not signature:
        raise ApiError(401, "Registration is not signed")
    # The signature covers the body exactly as sent (every field but the signature).
    try:
        signer = recover_signer(canonical_json(body), signature)
    except SignatureError:
        raise ApiError(401, "Registration signature is invalid") from None
    if not _allowed(signer, settings.registry_allowlist):
        log.warning("registration of %s by a signer not on the allow-list", data["type"])
        raise ApiError(403, "Registration signer is not on the allow-list")
    try:
        verify_record(body, settings.registry_allowlist, now=time.time())
    except SignatureError as exc:
        raise ApiError(401, f"Registration rejected: {exc}") from None

    record = {
        "type": data["type"],
        "description": data["description"],
        "url": data["url"],
        "payment": data["payment"] if data["payment"] is not None else data["paymentMethods"],
        "timestamp": data["timestamp"],
        "signature": signature,
        "signer": normalize_address(signer),
    }
    registry = Registry(_runtime().redis, settings.registry_ttl)
    try:
        created = registry.register(record)
    except RegistryReplayError:
        raise ApiError(409, "Registration replayed: sign a fresh record") from None
    except InvalidRecordError as exc:
        raise ApiError(
            400, f"Malformed registration: {exc}", errors={exc.field: [exc.reason]}
        ) from None
    log.info(
        "storage %s %s by %s",
        data["type"],
        "registered" if created else "refreshed",
        record["signer"],
    )
    stored = registry.get(data["type"])
    resp = jsonify(
        {
            "message": "Registered" if created else "Refreshed",
            "storage": stored,
            "ttl": settings.registry_ttl,
        }
    )
    resp.status_code = 201 if created else 200
    return resp


def _allowed(signer: str, allow_list: tuple[str, ...]) -> bool:
    for entry in allow_list:
        try:
            if same_address(signer, entry):
                return True
        except SignatureError:
            continue  # a malformed allow-list entry matches nothing
    return False


@bp.get("/staged/<quote_id>/<int:index>")
def staged(quote_id: str, index: int) -> ResponseReturnValue:
    token = request.args.get("token", "")
    expires = request.args.get("expires", "")
    if STAGED_QUOTE_ID_RE.fullmatch(quote_id) is None:
        raise ApiError(404, "No such staged file")
    rt = _runtime()
    if (
        TOKEN_RE.fullmatch(token) is None
        or EXPIRES_RE.fullmatch(expires) is None
        or not check_staged_token(quote_id, index, int(expires), token, rt.sketch_key)
    ):
        raise ApiError(403, "Invalid or expired token for this staged file")
    path = rt.settings.staging_dir / "quotes" / quote_id / f"{index}"
    try:
        # O_NOFOLLOW: a staged file is a regular file written by the gateway, never a link.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise ApiError(404, "No such staged file") from None
    f = os.fdopen(fd, "rb")
    resp = Response(
        wrap_file(request.environ, f), mimetype="application/octet-stream", direct_passthrough=True
    )
    resp.content_length = os.fstat(fd).st_size
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/health")
def health() -> ResponseReturnValue:
    _runtime().redis.ping()  # Redis down -> 503 (api/errors.py)
    return jsonify({"status": "healthy"})


# --- factory -----------------------------------------------------------------------------------


def create_private_app(settings: Settings | None = None) -> Flask:
    """Build the private API app (gunicorn target ``api.private:create_private_app()``)."""
    if settings is None:
        runtime = get_runtime()
        settings = runtime.settings
    else:
        runtime = Runtime(settings)
        set_runtime(runtime)
    configure_logging(debug=settings.debug)
    if not settings.registry_allowlist:
        log.warning("REGISTRY_ALLOWLIST is empty: every registration will be refused")

    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        DEBUG=settings.debug,
        PROPAGATE_EXCEPTIONS=False,
        JSON_SORT_KEYS=False,
    )
    app.extensions["occ"] = runtime
    register_error_handlers(app)
    app.register_blueprint(bp)
    return app

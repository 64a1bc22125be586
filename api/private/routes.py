"""Private API routes: registration (protocol.md §6), staged files, health; thin views.

- ``POST /register``: a signed record {type, description, url, payment | paymentMethods,
  timestamp, signature} -> 201 created, 200 refreshed; 400 malformed (the message names the
  field), 401 unsigned / bad signature / stale timestamp, 403 signer not on REGISTRY_ALLOWLIST,
  409 replayed registration.
- ``GET /staged/<quote_id>/<index>?expires=<unix>&token=<hmac>``: a staged file of a paid
  upload, for the microservice that stores it (URLs built by workers.remote.staged_file_url);
  403 bad or expired token.
- ``GET /health``: liveness of the private API and its Redis.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Response, jsonify, request
from flask.views import MethodView
from werkzeug.wsgi import wrap_file

from api.deps import runtime
from api.errors import ApiError
from api.private.schemas import HealthSchema, RegisteredSchema, RegisterSchema, StagedQuerySchema
from api.validation import Blueprint, errors_doc
from occ_protocol.formats import is_quote_id
from occ_protocol.signatures import (
    SignatureError,
    canonical_json,
    normalize_address,
    recover_signer,
    same_address,
    verify_record,
)
from workers.remote.guard import RemoteAddressError, check_url
from workers.remote.staged import check_staged_token
from workers.state.registry import InvalidRecordError, Registry, RegistryReplayError

log = logging.getLogger("api.private")

blp = Blueprint("private", __name__, description="Storage registration and staged files")


def _allowed(signer: str, allow_list: tuple[str, ...]) -> bool:
    for entry in allow_list:
        try:
            if same_address(signer, entry):
                return True
        except SignatureError:
            continue  # a malformed allow-list entry matches nothing
    return False


def _check_signer(body: dict[str, Any], allow_list: tuple[str, ...]) -> str:
    """The record's signer, if on the allow-list and the record is fresh (401/403 otherwise)."""
    signature = body.get("signature")
    if not isinstance(signature, str) or not signature:
        raise ApiError(401, "Registration is not signed")
    # The signature covers the body exactly as sent (every field but the signature).
    try:
        signer = recover_signer(canonical_json(body), signature)
    except SignatureError:
        raise ApiError(401, "Registration signature is invalid") from None
    if not _allowed(signer, allow_list):
        log.warning("registration of %s by a signer not on the allow-list", body.get("type"))
        raise ApiError(403, "Registration signer is not on the allow-list")
    try:
        verify_record(body, allow_list, now=time.time())
    except SignatureError as exc:
        raise ApiError(401, f"Registration rejected: {exc}") from None
    return normalize_address(signer)


@blp.route("/register")
class Register(MethodView):
    @blp.arguments(RegisterSchema)
    @blp.response(201, RegisteredSchema, description="Registered")
    @blp.alt_response(200, schema=RegisteredSchema, description="Refreshed")
    @errors_doc(
        blp,
        e400="Malformed record (the message names the field)",
        e401="Unsigned, bad signature or stale timestamp",
        e403="Signer not on REGISTRY_ALLOWLIST",
        e409="Registration replayed",
    )
    def post(self, data: dict[str, Any]) -> Response:
        """Register (or refresh) a storage type's microservice; signed by an allow-listed key."""
        settings = runtime().settings
        try:
            check_url(data["url"], settings.allow_loopback_services)
        except RemoteAddressError as exc:
            raise ApiError(
                400, f"Malformed registration: url: {exc}", errors={"url": [str(exc)]}
            ) from None
        body: dict[str, Any] = request.get_json()  # a JSON object: the schema loaded it
        record = {
            "type": data["type"],
            "description": data["description"],
            "url": data["url"],
            "payment": data["payment"] if data["payment"] is not None else data["paymentMethods"],
            "timestamp": data["timestamp"],
            "signature": body.get("signature"),
            "signer": _check_signer(body, settings.registry_allowlist),
        }
        registry = Registry(runtime().redis, settings.registry_ttl)
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
        resp = jsonify(
            {
                "message": "Registered" if created else "Refreshed",
                "storage": registry.get(data["type"]),
                "ttl": settings.registry_ttl,
            }
        )
        resp.status_code = 201 if created else 200
        return resp


@blp.route("/staged/<string:quote_id>/<int:index>")
class Staged(MethodView):
    @blp.arguments(StagedQuerySchema, location="query", error_status_code=403)
    @blp.response(
        200, {"type": "string", "format": "binary"}, content_type="application/octet-stream"
    )
    @errors_doc(blp, e403="Invalid or expired token", e404="No such staged file")
    def get(self, query: dict[str, Any], quote_id: str, index: int) -> Response:
        """A staged file of a paid upload (signed URL from workers.remote.staged_file_url)."""
        if not is_quote_id(quote_id):
            raise ApiError(404, "No such staged file")
        rt = runtime()
        if not check_staged_token(quote_id, index, query["expires"], query["token"], rt.sketch_key):
            raise ApiError(403, "Invalid or expired token for this staged file")
        path = rt.settings.staging_dir / "quotes" / quote_id / f"{index}"
        try:
            # O_NOFOLLOW: a staged file is a regular file written by the gateway, never a link.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            raise ApiError(404, "No such staged file") from None
        f = os.fdopen(fd, "rb")
        resp = Response(
            wrap_file(request.environ, f),
            mimetype="application/octet-stream",
            direct_passthrough=True,
        )
        resp.content_length = os.fstat(fd).st_size
        resp.headers["Cache-Control"] = "no-store"
        return resp


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @errors_doc(blp, e503="Redis unavailable")
    def get(self) -> dict[str, str]:
        """Liveness of the private API and its Redis."""
        runtime().redis.ping()  # Redis down -> 503 (api/errors.py)
        return {"status": "healthy"}

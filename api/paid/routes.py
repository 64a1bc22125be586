"""Paid-upload routes (protocol.md §1): thin views over workers/paid.py; POST /upload?quoteId: upload.py."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.deps import runtime
from api.errors import ApiError
from api.paid import load, paid_errors
from api.paid.schemas import (
    HistoryEntrySchema,
    HistoryQuerySchema,
    LinkSchema,
    QuoteIdQuerySchema,
    QuoteRequestSchema,
    QuoteSchema,
    SignedQuerySchema,
    StatusSchema,
    StorageSchema,
)
from workers import paid

blp = Blueprint(
    "paid",
    __name__,
    description="Paid uploads (Ocean's storage-backend protocol): quote, approve, sign, upload, link",
)

SIGNED_DOC = {"parameters": [{"in": "query", "schema": SignedQuerySchema}]}
QUOTE_ID_DOC = {"parameters": [{"in": "query", "schema": QuoteIdQuerySchema}]}


def _query() -> dict[str, Any]:
    """Query string, completed by a JSON or form body for POST (the seed's clients vary)."""
    args: dict[str, Any] = {}
    if request.method == "POST":
        body = request.get_json(silent=True) if request.is_json else None
        if isinstance(body, dict):
            args.update({k: v for k, v in body.items() if isinstance(v, str)})
    args.update(request.args.to_dict())
    return args


def public_base() -> str:
    return runtime().settings.public_base_url or request.host_url.rstrip("/")


@blp.route("/")
class Storages(MethodView):
    @blp.response(200, StorageSchema(many=True))
    def get(self) -> list[dict[str, Any]]:
        """Storage types and accepted payments: the built-in `occ` plus every live registered storage."""
        return paid.list_storages(runtime())


@blp.route("/getQuote")
class GetQuote(MethodView):
    @blp.doc(
        requestBody={
            "required": True,
            "content": {"application/json": {"schema": QuoteRequestSchema}},
        }
    )
    @blp.response(200, QuoteSchema)
    @blp.alt_response(400, description="Invalid request: the message names the field")
    @blp.alt_response(503, description="The storage's microservice could not quote")
    def post(self) -> dict[str, Any]:
        """Price storing files for a duration; approve `tokenAmount` to `approveAddress`, then upload."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid quote request: body: must be a JSON object")
        req = load(QuoteRequestSchema(), body, "quote request")
        with paid_errors():
            return paid.create_quote(runtime(), req)


def _status() -> dict[str, int]:
    q = load(QuoteIdQuerySchema(), _query(), "status request")
    return {"status": paid.quote_status(runtime(), q["quoteId"])}


@blp.route("/getStatus")
class GetStatus(MethodView):
    @blp.doc(**QUOTE_ID_DOC)
    @blp.response(200, StatusSchema)
    @blp.alt_response(400, description="Malformed quoteId")
    def get(self) -> dict[str, int]:
        """Status of a quote (0: no such quote; codes in the API description)."""
        return _status()

    @blp.doc(**QUOTE_ID_DOC)
    @blp.response(200, StatusSchema)
    @blp.alt_response(400, description="Malformed quoteId")
    def post(self) -> dict[str, int]:
        """Status of a quote (the seed's POST form)."""
        return _status()


def _links() -> Response:
    q = load(SignedQuerySchema(), _query(), "link request")
    with paid_errors():
        links = paid.get_links(runtime(), q["quoteId"], q["nonce"], q["signature"], public_base())
    return jsonify(links)


@blp.route("/getLink")
class GetLink(MethodView):
    @blp.doc(**SIGNED_DOC)
    @blp.response(200, LinkSchema(many=True))
    @blp.alt_response(400, description="Malformed quoteId, nonce or signature")
    @blp.alt_response(403, description="Signature is not by the quote's owner")
    @blp.alt_response(404, description="No such quote")
    @blp.alt_response(409, description="Nonce already used, or files not stored yet")
    def get(self) -> Response:
        """The DDO `files` objects of a stored quote, one per file in upload order (owner only)."""
        return _links()

    @blp.doc(**SIGNED_DOC)
    @blp.response(200, LinkSchema(many=True))
    @blp.alt_response(400, description="Malformed quoteId, nonce or signature")
    @blp.alt_response(403, description="Signature is not by the quote's owner")
    @blp.alt_response(404, description="No such quote")
    @blp.alt_response(409, description="Nonce already used, or files not stored yet")
    def post(self) -> Response:
        """The DDO `files` objects (the seed's POST form)."""
        return _links()


@blp.route("/getHistory")
class GetHistory(MethodView):
    @blp.doc(parameters=[{"in": "query", "schema": HistoryQuerySchema}])
    @blp.response(
        200, HistoryEntrySchema(many=True), headers={"X-Pagination": {"schema": {"type": "string"}}}
    )
    @blp.alt_response(400, description="Malformed address, nonce, signature or paging")
    @blp.alt_response(403, description="Signature is not by userAddress")
    @blp.alt_response(409, description="Nonce already used")
    def get(self) -> Response:
        """The user's quotes, newest first, with their status (signed text uses an empty quoteId)."""
        q = load(HistoryQuerySchema(), request.args.to_dict(), "history request")
        with paid_errors():
            total, items = paid.get_history(
                runtime(),
                q["userAddress"],
                q["nonce"],
                q["signature"],
                q["page"],
                q["pageSize"],
                q["storage"],
            )
        resp = jsonify(items)
        resp.headers["X-Pagination"] = json.dumps(
            {"total": total, "page": q["page"], "page_size": q["pageSize"]}, separators=(",", ":")
        )
        return resp

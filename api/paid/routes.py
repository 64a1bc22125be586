"""Paid-upload routes (protocol.md §1): thin views over workers/paid.py; POST /upload?quoteId: upload.py."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, jsonify, request
from flask.views import MethodView

from api.deps import runtime
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
from api.validation import Blueprint, errors_doc
from workers.services import paid

blp = Blueprint(
    "paid",
    __name__,
    description="Paid uploads (Ocean's storage-backend protocol): quote, approve, sign, upload, link",
)

LINK_ERRORS = errors_doc(
    blp,
    e400="Malformed quoteId, nonce or signature",
    e403="Signature is not by the quote's owner",
    e404="No such quote",
    e409="Nonce already used, or files not stored yet",
)


def public_base() -> str:
    return runtime().settings.public_base_url or request.host_url.rstrip("/")


@blp.route("/")
class Storages(MethodView):
    @blp.response(200, StorageSchema(many=True))
    @errors_doc(blp)
    def get(self) -> list[dict[str, Any]]:
        """Storage types and accepted payments: the built-in `occ` plus every live registered storage."""
        return paid.list_storages(runtime())


@blp.route("/getQuote")
class GetQuote(MethodView):
    @blp.arguments(QuoteRequestSchema)
    @blp.response(200, QuoteSchema)
    @errors_doc(
        blp,
        e400="Invalid request: the message names the field",
        e503="The storage's microservice could not quote",
    )
    def post(self, req: dict[str, Any]) -> dict[str, Any]:
        """Price storing files for a duration; approve `tokenAmount` to `approveAddress`, then upload."""
        return paid.create_quote(runtime(), req)


@blp.route("/getStatus")
class GetStatus(MethodView):
    @blp.arguments(QuoteIdQuerySchema, location="query")
    @blp.response(200, StatusSchema)
    @errors_doc(blp, e400="Malformed quoteId")
    def get(self, q: dict[str, Any]) -> dict[str, int]:
        """Status of a quote (0: no such quote; codes in the API description)."""
        return {"status": paid.quote_status(runtime(), q["quoteId"])}

    @blp.arguments(QuoteIdQuerySchema, location="query")
    @blp.response(200, StatusSchema)
    @errors_doc(blp, e400="Malformed quoteId")
    def post(self, q: dict[str, Any]) -> dict[str, int]:
        """Status of a quote (the seed's POST form; the parameters may also be a JSON body)."""
        return {"status": paid.quote_status(runtime(), q["quoteId"])}


def _links(q: dict[str, Any]) -> Response:
    links = paid.get_links(runtime(), q["quoteId"], q["nonce"], q["signature"], public_base())
    return jsonify(links)


@blp.route("/getLink")
class GetLink(MethodView):
    @blp.arguments(SignedQuerySchema, location="query")
    @blp.response(200, LinkSchema(many=True))
    @LINK_ERRORS
    def get(self, q: dict[str, Any]) -> Response:
        """The DDO `files` objects of a stored quote, one per file in upload order (owner only)."""
        return _links(q)

    @blp.arguments(SignedQuerySchema, location="query")
    @blp.response(200, LinkSchema(many=True))
    @LINK_ERRORS
    def post(self, q: dict[str, Any]) -> Response:
        """The DDO `files` objects (the seed's POST form; the parameters may also be a JSON body)."""
        return _links(q)


@blp.route("/getHistory")
class GetHistory(MethodView):
    @blp.arguments(HistoryQuerySchema, location="query")
    @blp.response(
        200, HistoryEntrySchema(many=True), headers={"X-Pagination": {"schema": {"type": "string"}}}
    )
    @errors_doc(
        blp,
        e400="Malformed address, nonce, signature or paging",
        e403="Signature is not by userAddress",
        e409="Nonce already used",
    )
    def get(self, q: dict[str, Any]) -> Response:
        """The user's quotes, newest first, with their status (signed text uses an empty quoteId)."""
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

"""Storage resource: the seed's upload/download/files/verify/rebalance, plus raw PUT and DELETE."""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import quote

from flask import Response, request
from flask.views import MethodView

from api.auth import require_api_key
from api.deps import runtime
from api.errors import ApiError
from api.paid.schemas import UploadAcceptedSchema
from api.paid.upload import paid_upload
from api.storage.schemas import (
    FilesQuerySchema,
    FilesSchema,
    JobAcceptedSchema,
    RawUploadQuerySchema,
    RebalanceSchema,
    UploadFormSchema,
    UploadQuerySchema,
    UploadResultSchema,
    VerifySchema,
)
from api.validation import BEARER, PARSER, Blueprint, errors_doc
from occ_protocol.formats import FILE_HASH_RE, is_file_hash
from workers.services import storage

blp = Blueprint(
    "storage", __name__, description="Direct uploads and downloads in the OCC chunk store"
)

HASH_PARAM = {
    "in": "path",
    "name": "file_hash",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{FILE_HASH_RE.pattern}$"},
    "description": "SHA-256 of the whole file (hex)",
}

UPLOAD_DOC = {
    "tags": ["storage", "paid"],
    # direct uploads need a key when API_KEYS is set; paid uploads are authorised by the signature
    "security": [*BEARER, {}],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": (
                        "Direct upload: one part `file` (and optionally `replication_factor`). "
                        "Paid upload (with quoteId, nonce, signature in the query): parts "
                        "`file1` ... `fileN`, one per quoted file, in the quote's order."
                    ),
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "replication_factor": {"type": "integer", "minimum": 1},
                    },
                    "additionalProperties": {"type": "string", "format": "binary"},
                }
            }
        },
    },
    "responses": {
        200: {
            "description": "Direct: the stored file (UploadResult). Paid: `{message, quoteId}`, "
            "the files staged and the payment queued (follow it with /getStatus)",
            "content": {
                "application/json": {
                    "schema": {"anyOf": [UploadResultSchema, UploadAcceptedSchema]}
                }
            },
        }
    },
}


def check_hash(file_hash: str) -> str:
    if not is_file_hash(file_hash):
        raise ApiError(
            400,
            "Malformed file hash: expected 64 hexadecimal characters",
            {"file_hash": ["Not a SHA-256 hex digest."]},
        )
    return file_hash.lower()


def check_replication(value: int | None) -> int:
    settings = runtime().settings
    r = settings.replication_factor if value is None else value
    if not 1 <= r <= settings.num_nodes:
        raise ApiError(
            400,
            f"replication_factor must be between 1 and {settings.num_nodes}",
            {"replication_factor": [f"Must be between 1 and {settings.num_nodes}."]},
        )
    return r


def upload_result(summary: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, **summary}


@blp.route("/upload")
class Upload(MethodView):
    @blp.arguments(UploadQuerySchema, location="query")
    @blp.doc(**UPLOAD_DOC)
    @blp.response(200, UploadResultSchema)
    @errors_doc(
        blp,
        e400="Missing file part, bad replication_factor or paid-upload input",
        e401="API key required (direct upload, when API_KEYS is set)",
        e403="Paid upload: signature is not the quote owner's",
        e404="Paid upload: no such quote",
        e409="Paid upload: nonce not above the last one, or quote already used",
        e413="Body larger than MAX_UPLOAD_SIZE",
    )
    def post(self, query: dict[str, Any]) -> Any:
        """Upload files; two forms.

        **Direct** (no query): multipart part `file`, optional `replication_factor`; needs
        `Authorization: Bearer <key>` when API_KEYS is set. Acknowledged once every chunk is on the
        write quorum; answers UploadResult.

        **Paid** (protocol.md §1, tag `paid`): `?quoteId=<id>&nonce=<n>&signature=<sig>` and parts
        `file1` ... `fileN`. The signature (protocol.md §2) is the EIP-191 `personal_sign` by the quote's
        owner of the text `"0x" + sha256_hex(quoteId + nonce)` (0x-hex, 65 bytes r,s,v, low s); the
        nonce is a decimal string greater than any nonce the wallet used before (Ocean's client: unix
        seconds). Answers `{message, quoteId}`; the quote then moves through the status codes of
        /getStatus. A refused upload (400, 403, 404, 409) is answered before the files are read.
        """
        if query["quoteId"] is not None:
            return paid_upload(query)
        require_api_key()
        form = PARSER.parse(UploadFormSchema, location="form")
        r = check_replication(form["replication_factor"])
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(
                400, "Missing file part 'file'", {"file": ["Missing data for required field."]}
            )
        upload.stream.seek(0)
        return upload_result(
            storage.store_upload(runtime(), upload.stream, upload.filename or "", r)
        )

    @blp.arguments(RawUploadQuerySchema, location="query")
    @blp.doc(
        security=BEARER,
        requestBody={
            "required": False,  # no body: the empty file
            "description": "The file's bytes (none for an empty file)",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
    )
    @blp.response(200, UploadResultSchema)
    @errors_doc(
        blp,
        e400="Bad replication_factor",
        e401="API key required (when API_KEYS is set)",
        e413="Body larger than MAX_UPLOAD_SIZE",
    )
    def put(self, query: dict[str, Any]) -> Any:
        """Raw streaming upload: the body is the file (`curl -T file URL?name=...`), no multipart."""
        require_api_key()
        r = check_replication(query["replication_factor"])
        name = query["name"] or request.headers.get("X-File-Name", "")
        return upload_result(storage.store_upload(runtime(), request.stream, name[:10000], r))


def _content_disposition(name: str, file_hash: str) -> str:
    """attachment with an ASCII fallback and an RFC 5987 UTF-8 name; never a path."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "")[:255] or file_hash
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip() or file_hash
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(base, safe='')}"


@blp.route("/download/<string:file_hash>", parameters=[HASH_PARAM])
class Download(MethodView):
    @blp.response(
        200, {"type": "string", "format": "binary"}, content_type="application/octet-stream"
    )
    @blp.alt_response(206, description="Partial content (Range)")
    @blp.alt_response(304, description="Not modified (If-None-Match)")
    @errors_doc(blp, e400="Malformed hash", e404="No such file", e416="Range not satisfiable")
    def get(self, file_hash: str) -> Response:
        """Download a file; every chunk is verified, bad replicas are skipped and queued for repair."""
        file_hash = check_hash(file_hash)
        store = runtime().store
        manifest = store.manifest(file_hash)
        etag = f'"{file_hash}"'
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Disposition": _content_disposition(manifest.name, file_hash),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "public, max-age=31536000, immutable",
        }
        if request.if_none_match.contains(file_hash):
            return Response(status=304, headers=headers)
        size = manifest.size
        start, end, status = 0, size, 200
        rng = request.range
        if_range = request.if_range
        range_applies = (
            if_range.etag is None and if_range.date is None
        ) or if_range.etag == file_hash
        if rng is not None and range_applies:
            if rng.units != "bytes" or len(rng.ranges) != 1:
                raise ApiError(
                    416,
                    "Only one byte range is supported",
                    headers={"Content-Range": f"bytes */{size}"},
                )
            bounds = rng.range_for_length(size)
            if bounds is None:
                raise ApiError(
                    416,
                    "Requested range not satisfiable",
                    headers={"Content-Range": f"bytes */{size}"},
                )
            start, end, status = bounds[0], bounds[1], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        body = storage.read_file(runtime(), file_hash, start, end)
        # Read the first block now: a chunk with no readable replica becomes a clean 503 here,
        # before the status line is sent (a later one can only abort the connection).
        first = next(body, b"")
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            return Response(status=status, headers=headers, content_type="application/octet-stream")
        return Response(
            itertools.chain((first,), body),
            status=status,
            headers=headers,
            content_type="application/octet-stream",
            direct_passthrough=True,
        )


@blp.route("/files")
class Files(MethodView):
    @blp.arguments(FilesQuerySchema, location="query")
    @blp.response(200, FilesSchema)
    @errors_doc(blp, e400="Bad page or per_page")
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """List stored files, newest first, with their live replication (paginated)."""
        page, per_page = query["page"], query["per_page"]
        total, files = storage.list_files(runtime(), (page - 1) * per_page, per_page)
        return {"total_files": total, "page": page, "per_page": per_page, "files": files}


@blp.route("/files/<string:file_hash>", parameters=[HASH_PARAM])
class FileItem(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(204)
    @errors_doc(
        blp,
        e400="Malformed hash",
        e401="API key required",
        e404="No such file",
        e409="A repair or rebalance holds the file; retry",
    )
    def delete(self, file_hash: str) -> None:
        """Delete a file: its manifest everywhere, and every chunk no other file uses.

        The file is gone at once. The space of chunks written or reused by an upload in the
        last day is freed by the orphan sweep (every 6 h) once they are a day old, so that a
        concurrent upload of the same content never loses a chunk.
        """
        require_api_key()
        storage.delete_file(runtime(), check_hash(file_hash))


@blp.route("/verify/<string:file_hash>", parameters=[HASH_PARAM])
class Verify(MethodView):
    @blp.response(200, VerifySchema)
    @errors_doc(blp, e400="Malformed hash", e404="No such file")
    def get(self, file_hash: str) -> dict[str, Any]:
        """Verify every replica of every chunk (hash checked) and report the live replication."""
        return storage.verify_file(runtime(), check_hash(file_hash))


@blp.route("/rebalance/<string:file_hash>", parameters=[HASH_PARAM])
class Rebalance(MethodView):
    @blp.arguments(RebalanceSchema)
    @blp.doc(security=BEARER)
    @blp.response(202, JobAcceptedSchema)
    @errors_doc(
        blp,
        e400="Malformed hash or replication_factor out of range",
        e401="API key required",
        e404="No such file",
        e409="A repair or rebalance holds the file; retry",
    )
    def post(self, body: dict[str, Any], file_hash: str) -> dict[str, Any]:
        """Change a file's replication factor; a worker copies or trims replicas (job status at /jobs/{id})."""
        require_api_key()
        file_hash = check_hash(file_hash)
        r = check_replication(body["replication_factor"])
        return storage.start_rebalance(runtime(), file_hash, r)

"""Storage resource: the seed's upload/download/files/verify/rebalance, plus raw PUT and DELETE."""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import quote

import marshmallow as ma
from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth import require_api_key
from api.deps import runtime
from api.errors import ApiError
from api.paid.upload import paid_upload
from api.storage.schemas import (
    FilesQuerySchema,
    FilesSchema,
    JobAcceptedSchema,
    RawUploadQuerySchema,
    RebalanceSchema,
    UploadFormSchema,
    UploadResultSchema,
    VerifySchema,
)
from workers import storage_jobs

blp = Blueprint(
    "storage", __name__, description="Direct uploads and downloads in the OCC chunk store"
)

HASH = re.compile(r"^[0-9a-fA-F]{64}$")
HASH_PARAM = {
    "in": "path",
    "name": "file_hash",
    "required": True,
    "schema": {"type": "string", "pattern": HASH.pattern},
    "description": "SHA-256 of the whole file (hex)",
}

MULTIPART_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "replication_factor": {"type": "integer", "minimum": 1},
                    },
                    "required": ["file"],
                }
            }
        },
    },
    "parameters": [
        {
            "in": "query",
            "name": "quoteId",
            "schema": {"type": "string"},
            "required": False,
            "description": "Paid upload (protocol.md): with nonce and signature; parts file1, file2, ...",
        },
        {"in": "query", "name": "nonce", "schema": {"type": "string"}, "required": False},
        {"in": "query", "name": "signature", "schema": {"type": "string"}, "required": False},
    ],
}


def check_hash(file_hash: str) -> str:
    if not HASH.match(file_hash):
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


def load(schema: ma.Schema, data: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = schema.load(data)
    except ma.ValidationError as err:
        fields = err.messages if isinstance(err.messages, dict) else {"_schema": err.messages}
        raise ApiError(400, "Invalid input: " + ", ".join(sorted(fields)), fields) from None
    return result


def upload_result(summary: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, **summary}


@blp.route("/upload")
class Upload(MethodView):
    @blp.doc(**MULTIPART_DOC)
    @blp.response(200, UploadResultSchema)
    @blp.alt_response(
        400, description="Missing file part, bad replication_factor or paid-upload input"
    )
    @blp.alt_response(401, description="API key required (when API_KEYS is set)")
    @blp.alt_response(403, description="Paid upload: signature is not the quote owner's")
    @blp.alt_response(404, description="Paid upload: no such quote")
    @blp.alt_response(
        409, description="Paid upload: nonce not above the last one, or quote already used"
    )
    @blp.alt_response(413, description="Body larger than MAX_UPLOAD_SIZE")
    @blp.alt_response(503, description="State store (Redis) or a storage node unavailable")
    def post(self) -> Any:
        """Upload a file (multipart `file`); acknowledged once every chunk is on the write quorum.

        With `?quoteId=...&nonce=...&signature=...` this is the paid upload of protocol.md.
        """
        if "quoteId" in request.args:
            return paid_upload()
        require_api_key()
        form = load(UploadFormSchema(), request.form)
        r = check_replication(form["replication_factor"])
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(
                400, "Missing file part 'file'", {"file": ["Missing data for required field."]}
            )
        upload.stream.seek(0)
        return upload_result(storage_jobs.store_upload(upload.stream, upload.filename or "", r))

    @blp.arguments(RawUploadQuerySchema, location="query")
    @blp.doc(
        requestBody={
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    )
    @blp.response(200, UploadResultSchema)
    @blp.alt_response(400, description="Bad replication_factor")
    @blp.alt_response(413, description="Body larger than MAX_UPLOAD_SIZE")
    def put(self, query: dict[str, Any]) -> Any:
        """Raw streaming upload: the body is the file (`curl -T file URL?name=...`), no multipart."""
        require_api_key()
        r = check_replication(query["replication_factor"])
        name = query["name"] or request.headers.get("X-File-Name", "")
        return upload_result(storage_jobs.store_upload(request.stream, name[:10000], r))


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
    @blp.alt_response(400, description="Malformed hash")
    @blp.alt_response(404, description="No such file")
    @blp.alt_response(416, description="Range not satisfiable")
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
        body = storage_jobs.read_file(file_hash, start, end)
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
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """List stored files, newest first, with their live replication (paginated)."""
        page, per_page = query["page"], query["per_page"]
        total, files = storage_jobs.list_files((page - 1) * per_page, per_page)
        return {"total_files": total, "page": page, "per_page": per_page, "files": files}


@blp.route("/files/<string:file_hash>", parameters=[HASH_PARAM])
class FileItem(MethodView):
    @blp.response(204)
    @blp.alt_response(400, description="Malformed hash")
    @blp.alt_response(401, description="API key required")
    @blp.alt_response(404, description="No such file")
    @blp.alt_response(409, description="A repair or rebalance holds the file; retry")
    def delete(self, file_hash: str) -> None:
        """Delete a file: its manifest everywhere, and every chunk no other file uses.

        The file is gone at once. The space of chunks written or reused by an upload in the
        last day is freed by the orphan sweep (every 6 h) once they are a day old, so that a
        concurrent upload of the same content never loses a chunk.
        """
        require_api_key()
        storage_jobs.delete_file(check_hash(file_hash))


@blp.route("/verify/<string:file_hash>", parameters=[HASH_PARAM])
class Verify(MethodView):
    @blp.response(200, VerifySchema)
    @blp.alt_response(400, description="Malformed hash")
    @blp.alt_response(404, description="No such file")
    def get(self, file_hash: str) -> dict[str, Any]:
        """Verify every replica of every chunk (hash checked) and report the live replication."""
        return storage_jobs.verify_file(check_hash(file_hash))


@blp.route("/rebalance/<string:file_hash>", parameters=[HASH_PARAM])
class Rebalance(MethodView):
    @blp.arguments(RebalanceSchema)
    @blp.response(202, JobAcceptedSchema)
    @blp.alt_response(400, description="Malformed hash or replication_factor out of range")
    @blp.alt_response(401, description="API key required")
    @blp.alt_response(404, description="No such file")
    def post(self, body: dict[str, Any], file_hash: str) -> dict[str, Any]:
        """Change a file's replication factor; a worker copies or trims replicas (job status at /jobs/{id})."""
        require_api_key()
        file_hash = check_hash(file_hash)
        r = check_replication(body["replication_factor"])
        return storage_jobs.start_rebalance(file_hash, r)

"""Job status: replication, rebalance and paid-upload jobs, with status codes that only move forward."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView

from api.deps import runtime
from api.errors import ApiError
from api.validation import Blueprint, errors_doc
from occ_protocol.formats import JOB_ID_RE, is_job_id
from occ_protocol.status import Status

blp = Blueprint("jobs", __name__, description="Background job status")


class JobSchema(ma.Schema):
    job_id = ma.fields.String()
    kind = ma.fields.String(metadata={"description": "replicate or rebalance"})
    status = ma.fields.Integer(metadata={"description": "Status code (table in the description)"})
    status_name = ma.fields.String()
    final = ma.fields.Boolean()
    reason = ma.fields.String()
    file_hash = ma.fields.String(allow_none=True)
    replication_factor = ma.fields.Integer(allow_none=True)
    deliveries = ma.fields.Integer()
    created_at = ma.fields.Float()
    updated_at = ma.fields.Float()


@blp.route(
    "/jobs/<string:job_id>",
    parameters=[
        {
            "in": "path",
            "name": "job_id",
            "required": True,
            "schema": {"type": "string", "pattern": f"^{JOB_ID_RE.pattern}$"},
        }
    ],
)
class Job(MethodView):
    @blp.response(200, JobSchema)
    @errors_doc(blp, e400="Malformed job id", e404="No such job")
    def get(self, job_id: str) -> dict[str, Any]:
        """Status of a background job (codes as in the API description)."""
        if not is_job_id(job_id):
            raise ApiError(400, "Malformed job id: expected 32 lowercase hex characters")
        job = runtime().jobs.get(job_id)
        if job is None or job["kind"] not in {"replicate", "rebalance"}:
            raise ApiError(404, "No such job")
        status = Status(job["status"])
        return {
            "job_id": job_id,
            "kind": job["kind"],
            "status": int(status),
            "status_name": status.name,
            "final": status.final,
            "reason": job.get("reason", ""),
            "file_hash": job["data"].get("file_hash"),
            "replication_factor": job["data"].get("replication_factor"),
            "deliveries": job["deliveries"],
            "created_at": job["created_at"],
            "updated_at": job["updated_at"],
        }

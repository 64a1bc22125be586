"""Job status: replication, rebalance and paid-upload jobs, with status codes that only move forward."""

from __future__ import annotations

import re
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.deps import runtime
from api.errors import ApiError
from occ_protocol.status import Status

blp = Blueprint("jobs", __name__, description="Background job status")

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


@blp.route(
    "/jobs/<string:job_id>",
    parameters=[
        {
            "in": "path",
            "name": "job_id",
            "required": True,
            "schema": {"type": "string", "pattern": JOB_ID.pattern},
        }
    ],
)
class Job(MethodView):
    @blp.response(200, description="The job: kind, status code and name, reason, timestamps")
    @blp.alt_response(400, description="Malformed job id")
    @blp.alt_response(404, description="No such job")
    def get(self, job_id: str) -> dict[str, Any]:
        """Status of a background job (codes as in the API description)."""
        if not JOB_ID.match(job_id):
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

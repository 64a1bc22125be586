"""Health and network status: exact per-node figures and sketch estimates with 95% intervals."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response, jsonify
from flask.views import MethodView

from api.deps import runtime
from api.errors import ApiError
from api.validation import Blueprint, RequestSchema, errors_doc
from workers.nodes_config import node_states
from workers.services.health import network_status

blp = Blueprint("health", __name__, description="Liveness and replication health")


class HealthSchema(ma.Schema):
    status = ma.fields.String()
    nodes = ma.fields.Integer()
    ready = ma.fields.Boolean()
    node_states = ma.fields.List(
        ma.fields.Dict(),
        metadata={"description": "Each node's id, kind (local, s3) and reachability"},
    )


class StatusQuerySchema(RequestSchema):
    error_prefix = "Invalid status query"

    refresh = ma.fields.Boolean(
        load_default=False, metadata={"description": "Recompute the sketches now"}
    )


def _object(description: str) -> ma.fields.Dict:
    """A nested object declared permissively: its fields evolve (estimates, flags, SLO)."""
    return ma.fields.Dict(allow_none=True, metadata={"description": description})


class NetworkStatusSchema(ma.Schema):
    """The /status report; declared permissively (fields are added as the estimators grow)."""

    class Meta:
        unknown = ma.INCLUDE  # no additionalProperties: false in the document

    network = _object("Exact counts and estimated union and average replication (with CIs)")
    replication = _object("Replica classes, at-least counts, SLO (may be unknown), load")
    nodes = ma.fields.List(ma.fields.Dict(), metadata={"description": "Exact per-node figures"})
    config = _object("Public settings")
    files_stored = ma.fields.Integer()
    sketch = _object("The merged sketch's parameters and age")
    last_health_check = _object("The last health check's verdict")
    repair_sweep_scheduled = ma.fields.Boolean()


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema, description="Ready: Redis answers, node directories usable")
    @errors_doc(blp, e503="Not ready: Redis or a node directory is unavailable")
    def get(self) -> dict[str, Any]:
        """Liveness and readiness (the seed's `status`, `nodes`, `ready`)."""
        rt = runtime()
        rt.redis.ping()  # Redis down -> 503 with Retry-After (api/errors.py)
        states = node_states(rt.nodes)
        up = sum(1 for s in states if s["reachable"])
        # an unreachable node is a failed node: ready while the write quorum can still be met
        if up < rt.settings.write_quorum:
            raise ApiError(
                503, f"Not ready: only {up} nodes reachable", headers={"Retry-After": "5"}
            )
        return {"status": "healthy", "nodes": len(rt.nodes), "ready": True, "node_states": states}


@blp.route("/status")
class Status(MethodView):
    @blp.arguments(StatusQuerySchema, location="query")
    @blp.response(200, NetworkStatusSchema, description="Which figures are exact, which estimated")
    @errors_doc(blp, e400="Bad refresh flag")
    def get(self, query: dict[str, Any]) -> Response:
        """Network status: per-node exact counts; union and replication estimated from the merged sketch."""
        # jsonify, not the schema's dump: fields added to the report are passed on as they are
        return jsonify(network_status(runtime(), refresh=query["refresh"]))

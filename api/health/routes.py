"""Health and network status: exact per-node figures and sketch estimates with 95% intervals."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.deps import runtime
from api.errors import ApiError
from workers.health import network_status
from workers.nodes_config import node_states

blp = Blueprint("health", __name__, description="Liveness and replication health")


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, description="Ready: Redis answers and the node directories are usable")
    @blp.alt_response(503, description="Not ready")
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
    @blp.response(200, description="Network statistics (which figures are exact, which estimated)")
    def get(self) -> dict[str, Any]:
        """Network status: per-node exact counts; union and replication estimated from the merged sketch."""
        refresh = request.args.get("refresh", "").lower() in {"1", "true", "yes"}
        return network_status(runtime(), refresh=refresh)

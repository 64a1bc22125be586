"""The private API (own port, default 5001, never routed by nginx): registration and staged files.

gunicorn target: ``api.private:create_private_app()``; its own OpenAPI document at
``/openapi.json``. Routes in api/private/routes.py, schemas in api/private/schemas.py.
"""

from __future__ import annotations

import logging

from flask import Flask

from api import GatewayApi, openapi_config, register_blueprints
from api.errors import register_error_handlers
from api.requests import finish_unread_body
from workers.logs import configure_logging
from workers.runtime import Runtime, get_runtime, set_runtime
from workers.settings import Settings

log = logging.getLogger("api.private")

MAX_BODY_BYTES = 64 * 1024
PRIVATE_BLUEPRINTS = ("api.private.routes",)
DESCRIPTION = """Private API of the OCC storage gateway (not routed by nginx): storage
microservices register here (protocol.md §6) and fetch the staged files of paid uploads.
Every error has the shape `{"code": int, "status": str, "message": str, "errors": {...}}`.
"""


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
    app.config.update(openapi_config("OCC storage gateway: private API", DESCRIPTION))
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        DEBUG=settings.debug,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["occ"] = runtime
    api = GatewayApi(app)
    register_error_handlers(app)
    app.after_request(finish_unread_body)
    register_blueprints(api, PRIVATE_BLUEPRINTS)
    return app

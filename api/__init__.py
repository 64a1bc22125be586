"""create_app(config=None): settings, extensions, blueprints, error handlers.

Blueprints are registered from one list per app (PUBLIC_BLUEPRINTS here, PRIVATE_BLUEPRINTS in
api/private), each module holding a `blp`; a hook such as metrics is one more line in
`create_app` (api.metrics: GET /metrics and the request-counting hooks).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from typing import Any

import swagger_ui_bundle
from flask import Flask, Response, send_from_directory
from flask_smorest import Api
from werkzeug.middleware.proxy_fix import ProxyFix

from api.errors import ErrorSchema, register_error_handlers
from api.limits import init_limiter
from api.metrics import init_metrics
from api.requests import StagingRequest, finish_unread_body, tag_request_id
from occ_protocol.status import STATUS_TABLE_MARKDOWN
from workers.logs import configure_logging
from workers.runtime import Runtime, set_runtime
from workers.settings import Settings

SWAGGER_ASSETS = "/docs/assets"
PUBLIC_BLUEPRINTS = (
    "api.health.routes",
    "api.storage.routes",
    "api.jobs.routes",
    "api.paid.routes",
)
BEARER_SCHEME = {"type": "http", "scheme": "bearer", "description": "One of API_KEYS"}
DESCRIPTION = f"""
Storage gateway: direct uploads into the OCC replicated chunk store, and paid uploads
(Ocean Protocol's storage-backend protocol) settled in ERC-20 tokens on an EVM chain.

Every error has one shape: `{{"code": int, "status": str, "message": str, "errors": {{...}}}}`.

Job and quote status codes (`/getStatus`, `/jobs/{{id}}`); a status only moves to a larger code:

{STATUS_TABLE_MARKDOWN}
"""


class GatewayApi(Api):  # type: ignore[misc]
    """flask-smorest's Api with the gateway's one error schema in the document."""

    ERROR_SCHEMA = ErrorSchema


def register_blueprints(api: Api, modules: Iterable[str]) -> None:
    """Register the `blp` of every module in `modules`, in order."""
    for name in modules:
        api.register_blueprint(importlib.import_module(name).blp)


def openapi_config(title: str, description: str) -> dict[str, Any]:
    """flask-smorest settings: the document at /openapi.json, OpenAPI 3.0.3."""
    return {
        "API_TITLE": title,
        "API_VERSION": "1.0.0",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        "API_SPEC_OPTIONS": {
            "info": {"description": description},
            "components": {"securitySchemes": {"bearer": BEARER_SCHEME}},
        },
    }


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the public gateway app. `config` may hold `SETTINGS` (a Settings) and Flask keys."""
    config = dict(config or {})
    settings: Settings = config.pop("SETTINGS", None) or Settings.from_env()
    configure_logging(debug=settings.debug)
    for handler in logging.getLogger().handlers:
        handler.addFilter(tag_request_id)  # once: the same filter is never added twice

    app = Flask(__name__)
    app.request_class = StagingRequest
    app.config.update(openapi_config("OCC storage gateway", DESCRIPTION))
    app.config.update(
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Swagger UI's own files are served from the pinned pip package: /docs works offline.
        OPENAPI_SWAGGER_UI_URL=f"{SWAGGER_ASSETS}/",
        # +1: werkzeug's limited stream raises once a read reaches the limit, so a body of
        # exactly MAX_UPLOAD_SIZE bytes must stay below it; one byte more is a 413.
        MAX_CONTENT_LENGTH=settings.max_upload_size + 1,
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        DEBUG=settings.debug,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.config.update(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep chunk order in `distribution`
    # Exactly one trusted proxy hop (nginx) in front of gunicorn.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)  # type: ignore[method-assign]

    runtime = Runtime(settings)
    set_runtime(runtime)
    from workers.celery_app import app as celery_app

    # The same Redis as the settings, whatever the environment said at import time; drop any
    # broker connection pool made before (it would keep the old URL).
    celery_app.conf.broker_url = settings.redis_url
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    app.extensions["occ"] = runtime
    settings.staging_dir.mkdir(parents=True, exist_ok=True)

    api = GatewayApi(app)
    register_error_handlers(app)
    metrics_view = init_metrics(app)  # before the limiter's hook: a 429 is counted and timed
    init_limiter(app, settings).exempt(metrics_view)
    app.after_request(finish_unread_body)
    register_blueprints(api, PUBLIC_BLUEPRINTS)

    @app.get(f"{SWAGGER_ASSETS}/<path:name>")
    def swagger_asset(name: str) -> Response:
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, name, max_age=86400)

    return app

"""The one validation path: marshmallow schemas read by `@blp.arguments` through one parser.

- `Blueprint`: flask-smorest's, with `PARSER` (validation errors are 400s, answered by
  api/errors.py in the one shape, the message naming the first bad field).
- `RequestSchema`: the base of request schemas (unknown fields ignored).
- `format_field`: a string field checked against an `occ_protocol.formats` pattern (whole match),
  the pattern also published in the OpenAPI document.
- `errors_doc`: the documented error answers of an operation, each referencing the error schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import flask
import flask_smorest
import marshmallow as ma
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import MultiDict

from api.errors import ErrorSchema

F = TypeVar("F", bound=Callable[..., Any])


class Parser(FlaskParser):
    """webargs' Flask parser; a POST's JSON body completes its query string (Ocean's clients send
    signed parameters either way), the query string winning."""

    DEFAULT_VALIDATION_STATUS = 400

    def load_querystring(self, req: flask.Request, schema: ma.Schema) -> Any:
        if req.method != "POST" or not req.is_json:
            return super().load_querystring(req, schema)
        body = req.get_json(silent=True)
        merged: MultiDict[str, Any] = MultiDict()
        if isinstance(body, dict):
            merged.update({k: v for k, v in body.items() if isinstance(v, str)})
        for key, values in req.args.lists():
            merged.setlist(key, values)
        return self._makeproxy(merged, schema)


PARSER = Parser()


class Blueprint(flask_smorest.Blueprint):  # type: ignore[misc]
    ARGUMENTS_PARSER = PARSER

    def arguments(self, schema: Any, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        """flask-smorest's, with one schema instance per route: webargs makes a new instance of
        a schema class at every request (3% of a getStatus request's CPU)."""
        if isinstance(schema, type):
            schema = schema()
        return super().arguments(schema, *args, **kwargs)  # type: ignore[no-any-return]


class RequestSchema(ma.Schema):
    """A request's query, form or body: fields it does not name are ignored, not refused (Ocean's
    clients send more than the gateway reads)."""

    class Meta:
        unknown = ma.EXCLUDE


class FullMatch(ma.validate.Validator):
    """The whole string matches `pattern` (no trailing newline slips through, unlike `$`)."""

    def __init__(self, pattern: re.Pattern[str], error: str) -> None:
        self.pattern = pattern
        self.message = error

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or self.pattern.fullmatch(value) is None:
            raise ma.ValidationError(self.message)
        return value


def format_field(pattern: re.Pattern[str], error: str, **kwargs: Any) -> ma.fields.String:
    metadata = {"pattern": f"^{pattern.pattern}$", **kwargs.pop("metadata", {})}
    return ma.fields.String(validate=FullMatch(pattern, error), metadata=metadata, **kwargs)


# Answers every operation may give: rate limited, state store down.
COMMON_ERRORS = {
    429: "Rate limited: retry after `Retry-After` seconds",
    503: "Service temporarily unavailable (state store or storage node); `Retry-After` given",
}


def errors_doc(blp: flask_smorest.Blueprint, **codes: str) -> Callable[[F], F]:
    """Document error answers (`e400="why"`, ...) plus COMMON_ERRORS, all in the error schema."""
    documented = dict(COMMON_ERRORS)
    documented.update({int(k.removeprefix("e")): v for k, v in codes.items()})

    def decorator(func: F) -> F:
        for code, description in sorted(documented.items()):
            func = blp.alt_response(code, schema=ErrorSchema, description=description)(func)
        return func

    return decorator


BEARER: list[dict[str, list[str]]] = [{"bearer": []}]

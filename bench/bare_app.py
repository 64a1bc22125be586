"""A trivial Flask JSON route: the floor of the framework stack, for bench/suite.py's limits.

Served by the gateway's own gunicorn settings (scripts/gunicorn.conf.py), it measures what
Flask, gunicorn's gthread workers and the access log cost before any of the gateway's work:
no limiter, no Redis, no schema.
"""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/status")
def status():  # type: ignore[no-untyped-def]
    return jsonify(status=500, quoteId="0" * 32)

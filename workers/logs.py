"""Structured (JSON lines) logging for the API and workers; secrets never reach a log record."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# Anything that looks like a private key, a bearer token or a signature is masked.
_SECRET = re.compile(
    r"(0x[0-9a-fA-F]{64,130}|Bearer\s+\S+|(?i:api[_-]?key|private[_-]?key|secret)\s*[=:]\s*\S+)"
)


def redact(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in ("request_id", "job_id", "file_hash", "quote_id", "task", "event"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
        return json.dumps(entry, sort_keys=False)


def configure_logging(debug: bool = False) -> None:
    """Install the JSON formatter on the root logger once per process."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("urllib3", "web3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

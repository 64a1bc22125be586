"""A local record of quotes, so `approve --quote-id` and `upload-paid --quote-id` work.

Only public quote data is kept, under the client's cache directory (``nonces.cache_dir``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from client import nonces
from client.checks import check_quote_id
from client.errors import ClientError


def save_quote(quote: Mapping[str, Any], files: Sequence[str | Path] = ()) -> Path | None:
    """Remember a quote (public data only) under the cache directory; None if that is not writable."""
    try:
        quote_id = check_quote_id(str(quote.get("quoteId", "")))
        d = nonces.cache_dir() / "quotes"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{quote_id.lower()}.json"
        record = {**quote, "files": [str(Path(f).resolve()) for f in files]}
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path
    except (OSError, ClientError):
        return None


def load_quote(quote_id: str) -> dict[str, Any]:
    check_quote_id(quote_id)
    path = nonces.cache_dir() / "quotes" / f"{quote_id.lower()}.json"
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        raise ClientError(
            f"no saved quote {quote_id} (quotes made with `occ-client quote` are kept in {path.parent}); "
            "pass --amount and --spender instead"
        ) from None
    if not isinstance(data, dict):
        raise ClientError(f"saved quote {path} is not a JSON object")
    return data

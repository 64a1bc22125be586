"""Paid uploads (protocol.md): what the views in api/paid ask of the back end, in five rooms.

- errors: the PaidError family (messages safe to show a client)
- quotes: payment options, prices, storages (GET /), quotes and their status
- ledger: the signature check, nonces, the durable ledger of consumed quotes
- staging: durable staging of an upload's files
- uploads: accept an upload, links, history
- flow: the steps the Celery tasks run once a quote's files are staged (charge, store, refund,
  expire)

The names the API uses are re-exported here, so a view writes ``paid.create_quote(...)``.
"""

from workers.services.paid.errors import (
    FileMismatchError,
    MalformedSignatureError,
    NonceUsedError,
    NotReadyError,
    PaidError,
    QuoteExpiredError,
    QuoteRequestError,
    QuoteUsedError,
    StorageUnavailableError,
    UnknownQuoteError,
    WrongSignerError,
)
from workers.services.paid.quotes import (
    MAX_FILES,
    create_quote,
    list_storages,
    load_quote,
    quote_status,
)
from workers.services.paid.uploads import accept_upload, get_history, get_links

__all__ = [
    "MAX_FILES",
    "FileMismatchError",
    "MalformedSignatureError",
    "NonceUsedError",
    "NotReadyError",
    "PaidError",
    "QuoteExpiredError",
    "QuoteRequestError",
    "QuoteUsedError",
    "StorageUnavailableError",
    "UnknownQuoteError",
    "WrongSignerError",
    "accept_upload",
    "create_quote",
    "get_history",
    "get_links",
    "list_storages",
    "load_quote",
    "quote_status",
]

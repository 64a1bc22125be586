"""Paid uploads (Ocean's storage-backend protocol): /, getQuote, upload, getStatus, getLink, getHistory.

Errors of workers.services.paid are answered from api/errors.py ERROR_TABLE; inputs are validated by the
schemas of api/paid/schemas.py through `@blp.arguments` (api/validation.py).
"""

"""Checks of what the user passes (addresses, quote ids, file hashes), as ClientError one-liners.

The formats themselves are defined once in ``occ_protocol/formats.py``.
"""

from __future__ import annotations

from eth_typing import ChecksumAddress

from client.errors import ClientError
from occ_protocol.formats import is_address, is_file_hash, is_quote_id


def check_address(value: str, what: str = "address") -> ChecksumAddress:
    if not is_address(value):
        raise ClientError(f"{what} must be 0x followed by 40 hex characters")
    from eth_utils.address import to_checksum_address

    return to_checksum_address(value)


def check_quote_id(value: str) -> str:
    if not is_quote_id(value):
        raise ClientError("quoteId must be 32 hex characters")
    return value


def check_hash(value: str) -> str:
    if not is_file_hash(value):
        raise ClientError("file hash must be 64 hex characters (SHA-256)")
    return value.lower()

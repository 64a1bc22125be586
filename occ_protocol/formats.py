"""The one definition of the identifier formats on the wire: addresses, nonces, quote ids, hashes.

Each pattern matches a whole string with ``fullmatch``; the ``is_*`` helpers also reject
non-strings, so they can be used on untrusted JSON values directly.
"""

from __future__ import annotations

import re

ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")  # 20-byte EVM address, any letter case
NONCE_RE = re.compile(r"[0-9]{1,13}")  # seconds (Ocean's client) or milliseconds
QUOTE_ID_RE = re.compile(r"[0-9a-fA-F]{32}")  # quoteId of the built-in occ type
FILE_HASH_RE = re.compile(r"[0-9a-fA-F]{64}")  # SHA-256 hex of a file or chunk
JOB_ID_RE = re.compile(r"[0-9a-f]{32}")

#: The start of the gateway's 409 message when a nonce is not larger than the wallet's last one;
#: the client signs again in a later second when it reads it (another client of the wallet,
#: Ocean's uploader.js for one, may have taken the current second).
NONCE_USED_MESSAGE = "Nonce already used"


def _full(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def is_address(value: object) -> bool:
    """Return True for a 0x-prefixed 40-hex-character address (no checksum check)."""
    return _full(ADDRESS_RE, value)


def is_nonce(value: object) -> bool:
    """Return True for a string of 1 to 13 ASCII digits."""
    return _full(NONCE_RE, value)


def is_quote_id(value: object) -> bool:
    """Return True for 32 hex characters (any letter case)."""
    return _full(QUOTE_ID_RE, value)


def is_file_hash(value: object) -> bool:
    """Return True for 64 hex characters (any letter case)."""
    return _full(FILE_HASH_RE, value)


def is_job_id(value: object) -> bool:
    """Return True for 32 lowercase hex characters."""
    return _full(JOB_ID_RE, value)

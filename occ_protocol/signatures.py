"""EIP-191 signatures of the DBS protocol (protocol.md §2) and signed registration records (§6)."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from eth_typing import ChecksumAddress

if TYPE_CHECKING:
    from eth_keys.datatypes import PrivateKey

# eth_account (about 1 s to import, most of it BLS curve tables) is imported by the functions
# that sign or recover, so that a client that only builds signed text starts fast.

from occ_protocol.formats import ADDRESS_RE, NONCE_RE

# Order of the secp256k1 group; a signature with s > n/2 has a valid "high-s" twin that
# recovers the same address, so only the low half is accepted (EIP-2).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2

SIGNATURE_LENGTH = 65
HEX_RE = re.compile(r"(?:0x)?([0-9a-fA-F]*)")

RECORD_SIGNATURE_FIELD = "signature"
RECORD_TIMESTAMP_FIELD = "timestamp"
DEFAULT_MAX_SKEW_S = 300


class SignatureError(ValueError):
    """A signature, nonce, address or signed record was rejected; the message says why."""


class InvalidAddressError(SignatureError):
    """Not a 0x-prefixed 20-byte hex address."""


@functools.lru_cache(maxsize=4096)  # keccak per call was 10% of getQuote's CPU (bench/README.md)
def _checksum(address: bytes | str) -> ChecksumAddress:
    from eth_utils.address import to_checksum_address

    return to_checksum_address(address)


# --- signed text -----------------------------------------------------------------------------


def signed_text(quote_id: str, nonce: str) -> str:
    """Return the text a client signs: "0x" + lowercase hex SHA-256(UTF-8(quoteId + nonce)).

    The nonce is hashed exactly as received (never reformatted). History requests sign with an
    empty quoteId: ``signed_text("", nonce)``.
    """
    return "0x" + hashlib.sha256((quote_id + nonce).encode("utf-8")).hexdigest()


def message_hash(text: str) -> str:
    """Return the 0x-hex EIP-191 (personal_sign) hash of ``text``, the digest that is signed."""
    from eth_account.messages import defunct_hash_message

    return "0x" + bytes(defunct_hash_message(text=text)).hex()


def is_valid_nonce(nonce: object) -> bool:
    """Return True if ``nonce`` is a string of 1 to 13 ASCII digits (seconds or milliseconds)."""
    return isinstance(nonce, str) and NONCE_RE.fullmatch(nonce) is not None


def nonce_value(nonce: str) -> int:
    """Return the integer value of a valid nonce string (for numeric, never string, comparison)."""
    if not is_valid_nonce(nonce):
        raise SignatureError("nonce must be 1 to 13 decimal digits")
    return int(nonce)


# --- addresses -------------------------------------------------------------------------------


def address_bytes(address: object) -> bytes:
    """Return the 20 bytes of a 0x-prefixed hex address (any letter case; no checksum check)."""
    if not isinstance(address, str) or ADDRESS_RE.fullmatch(address) is None:
        raise InvalidAddressError("address must be 0x followed by 40 hex characters")
    return bytes.fromhex(address[2:])


def normalize_address(address: object) -> ChecksumAddress:
    """Return the EIP-55 checksummed form of an address given in any letter case.

    Raises InvalidAddressError if it is not 0x + 40 hex characters.
    """
    return _checksum(address_bytes(address))


def same_address(a: str, b: str) -> bool:
    """Return True if two addresses are the same 20-byte value (letter case never matters)."""
    return address_bytes(a) == address_bytes(b)


# --- signatures ------------------------------------------------------------------------------


def _signature_bytes(signature: object) -> bytes:
    if isinstance(signature, bytes | bytearray):
        raw = bytes(signature)
    elif isinstance(signature, str):
        match = HEX_RE.fullmatch(signature.strip())
        if match is None or len(match.group(1)) % 2 != 0:
            raise SignatureError("signature is not well-formed hex")
        raw = bytes.fromhex(match.group(1))
    else:
        raise SignatureError("signature must be a hex string")
    if len(raw) != SIGNATURE_LENGTH:
        raise SignatureError(f"signature must be {SIGNATURE_LENGTH} bytes, got {len(raw)}")
    return raw


def parse_signature(signature: object) -> tuple[int, int, int]:
    """Return (v, r, s) of a 65-byte r||s||v signature, with v normalised from 0/1 to 27/28.

    Rejects (SignatureError) malformed hex, a length other than 65 bytes, v outside {27, 28},
    r or s out of range, and high-s signatures (s > n/2, EIP-2).
    """
    raw = _signature_bytes(signature)
    r = int.from_bytes(raw[0:32], "big")
    s = int.from_bytes(raw[32:64], "big")
    v = raw[64]
    if v in (0, 1):
        v += 27
    if v not in (27, 28):
        raise SignatureError("signature v must be 27 or 28 (or 0/1)")
    if not 0 < r < SECP256K1_N:
        raise SignatureError("signature r is out of range")
    if not 0 < s < SECP256K1_N:
        raise SignatureError("signature s is out of range")
    if s > SECP256K1_HALF_N:
        raise SignatureError("signature s is in the upper half of the curve order (high-s)")
    return v, r, s


def recover_signer(text: str, signature: object) -> ChecksumAddress:
    """Return the checksummed address that personal_signed (EIP-191) ``text``.

    Raises SignatureError for any malformed or non-canonical signature (see parse_signature).
    """
    v, r, s = parse_signature(signature)
    try:
        from eth_account import Account
        from eth_account.messages import encode_defunct

        signer = Account.recover_message(encode_defunct(text=text), vrs=(v, r, s))
    except Exception as exc:  # eth_keys raises several types for unrecoverable points
        raise SignatureError("signature does not recover to an address") from exc
    return _checksum(signer)


def verify_owner(quote_id: str, nonce: str, signature: object, expected_address: str) -> None:
    """Check that ``signature`` over signed_text(quote_id, nonce) is by ``expected_address``.

    Addresses are compared as 20-byte values. Returns None; raises SignatureError if the nonce
    is malformed, the signature is rejected, or the signer is someone else.
    """
    if not is_valid_nonce(nonce):
        raise SignatureError("nonce must be 1 to 13 decimal digits")
    expected = address_bytes(expected_address)
    signer = recover_signer(signed_text(quote_id, nonce), signature)
    if address_bytes(signer) != expected:
        raise SignatureError("signature is not by the quote's owner")


def sign_text(private_key: str | bytes | PrivateKey, text: str) -> str:
    """Return the 0x-hex EIP-191 personal_sign signature of ``text`` (v = 27/28, low s)."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    signed = Account.sign_message(encode_defunct(text=text), private_key)
    return "0x" + bytes(signed.signature).hex()


# --- signed registration records (protocol.md §6) -----------------------------------------------


def canonical_json(record: Mapping[str, Any]) -> str:
    """Return the canonical JSON of a record: sorted keys, no spaces, UTF-8 (not \\u-escaped).

    A "signature" field, if present, is left out: it is what this text is signed by.
    """
    body = {k: v for k, v in record.items() if k != RECORD_SIGNATURE_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sign_record(
    private_key: str | bytes | PrivateKey, record: Mapping[str, Any], now: float | None = None
) -> dict[str, Any]:
    """Return a copy of ``record`` with its EIP-191 "signature" over canonical_json(record).

    If the record has no "timestamp", ``now`` (integer seconds; default: the current time) is
    added before signing.
    """
    body = {k: v for k, v in record.items() if k != RECORD_SIGNATURE_FIELD}
    if RECORD_TIMESTAMP_FIELD not in body:
        body[RECORD_TIMESTAMP_FIELD] = int(time.time() if now is None else now)
    body[RECORD_SIGNATURE_FIELD] = sign_text(private_key, canonical_json(body))
    return body


def verify_record(
    record: Mapping[str, Any],
    allow_list: Iterable[str],
    now: float,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
) -> ChecksumAddress:
    """Return the checksummed signer of a registration record.

    Checks that the record has a numeric "timestamp" (seconds) within ``max_skew_s`` of
    ``now``, that its "signature" over canonical_json(record) is valid, and that the signer is
    in ``allow_list`` (compared as 20-byte values). Raises SignatureError otherwise.
    """
    signature = record.get(RECORD_SIGNATURE_FIELD)
    if not isinstance(signature, str):
        raise SignatureError("record is not signed")
    timestamp = record.get(RECORD_TIMESTAMP_FIELD)
    if (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, int | float)
        or not math.isfinite(timestamp)
    ):
        raise SignatureError("record timestamp must be a number of seconds")
    if abs(now - timestamp) > max_skew_s:
        raise SignatureError(f"record timestamp is more than {int(max_skew_s)} s from now")
    signer = recover_signer(canonical_json(record), signature)
    allowed = set()
    for entry in allow_list:
        try:
            allowed.add(address_bytes(entry))
        except InvalidAddressError:
            continue  # a malformed allow-list entry can never match
    if address_bytes(signer) not in allowed:
        raise SignatureError("record signer is not on the allow-list")
    return signer

"""Keys, nonces and signatures: the signing key, a fresh nonce, the request signature.

web3 and eth_account take over a second to import: the functions that need them import them,
so `occ-client --help` and the storage commands start fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client import nonces
from client.errors import ClientError
from occ_protocol.formats import is_nonce
from occ_protocol.signatures import sign_text, signed_text

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

DEFAULT_DEVCHAIN = "data/devchain.json"


def new_nonce(address: str, after: str | int | None = None) -> str:
    """A nonce for ``address`` in whole seconds, as Ocean's client sends them (client/nonces.py)."""
    try:
        return nonces.next_nonce(address, after)
    except nonces.NonceError as e:
        raise ClientError(str(e)) from None


def sign_request(private_key: str | bytes, quote_id: str, nonce: str) -> str:
    """EIP-191 signature of signed_text(quoteId, nonce) (protocol.md §2), 0x-hex, 65 bytes."""
    if not is_nonce(nonce):
        raise ClientError("nonce must be 1 to 13 decimal digits")
    return sign_text(private_key, signed_text(quote_id, nonce))


def load_account(private_key: str, source: str) -> LocalAccount:
    """An eth-account LocalAccount; the key itself never appears in an error message."""
    key = private_key.strip()
    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", key):
        raise ClientError(f"the private key from {source} is not 32 bytes of hex")
    try:
        from eth_account import Account

        account: LocalAccount = Account.from_key(key)
    except Exception:
        raise ClientError(f"the private key from {source} is not a valid secp256k1 key") from None
    return account


def read_key_file(path: str | Path) -> str:
    try:
        text = Path(path).read_text("utf-8").strip()
    except OSError as exc:
        raise ClientError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    return text.splitlines()[0].strip() if text else ""


def load_devchain(path: str | Path | None) -> dict[str, Any]:
    """The dev-chain JSON written by ``make run`` ({} if the path is None or absent)."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read dev chain config {p}: {exc}") from None
    if not isinstance(data, dict):
        raise ClientError(f"dev chain config {p} is not a JSON object")
    return data

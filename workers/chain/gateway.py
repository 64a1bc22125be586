"""The gateway's own wallet and its TokenPayments per (chain, token), wired from the settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from workers.chain.payments import TokenPayments, load_token_abi
from workers.settings import ConfigError, Settings
from workers.state import keys
from workers.state.locks import renewed_lock

if TYPE_CHECKING:
    from workers.runtime import Runtime
    from workers.services.paid.quotes import TokenOption

NONCE_LOCK_TTL_S = 5.0  # short: a killed holder blocks other payments only this long
NONCE_LOCK_WAIT_S = 30.0
RPC_TIMEOUT_S = 10


def gateway_key_path(settings: Settings, chain_key_file: Path | None = None) -> Path | None:
    """The key file of a chain: its own ``gateway_key_file``, else GATEWAY_KEY_FILE."""
    return chain_key_file or settings.gateway_key_file


def load_gateway_account(settings: Settings, key_file: Path | None = None) -> LocalAccount:
    """The gateway wallet from ``key_file`` (a chain's gateway_key_file) or GATEWAY_KEY_FILE.

    Raises ConfigError naming the file when it is unset, unreadable or holds no key (the key
    itself is never in a message).
    """
    path = gateway_key_path(settings, key_file)
    if path is None:
        raise ConfigError("GATEWAY_KEY_FILE is not set (nor the chain's gateway_key_file)")
    try:
        key = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ConfigError(f"gateway key file {path} cannot be read: {reason}") from None
    try:
        account: LocalAccount = Account.from_key(key)
    except (ValueError, TypeError):
        raise ConfigError(f"gateway key file {path} does not hold a 32-byte hex key") from None
    return account


_payments: dict[tuple[int, int, str], TokenPayments] = {}


def payments_for(rt: Runtime, option: TokenOption) -> TokenPayments:
    """The TokenPayments of one (chain, token) of the payment configuration (cached per process).

    The gateway account (the chain's key file, else GATEWAY_KEY_FILE) must be the configured
    ``gateway_address`` (ConfigError otherwise); its transaction nonces are allocated under one
    Redis lock per (chain, account). Every call asks the node for its chain id first and raises
    WrongChainError (transient) if it serves another chain than the configured one, so no
    allowance, balance or receipt is ever read from, and no transfer sent to, the wrong network.
    """
    key = (id(rt), option.chain_id, option.address.lower())
    if key not in _payments:
        gateway = load_gateway_account(rt.settings, option.gateway_key_file)
        if gateway.address.lower() != option.gateway_address.lower():
            raise ConfigError(
                f"the gateway key file of chain {option.chain_id} does not hold its "
                f"gateway_address {option.gateway_address}"
            )
        w3 = Web3(Web3.HTTPProvider(option.rpc_url, request_kwargs={"timeout": RPC_TIMEOUT_S}))
        lock_name = keys.gateway_nonce_lock(option.chain_id, gateway.address)
        _payments[key] = TokenPayments(
            w3,
            option.address,
            load_token_abi(),
            gateway,
            option.treasury_address,
            max(1, option.confirmations),
            nonce_lock=lambda: renewed_lock(
                rt.redis, lock_name, NONCE_LOCK_WAIT_S, NONCE_LOCK_TTL_S
            ),
            chain_id=option.chain_id,
        )
    pay = _payments[key]
    pay.verify_chain()
    return pay

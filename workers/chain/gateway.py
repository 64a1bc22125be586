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

NONCE_LOCK_TTL_S = 5.0  # short: a killed holder blocks other payments only this long
NONCE_LOCK_WAIT_S = 30.0
RPC_TIMEOUT_S = 10


def load_gateway_account(settings: Settings) -> LocalAccount:
    """The gateway wallet from GATEWAY_KEY_FILE (or the payment config's gateway_key_file)."""
    path = settings.gateway_key_file
    if path is None:
        configured = settings.payment_config().get("gateway_key_file")
        path = Path(configured) if configured else None
    if path is None:
        raise ConfigError("GATEWAY_KEY_FILE is not set")
    try:
        key = path.read_text("utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"GATEWAY_KEY_FILE cannot be read: {exc.strerror}") from None
    account: LocalAccount = Account.from_key(key)
    return account


_payments: dict[tuple[int, int, str], TokenPayments] = {}


def payments_for(
    rt: Runtime, chain_id: int, token: str, rpc_url: str, gateway_address: str, treasury: str
) -> TokenPayments:
    """The TokenPayments of one (chain, token) of the payment configuration (cached per process).

    The gateway account must be the configured ``gateway_address`` (ConfigError otherwise);
    its transaction nonces are allocated under one Redis lock per (chain, account)."""
    key = (id(rt), chain_id, token.lower())
    if key not in _payments:
        gateway = load_gateway_account(rt.settings)
        if gateway.address.lower() != gateway_address.lower():
            raise ConfigError("GATEWAY_KEY_FILE does not hold the configured gateway address")
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": RPC_TIMEOUT_S}))
        lock_name = keys.gateway_nonce_lock(chain_id, gateway.address)
        _payments[key] = TokenPayments(
            w3,
            token,
            load_token_abi(),
            gateway,
            treasury,
            max(1, rt.settings.confirmations),
            nonce_lock=lambda: renewed_lock(
                rt.redis, lock_name, NONCE_LOCK_WAIT_S, NONCE_LOCK_TTL_S
            ),
        )
    return _payments[key]

"""Check the gateway's configuration before it starts: ``python -m workers.check [--rpc] [--no-keys]``.

Reads the settings (every variable of README "Configuration") and PAYMENT_CONFIG, then prints
each problem as one line on stderr and exits 78 (EX_CONFIG), or prints ``config ok: N chains,
M tokens`` and exits 0. Also checked: every token has a price (its own or PRICE_PER_GIB_MONTH),
and, unless ``--no-keys``, each chain's gateway key file is readable and holds its
gateway_address. ``--rpc`` also asks every chain's RPC node: it must answer eth_chainId with the
configured chain id, each token address must hold a contract whose decimals() is the configured
one; a treasury that has not approved the gateway (refunds would fail) is a warning line.
``--wait S`` first waits up to S seconds for a PAYMENT_CONFIG file that does not exist yet (the
dev chain writes it while the other containers start). scripts/entrypoint.sh runs it before the
api and worker roles, scripts/run.sh once the dev chain is up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from web3 import Web3

from workers.chain.gateway import gateway_key_path, load_gateway_account
from workers.chain.payments import load_token_abi
from workers.payment_config import (
    ChainSpec,
    PaymentConfig,
    PaymentConfigError,
    error_line,
    load_payment_config,
)
from workers.services.paid.quotes import parse_decimal, payment_options
from workers.settings import ConfigError, Settings

EX_OK = 0
EX_CONFIG = 78  # sysexits.h
RPC_TIMEOUT_S = 10


def _key_lines(settings: Settings, chain: ChainSpec) -> list[str]:
    where = chain.where("gateway_key_file") if chain.gateway_key_file else ""
    if gateway_key_path(settings, chain.gateway_key_file) is None:
        return [
            error_line(
                chain.where("gateway_key_file"),
                "no gateway key: set GATEWAY_KEY_FILE or the chain's gateway_key_file",
            )
        ]
    try:
        account = load_gateway_account(settings, chain.gateway_key_file)
    except ConfigError as exc:
        return [error_line(where, str(exc)) if where else f"GATEWAY_KEY_FILE: {exc}"]
    if account.address.lower() != chain.gateway_address.lower():
        source = where or "GATEWAY_KEY_FILE"
        return [
            error_line(
                chain.where("gateway_address"),
                f"the key in {source} is {account.address}, not this gateway_address",
            )
        ]
    return []


def _rpc_lines(chain: ChainSpec) -> tuple[list[str], list[str]]:
    """(errors, warnings) of one chain's RPC node, tokens and treasury approval."""
    errors: list[str] = []
    warnings: list[str] = []
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url, request_kwargs={"timeout": RPC_TIMEOUT_S}))
    try:
        served = int(w3.eth.chain_id)
    except Exception as exc:  # any transport or protocol failure: one line, no traceback
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return [error_line(chain.where("rpc_url"), f"{chain.rpc_url} did not answer: {reason}")], []
    if served != chain.chain_id:
        message = f"{chain.rpc_url} serves chain {served}, not chain_id {chain.chain_id}"
        return [error_line(chain.where("rpc_url"), message)], []
    abi = load_token_abi()
    for i, token in enumerate(chain.tokens):
        where = chain.where(f"tokens[{i}]" if len(chain.tokens) > 1 else "token")
        try:
            if not bytes(w3.eth.get_code(Web3.to_checksum_address(token.address))):
                errors.append(
                    error_line(f"{where}.address", f"no contract at it on chain {served}")
                )
                continue
            contract: Any = w3.eth.contract(
                address=Web3.to_checksum_address(token.address), abi=abi
            )
            decimals = int(contract.functions.decimals().call())
            if decimals != token.decimals:
                errors.append(
                    error_line(
                        f"{where}.decimals",
                        f"the token's decimals() is {decimals}, not {token.decimals}",
                    )
                )
            allowance = int(
                contract.functions.allowance(
                    Web3.to_checksum_address(chain.treasury_address),
                    Web3.to_checksum_address(chain.gateway_address),
                ).call()
            )
            if allowance == 0:
                warnings.append(
                    "warning: "
                    + error_line(
                        chain.where("treasury_address"),
                        f"has not approved the gateway for {token.symbol}: refunds would fail",
                    )
                )
        except Exception as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            errors.append(error_line(f"{where}.address", f"not an ERC-20 token: {reason}"))
    return errors, warnings


def check(
    env: dict[str, str] | None = None, *, rpc: bool = False, keys: bool = True
) -> tuple[list[str], list[str], PaymentConfig | None]:
    """Return (error lines, warning lines, the payment configuration if it loaded)."""
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        return [str(exc)], [], None
    errors: list[str] = []
    try:
        parse_decimal(settings.min_price, "MIN_PRICE")
    except ConfigError as exc:
        errors.append(str(exc))
    try:
        config = load_payment_config(settings)
    except PaymentConfigError as exc:
        return errors + list(exc.lines), [], None
    try:
        payment_options(settings)
    except ConfigError as exc:
        errors.append(str(exc))
    warnings: list[str] = []
    for chain in config.chains:
        if keys:
            errors += _key_lines(settings, chain)
        if rpc:
            chain_errors, chain_warnings = _rpc_lines(chain)
            errors += chain_errors
            warnings += chain_warnings
    return errors, warnings, config


def _wait_for_file(env: dict[str, str], seconds: float) -> None:
    path = env.get("PAYMENT_CONFIG", "").strip()
    deadline = time.monotonic() + seconds
    while path and not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m workers.check``; returns the exit status (0 or 78)."""
    parser = argparse.ArgumentParser(
        prog="python -m workers.check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rpc", action="store_true", help="also ask every chain's RPC node")
    parser.add_argument("--no-keys", action="store_true", help="skip the gateway key files")
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="S", help="wait for a missing PAYMENT_CONFIG"
    )
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.wait > 0:
        _wait_for_file(env, args.wait)
    errors, warnings, config = check(env, rpc=args.rpc, keys=not args.no_keys)
    for line in warnings:
        print(line, file=sys.stderr)
    for line in dict.fromkeys(errors):  # chains sharing GATEWAY_KEY_FILE: its line once
        print(line, file=sys.stderr)
    if errors:
        return EX_CONFIG
    assert config is not None
    print(f"config ok: {len(config.chains)} chains, {config.token_count} tokens", flush=True)
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())

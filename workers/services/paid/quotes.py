"""Payment options, prices, the storages list (GET /) and quotes (POST /getQuote, GET /getStatus)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from occ_protocol.formats import ADDRESS_RE, is_quote_id
from occ_protocol.signatures import address_bytes, normalize_address
from occ_protocol.status import Status
from workers.payment_config import load_payment_config
from workers.remote.client import RemoteStorageClient
from workers.remote.guard import RemoteError
from workers.services.paid.errors import (
    QuoteRequestError,
    StorageUnavailableError,
    UnknownQuoteError,
)
from workers.settings import ConfigError, Settings
from workers.state.registry import Registry

if TYPE_CHECKING:
    from workers.runtime import Runtime

log = logging.getLogger("workers.paid")

OCC_TYPE = "occ"
OCC_DESCRIPTION = "Replicated storage on the gateway's OCC chunk store, paid per GiB-month"
QUOTE_KIND = "quote"
GIB = 2**30
SECONDS_PER_MONTH = 2_592_000  # 30 days
MAX_FILES = 1000


@dataclass(frozen=True)
class TokenOption:
    """One accepted (chain, token) pair from the payment configuration."""

    chain_id: int
    address: str  # EIP-55
    symbol: str
    decimals: int
    price_per_gib_month: Decimal  # whole tokens
    rpc_url: str
    gateway_address: str  # the approveAddress
    treasury_address: str
    confirmations: int = 1  # the chain's, else CONFIRMATIONS
    gateway_key_file: Path | None = None  # the chain's, else GATEWAY_KEY_FILE


def parse_price(text: str, symbol: str) -> Decimal:
    """Return the price per GiB-month of ``symbol`` from PRICE_PER_GIB_MONTH.

    The setting is one decimal for every token ("1.5") or per-symbol pairs ("OCEAN=1,USDC=0.2").
    Raises ConfigError if the value is malformed or names no price for ``symbol``.
    """
    raw = text.strip()
    if "=" in raw:
        prices = {}
        for item in raw.split(","):
            name, _, value = item.partition("=")
            prices[name.strip().upper()] = value.strip()
        if symbol.upper() not in prices:
            raise ConfigError(f"PRICE_PER_GIB_MONTH has no price for {symbol}")
        raw = prices[symbol.upper()]
    return parse_decimal(raw, "PRICE_PER_GIB_MONTH")


def parse_decimal(raw: str, name: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def payment_options(settings: Settings) -> list[TokenOption]:
    """Return the accepted (chain, token) pairs of the payment configuration (PAYMENT_CONFIG).

    The file is validated by workers/payment_config.py (one chain object, as the dev chain
    writes it, or ``{"chains": [...]}``); a token without its own ``price_per_gib_month`` takes
    PRICE_PER_GIB_MONTH. Empty if unconfigured; ConfigError if the file or a price is invalid.
    """
    options = []
    for chain in load_payment_config(settings).chains:
        for token in chain.tokens:
            price = (
                token.price_per_gib_month
                if token.price_per_gib_month is not None
                else parse_price(settings.price_per_gib_month, token.symbol)
            )
            options.append(
                TokenOption(
                    chain_id=chain.chain_id,
                    address=token.address,
                    symbol=token.symbol,
                    decimals=token.decimals,
                    price_per_gib_month=price,
                    rpc_url=chain.rpc_url,
                    gateway_address=chain.gateway_address,
                    treasury_address=chain.treasury_address,
                    confirmations=chain.confirmations,
                    gateway_key_file=chain.gateway_key_file,
                )
            )
    return options


def find_option(options: Sequence[TokenOption], chain_id: int, token_address: str) -> TokenOption:
    """Return the option for (chain, token), tokens compared as 20-byte values.

    Raises QuoteRequestError naming payment.chainId or payment.tokenAddress.
    """
    on_chain = [o for o in options if o.chain_id == chain_id]
    if not on_chain:
        raise QuoteRequestError("payment.chainId", f"chain {chain_id} is not accepted")
    wanted = address_bytes(token_address)
    for option in on_chain:
        if address_bytes(option.address) == wanted:
            return option
    raise QuoteRequestError("payment.tokenAddress", f"token is not accepted on chain {chain_id}")


def _units(amount: Decimal, decimals: int) -> tuple[int, int]:
    """(numerator, denominator) of ``amount`` whole tokens in smallest units, exactly."""
    return amount.scaleb(decimals).as_integer_ratio()


def price_occ(
    total_bytes: int,
    duration_s: int,
    price_per_gib_month: Decimal,
    decimals: int,
    min_price: Decimal,
) -> int:
    """Return the built-in storage price in the token's smallest unit (protocol.md §3).

    max(minimum, ceil(total_bytes / 2^30 * duration_s / 2,592,000 * price)), where price and
    minimum are in whole tokens and converted with the token's ``decimals``. Exact (rational
    arithmetic on the Decimal values), so no float rounding ever under- or over-charges.
    """
    if total_bytes < 0 or duration_s < 0:
        raise ValueError("total_bytes and duration_s must be >= 0")
    p_num, p_den = _units(price_per_gib_month, decimals)
    amount = -(-(total_bytes * duration_s * p_num) // (GIB * SECONDS_PER_MONTH * p_den))
    m_num, m_den = _units(min_price, decimals)
    return max(-(-m_num // m_den), amount)


# --- storages (GET /) -----------------------------------------------------------------------


def payment_methods(options: Sequence[TokenOption]) -> list[dict[str, Any]]:
    """Group options as [{chainId, acceptedTokens: [{title: SYMBOL, value: address}]}]."""
    chains: dict[int, list[dict[str, str]]] = {}
    for o in options:
        chains.setdefault(o.chain_id, []).append({"title": o.symbol, "value": o.address})
    return [{"chainId": cid, "acceptedTokens": tokens} for cid, tokens in chains.items()]


def registry(rt: Runtime) -> Registry:
    return Registry(rt.redis, rt.settings.registry_ttl)


def list_storages(rt: Runtime) -> list[dict[str, Any]]:
    """Return the built-in ``occ`` type and every live registered storage: {type, description, payment}."""
    out = [
        {
            "type": OCC_TYPE,
            "description": OCC_DESCRIPTION,
            "payment": payment_methods(payment_options(rt.settings)),
        }
    ]
    for record in registry(rt).list():
        if record.get("type") == OCC_TYPE:
            continue
        out.append(
            {
                "type": record["type"],
                "description": record.get("description", ""),
                "payment": record.get("payment", []),
            }
        )
    return out


def _accepts(methods: Sequence[Mapping[str, Any]], chain_id: int, token_address: str) -> bool:
    wanted = address_bytes(token_address)
    for method in methods:
        if method.get("chainId") != chain_id:
            continue
        for token in method.get("acceptedTokens", []):
            value = token.get("value")
            if (
                isinstance(value, str)
                and ADDRESS_RE.fullmatch(value)
                and address_bytes(value) == wanted
            ):
                return True
    return False


# --- quotes ---------------------------------------------------------------------------------


def create_quote(
    rt: Runtime, request: Mapping[str, Any], now: float | None = None
) -> dict[str, Any]:
    """Price a validated getQuote body and record the quote; return the protocol's answer.

    ``request`` has {type, files:[{length}], duration, payment:{chainId:int, tokenAddress},
    userAddress} (wire types already checked). Returns {quoteId, tokenAmount (decimal string),
    approveAddress, chainId, tokenAddress, expiresAt (unix seconds)}. Raises QuoteRequestError
    (naming the field) or StorageUnavailableError (a remote type's microservice failed).
    """
    settings = rt.settings
    now = time.time() if now is None else now
    storage_type = str(request["type"])
    lengths = [int(f["length"]) for f in request["files"]]
    duration = int(request["duration"])
    chain_id = int(request["payment"]["chainId"])
    user = normalize_address(request["userAddress"])
    record: dict[str, Any] | None = None
    if storage_type != OCC_TYPE:
        record = registry(rt).get(storage_type)
        if record is None:
            raise QuoteRequestError("type", f"unknown storage type {storage_type!r}")
    option = find_option(payment_options(settings), chain_id, request["payment"]["tokenAddress"])
    if record is not None and not _accepts(record.get("payment", []), chain_id, option.address):
        raise QuoteRequestError(
            "payment.tokenAddress", f"token is not accepted by storage {storage_type!r}"
        )
    if storage_type == OCC_TYPE and duration <= 0:
        raise QuoteRequestError("duration", "must be a positive number of seconds")
    if duration > settings.max_duration:
        raise QuoteRequestError("duration", f"must be at most {settings.max_duration} seconds")
    total = sum(lengths)
    if total > settings.max_upload_size:
        raise QuoteRequestError(
            "files", f"total length must be at most {settings.max_upload_size} bytes"
        )

    if record is None:
        amount = price_occ(
            total,
            duration,
            option.price_per_gib_month,
            option.decimals,
            parse_decimal(settings.min_price, "MIN_PRICE"),
        )
    else:
        body = {
            "type": storage_type,
            "files": [{"length": n} for n in lengths],
            "duration": duration,
            "payment": {"chainId": chain_id, "tokenAddress": option.address},
            "userAddress": user,
        }
        try:
            with RemoteStorageClient.for_settings(record["url"], settings) as client:
                answer = client.get_quote(body)
        except RemoteError as exc:
            log.warning("remote quote failed: %s", exc, extra={"event": storage_type})
            raise StorageUnavailableError(
                f"Storage {storage_type!r} could not quote: {exc}"
            ) from None
        amount = int(answer["tokenAmount"])

    quote_id = secrets.token_hex(16)
    expires_at = int(now + settings.quote_ttl)
    data = {
        "type": storage_type,
        "userAddress": user,
        "lengths": lengths,
        "duration": duration,
        "chainId": chain_id,
        "tokenAddress": option.address,
        "tokenAmount": str(amount),
        "approveAddress": option.gateway_address,
        "treasuryAddress": option.treasury_address,
        "expiresAt": expires_at,
    }
    rt.jobs.create(quote_id, QUOTE_KIND, Status.QUOTED, data=data, owner=user)
    log.info("quote issued", extra={"quote_id": quote_id, "event": storage_type})
    return {
        "quoteId": quote_id,
        "tokenAmount": str(amount),
        "approveAddress": option.gateway_address,
        "chainId": chain_id,
        "tokenAddress": option.address,
        "expiresAt": expires_at,
    }


def load_quote(rt: Runtime, quote_id: str) -> dict[str, Any]:
    """Return the quote job (UnknownQuoteError if there is none)."""
    job = rt.jobs.get(quote_id.lower()) if is_quote_id(quote_id) else None
    if job is None or job.get("kind") != QUOTE_KIND:
        raise UnknownQuoteError("No such quote")
    return job


def quote_status(rt: Runtime, quote_id: str, now: float | None = None) -> int:
    """Return the quote's status code (0 if unknown); a quote never uploaded reads 204 once expired."""
    try:
        job = load_quote(rt, quote_id)
    except UnknownQuoteError:
        return int(Status.NO_SUCH_QUOTE)
    status = int(job["status"])
    now = time.time() if now is None else now
    if status == Status.QUOTED and now > float(job["data"].get("expiresAt", 0)):
        return int(Status.QUOTE_EXPIRED)
    return status

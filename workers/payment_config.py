"""The payment configuration (PAYMENT_CONFIG): the chains, tokens and wallets paid uploads accept.

One JSON file, either one chain object (the shape `python -m workers.chain.devchain` writes) or
``{"chains": [chain, ...]}``::

    {"chains": [{
       "chain_id": 11155111,                       # int > 0, unique in the file
       "rpc_url": "https://rpc.example/sepolia",   # http(s) JSON-RPC of that chain
       "gateway_address": "0x…",                   # the approveAddress: sends transferFrom
       "treasury_address": "0x…",                  # receives payments, approves refunds
       "confirmations": 3,                         # optional, default CONFIRMATIONS
       "gateway_key_file": "/run/secrets/gw",      # optional, default GATEWAY_KEY_FILE
       "tokens": [{"address": "0x…", "symbol": "OCEAN", "decimals": 18,
                   "price_per_gib_month": "0.5"}]  # optional, default PRICE_PER_GIB_MONTH
    }]}

``token`` (one object) may replace ``tokens``. Addresses are 0x + 40 hex digits; a mixed-case
one must pass its EIP-55 checksum (all-lowercase skips the check). Unknown keys are refused,
except the informational ones the dev chain writes. Every problem is reported, one line each
naming its JSON path: ``PAYMENT_CONFIG chains[1].token.decimals: Must be ... 36.``
(PaymentConfigError.lines); ``python -m workers.check`` prints them at start.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from web3 import Web3

from occ_protocol.formats import ADDRESS_RE
from workers.settings import ConfigError

if TYPE_CHECKING:
    from workers.settings import Settings

ENV = "PAYMENT_CONFIG"
MAX_CHAIN_ID = 2**63 - 1
MAX_DECIMALS = 36
MAX_CONFIRMATIONS = 1000
ZERO_ADDRESS = "0x" + "0" * 40


class PaymentConfigError(ConfigError):
    """The payment configuration is invalid; ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = tuple(lines)
        super().__init__("; ".join(self.lines))


# --- the schema ---------------------------------------------------------------------------------


ADDRESS_ERRORS = {
    "address": "Not a 0x-prefixed 20-byte hex address.",
    "checksum": "Mixed-case address fails its EIP-55 checksum: check it for a typo "
    "(all-lowercase skips the check).",
    "zero": "Must not be the zero address.",
}


class Address(fields.String):
    """A 0x-prefixed 20-byte hex address, EIP-55-checked when mixed-case; loads checksummed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error_messages.update(ADDRESS_ERRORS)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not ADDRESS_RE.fullmatch(text):
            raise self.make_error("address")
        digits = text[2:]
        if (
            digits != digits.lower()
            and digits != digits.upper()
            and not Web3.is_checksum_address(text)
        ):
            raise self.make_error("checksum")
        if text.lower() == ZERO_ADDRESS:
            raise self.make_error("zero")
        return str(Web3.to_checksum_address(text))


def _int(lo: int, hi: int, **kwargs: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(lo, hi), **kwargs)


OBJECT_ERRORS = {"type": "Must be a JSON object.", "unknown": "Unknown field."}


class TokenSchema(Schema):
    error_messages = OBJECT_ERRORS

    address = Address(required=True)
    symbol = fields.String(required=True, validate=validate.Length(1, 32))
    decimals = _int(0, MAX_DECIMALS, required=True)
    price_per_gib_month = fields.Decimal(allow_nan=False, validate=validate.Range(min=0))
    name = fields.String()  # informational (the dev chain writes it)


class ChainSchema(Schema):
    error_messages = OBJECT_ERRORS

    chain_id = _int(1, MAX_CHAIN_ID, required=True)
    rpc_url = fields.Url(
        required=True,
        schemes={"http", "https"},
        require_tld=False,
        error_messages={"invalid": "Not an http(s) URL."},
    )
    gateway_address = Address(required=True)
    treasury_address = Address(required=True)
    confirmations = _int(0, MAX_CONFIRMATIONS)
    gateway_key_file = fields.String(validate=validate.Length(min=1))
    token = fields.Nested(TokenSchema)
    tokens = fields.List(
        fields.Nested(TokenSchema),
        validate=validate.Length(min=1, error="Must hold at least one token."),
    )
    name = fields.String()  # a label for people, e.g. "sepolia"
    # informational keys of the dev chain's file (workers/chain/devchain.py)
    token_artifact = fields.String()
    deployer_address = fields.String()
    funded_accounts = fields.List(fields.String())
    test_user = fields.Dict()
    deployed_block = fields.Integer(strict=True)

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _tokens(self, data: Mapping[str, Any], original: Any, **kwargs: Any) -> None:
        if not isinstance(original, Mapping):
            return  # reported as "Must be a JSON object."
        has_one, has_list = "token" in original, "tokens" in original
        if has_one and has_list:
            raise ValidationError("Give either token or tokens, not both.", "tokens")
        if not has_one and not has_list:
            raise ValidationError("Missing data for required field (or give tokens).", "token")
        if "tokens" in data:
            errors: dict[int, Any] = {}
            first: dict[str, int] = {}
            for i, token in enumerate(data["tokens"] or []):
                address = str(token.get("address", "")).lower()
                if address in first:
                    message = f"Duplicate token address (also tokens[{first[address]}])."
                    errors[i] = {"address": [message]}
                elif address:
                    first[address] = i
            if errors:
                raise ValidationError(errors, "tokens")


class ChainsSchema(Schema):
    error_messages = OBJECT_ERRORS

    chains = fields.List(
        fields.Nested(ChainSchema),
        required=True,
        validate=validate.Length(min=1, error="Must hold at least one chain."),
    )

    @validates_schema(skip_on_field_errors=False)
    def _unique_chain_ids(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        errors: dict[int, Any] = {}
        first: dict[int, int] = {}
        for i, chain in enumerate(data.get("chains") or []):
            chain_id = chain.get("chain_id")
            if chain_id in first:
                message = f"Duplicate chain id {chain_id} (also chains[{first[chain_id]}])."
                errors[i] = {"chain_id": [message]}
            elif chain_id is not None:
                first[chain_id] = i
        if errors:
            raise ValidationError(errors, "chains")


# --- the loaded configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSpec:
    """One accepted token of a chain; ``price_per_gib_month`` None: PRICE_PER_GIB_MONTH."""

    address: str  # EIP-55
    symbol: str
    decimals: int
    price_per_gib_month: Decimal | None = None
    name: str | None = None


@dataclass(frozen=True)
class ChainSpec:
    """One chain: its RPC, wallets, confirmations, gateway key file and tokens.

    ``path`` is where it sits in the file (``chains[1]``, or empty for a one-chain file), for
    error lines; ``gateway_key_file`` None means GATEWAY_KEY_FILE.
    """

    chain_id: int
    rpc_url: str
    gateway_address: str  # EIP-55
    treasury_address: str  # EIP-55
    confirmations: int
    tokens: tuple[TokenSpec, ...]
    gateway_key_file: Path | None = None
    path: str = ""
    name: str | None = None

    def where(self, *keys: str) -> str:
        """The JSON path of this chain (or of one of its keys), as error lines name it."""
        return ".".join(p for p in (self.path, *keys) if p)


@dataclass(frozen=True)
class PaymentConfig:
    """The chains of PAYMENT_CONFIG (empty: paid uploads are off)."""

    chains: tuple[ChainSpec, ...] = ()
    source: Path | None = None

    @property
    def token_count(self) -> int:
        return sum(len(chain.tokens) for chain in self.chains)

    def chain(self, chain_id: int) -> ChainSpec | None:
        return next((c for c in self.chains if c.chain_id == chain_id), None)


def _segments(path: tuple[str | int, ...]) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def error_line(path: str, message: str) -> str:
    """``PAYMENT_CONFIG <path>: <message>`` (no path: ``PAYMENT_CONFIG: <message>``)."""
    return f"{ENV} {path}: {message}" if path else f"{ENV}: {message}"


def _flatten(messages: Any, path: tuple[str | int, ...] = ()) -> Iterator[str]:
    """marshmallow's nested error dict as one line per message, depth first, in file order."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from _flatten(value, path if key == "_schema" else (*path, key))
    elif isinstance(messages, list | tuple):
        for item in messages:
            yield from _flatten(item, path)
    else:
        yield error_line(_segments(path), str(messages))


def _chain_spec(raw: Mapping[str, Any], path: str, confirmations: int, base: Path) -> ChainSpec:
    tokens = raw["tokens"] if "tokens" in raw else [raw["token"]]
    key_file = raw.get("gateway_key_file")
    return ChainSpec(
        chain_id=raw["chain_id"],
        rpc_url=raw["rpc_url"],
        gateway_address=raw["gateway_address"],
        treasury_address=raw["treasury_address"],
        confirmations=raw.get("confirmations", confirmations),
        tokens=tuple(
            TokenSpec(
                address=t["address"],
                symbol=t["symbol"],
                decimals=t["decimals"],
                price_per_gib_month=t.get("price_per_gib_month"),
                name=t.get("name"),
            )
            for t in tokens
        ),
        gateway_key_file=(base / key_file) if key_file else None,  # absolute stays absolute
        path=path,
        name=raw.get("name"),
    )


def parse_payment_config(
    data: Any, *, confirmations: int = 1, base_dir: Path | None = None, source: Path | None = None
) -> PaymentConfig:
    """Validate the decoded JSON; raise PaymentConfigError with every problem, one line each.

    ``confirmations`` is the default of a chain that sets none (CONFIRMATIONS); a relative
    ``gateway_key_file`` is taken from ``base_dir`` (the file's directory).
    """
    base = base_dir or Path.cwd()
    if not isinstance(data, dict):
        raise PaymentConfigError(
            [error_line("", 'must be a JSON object: one chain, or {"chains": [...]}')]
        )
    multi = "chains" in data
    schema: Schema = ChainsSchema() if multi else ChainSchema()
    try:
        loaded = schema.load(data)
    except ValidationError as exc:
        raise PaymentConfigError(list(_flatten(exc.messages))) from None
    raws = loaded["chains"] if multi else [loaded]
    return PaymentConfig(
        chains=tuple(
            _chain_spec(raw, f"chains[{i}]" if multi else "", confirmations, base)
            for i, raw in enumerate(raws)
        ),
        source=source,
    )


def read_payment_config(path: Path, *, confirmations: int = 1) -> PaymentConfig:
    """Read, decode and validate the file at ``path`` (PaymentConfigError on any problem)."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise PaymentConfigError(
            [error_line("", f"cannot read {path}: {exc.strerror or exc}")]
        ) from None
    except UnicodeDecodeError:
        raise PaymentConfigError([error_line("", f"{path} is not UTF-8 text")]) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PaymentConfigError([error_line("", f"{path} is not valid JSON: {exc}")]) from None
    return parse_payment_config(
        data, confirmations=confirmations, base_dir=path.parent, source=path
    )


_cache: dict[tuple[str, int], tuple[tuple[int, int, int], PaymentConfig]] = {}
_cache_lock = threading.Lock()


def load_payment_config(settings: Settings) -> PaymentConfig:
    """The settings' PAYMENT_CONFIG, validated; re-read only when the file changes (stat)."""
    path = settings.payment_config_file
    if path is None:
        return PaymentConfig()
    key = (str(path), settings.confirmations)
    try:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        stamp = None
    with _cache_lock:
        cached = _cache.get(key)
    if stamp is not None and cached is not None and cached[0] == stamp:
        return cached[1]
    config = read_payment_config(path, confirmations=settings.confirmations)
    if stamp is not None:
        with _cache_lock:
            _cache[key] = (stamp, config)
    return config

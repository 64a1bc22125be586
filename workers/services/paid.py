"""Paid uploads (protocol.md): storages, prices, quotes, signed nonces with a durable ledger, staging, links.

The views in api/paid are thin: they validate the wire format and call the functions here; the
Celery tasks in workers/paid_tasks.py take over once a quote's files are staged. Errors are
PaidError subclasses whose messages are safe to show a client (api/paid maps them to HTTP).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from occ_protocol.formats import ADDRESS_RE
from occ_protocol.signatures import (
    SignatureError,
    address_bytes,
    is_valid_nonce,
    normalize_address,
    parse_signature,
    verify_owner,
)
from occ_protocol.status import Status
from workers.remote.client import RemoteError, RemoteStorageClient
from workers.settings import ConfigError, Settings
from workers.state.registry import Registry

if TYPE_CHECKING:
    from workers.runtime import Runtime

log = logging.getLogger("workers.services.paid")

OCC_TYPE = "occ"
OCC_DESCRIPTION = "Replicated storage on the gateway's OCC chunk store, paid per GiB-month"
QUOTE_KIND = "quote"
QUOTE_ID_RE = re.compile(r"[0-9a-fA-F]{32}")
GIB = 2**30
SECONDS_PER_MONTH = 2_592_000  # 30 days
MAX_FILES = 1000
MAX_HISTORY_SCAN = 10_000
COPY_BLOCK = 1024 * 1024


# --- errors ---------------------------------------------------------------------------------


class PaidError(Exception):
    """A paid-upload request was refused; ``str(err)`` is safe to show a client."""


class QuoteRequestError(PaidError):
    """A getQuote body is invalid; ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class UnknownQuoteError(PaidError):
    """No such quote."""


class QuoteExpiredError(PaidError):
    """The quote's time to upload has run out."""


class MalformedSignatureError(PaidError):
    """The nonce or signature is not well-formed (hex, 65 bytes, v, low s)."""


class WrongSignerError(PaidError):
    """A well-formed signature by someone other than the quote's owner."""


class QuoteUsedError(PaidError):
    """The quote already received its upload (one upload per quote, ever)."""


class NonceUsedError(PaidError):
    """The nonce is not greater than the last one accepted for this address."""


class FileMismatchError(PaidError):
    """The uploaded files do not match the quote (count, or larger than quoted)."""


class NotReadyError(PaidError):
    """The quote's files are not stored yet (links exist only at status 400)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"Files are not stored yet (status {status})")
        self.status = status


class StorageUnavailableError(PaidError):
    """The storage type's microservice is not registered now, or failed to answer."""


# --- payment options and prices ---------------------------------------------------------------


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
    return _decimal(raw, "PRICE_PER_GIB_MONTH")


def _decimal(raw: str, name: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def payment_options(settings: Settings) -> list[TokenOption]:
    """Return the accepted (chain, token) pairs of the payment configuration (PAYMENT_CONFIG).

    The file is the one workers/devchain.py writes: ``{chain_id, rpc_url, token: {address,
    symbol, decimals}, gateway_address, treasury_address}``; a ``tokens`` list may replace
    ``token`` and a ``chains`` list may hold several such objects. Empty if unconfigured.
    """
    config = settings.payment_config()
    if not config:
        return []
    options = []
    for chain in config.get("chains") or [config]:
        try:
            chain_id = int(chain["chain_id"])
            tokens = chain.get("tokens") or [chain["token"]]
            for token in tokens:
                symbol = str(token.get("symbol") or "TOKEN")
                price = (
                    _decimal(str(token["price_per_gib_month"]), "price_per_gib_month")
                    if "price_per_gib_month" in token
                    else parse_price(settings.price_per_gib_month, symbol)
                )
                options.append(
                    TokenOption(
                        chain_id=chain_id,
                        address=normalize_address(token["address"]),
                        symbol=symbol,
                        decimals=int(token.get("decimals", 18)),
                        price_per_gib_month=price,
                        rpc_url=str(chain.get("rpc_url", "")),
                        gateway_address=normalize_address(chain["gateway_address"]),
                        treasury_address=normalize_address(chain["treasury_address"]),
                    )
                )
        except (KeyError, TypeError, ValueError, SignatureError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"PAYMENT_CONFIG is malformed: {type(exc).__name__}") from None
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
            _decimal(settings.min_price, "MIN_PRICE"),
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
    job = rt.jobs.get(quote_id.lower()) if QUOTE_ID_RE.fullmatch(quote_id) else None
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


# --- signatures, nonces and the durable ledger -----------------------------------------------


def check_signature(
    quote_id: str, nonce: str, signature: str, owner: str, who: str = "the quote's owner"
) -> None:
    """Check that ``owner`` signed signed_text(quote_id, nonce) (protocol.md §2).

    Raises MalformedSignatureError (bad nonce or signature encoding, high s) or WrongSignerError.
    """
    if not is_valid_nonce(nonce):
        raise MalformedSignatureError("nonce must be 1 to 13 decimal digits")
    try:
        parse_signature(signature)
    except SignatureError as exc:
        raise MalformedSignatureError(f"Malformed signature: {exc}") from None
    try:
        verify_owner(quote_id, nonce, signature, owner)
    except SignatureError:
        raise WrongSignerError(f"Signature is not by {who}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_durably(path: Path, obj: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, json.dumps(obj, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        log.error("ledger file %s is unreadable", path.name)
        raise
    return value if isinstance(value, dict) else None


class Ledger:
    """Nonces and consumed quotes, fsync'd as small JSON files beside Redis.

    Redis decides races (atomic Lua check-and-set); the ledger makes the outcome survive a
    Redis rollback: a nonce or quote recorded here is refused even if Redis forgot it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def for_settings(cls, settings: Settings) -> Ledger:
        return cls(settings.storage_dir / "ledger")

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        path = self.root / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _nonce_path(self, address: str) -> Path:
        return self.root / "nonces" / f"{address.lower()}.json"

    def _quote_path(self, quote_id: str) -> Path:
        return self.root / "quotes" / f"{quote_id.lower()}.json"

    def last_nonce(self, address: str) -> int | None:
        """Return the last nonce recorded for ``address`` (None if none)."""
        entry = _read_json(self._nonce_path(address))
        return None if entry is None else int(entry["last"])

    def record_nonce(self, address: str, nonce: int) -> None:
        """Durably raise the last nonce of ``address`` to ``nonce`` (never lowers it)."""
        path = self._nonce_path(address)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(address.lower()):
            last = self.last_nonce(address)
            if last is None or nonce > last:
                _write_json_durably(
                    path, {"address": address.lower(), "last": nonce, "at": time.time()}
                )

    def consumed(self, quote_id: str) -> bool:
        """Return whether the quote's one upload was accepted."""
        return self._quote_path(quote_id).exists()

    def record_consumed(self, quote_id: str, nonce: str) -> None:
        """Durably mark the quote's upload as accepted."""
        path = self._quote_path(quote_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_durably(path, {"quoteId": quote_id.lower(), "nonce": nonce, "at": time.time()})


def claim_nonce(rt: Runtime, address: str, nonce: str) -> None:
    """Accept ``nonce`` for ``address`` only if it is greater than the last one (NonceUsedError).

    The ledger is checked first (a Redis rollback cannot reopen a replay), Redis decides
    concurrent requests atomically, then the ledger records it before any side effect.
    """
    ledger = Ledger.for_settings(rt.settings)
    value = int(nonce)
    last = ledger.last_nonce(address)
    if (last is not None and value <= last) or not rt.jobs.claim_nonce(address, nonce):
        raise NonceUsedError("Nonce already used: it must be greater than the last one")
    ledger.record_nonce(address, value)


# --- staging --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedFile:
    """One staged upload part: its index in the quote, client name (metadata only), size, SHA-256."""

    index: int
    name: str
    length: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quotes_dir(settings: Settings) -> Path:
    return settings.staging_dir / "quotes"


def quote_dir(settings: Settings, quote_id: str) -> Path:
    """Where a quote's accepted files are staged: <staging>/quotes/<quoteId>/<index>."""
    if QUOTE_ID_RE.fullmatch(quote_id) is None:
        raise ValueError("malformed quote id")
    return quotes_dir(settings) / quote_id.lower()


def safe_name(name: str | None, fallback: str) -> str:
    """A client file name reduced to a base name (metadata only, never a path)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "").strip()
    return base[:255] or fallback


def _place(stream: IO[bytes], dest: Path, limit: int) -> tuple[int, str]:
    """Put one part at ``dest`` (hard link of its temp file when possible), fsync, return (size, sha256)."""
    src = getattr(stream, "name", None)
    linked = False
    if isinstance(src, str) and os.path.isabs(src):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()
        try:
            if os.stat(src).st_size > limit:
                raise FileMismatchError("a file is larger than quoted")
            os.link(src, dest)  # same filesystem: the bytes are moved, not copied
            linked = True
        except OSError:
            linked = False
    digest = hashlib.sha256()
    size = 0
    if linked:
        with open(dest, "rb") as f:
            while block := f.read(COPY_BLOCK):
                size += len(block)
                digest.update(block)
            os.fsync(f.fileno())
    else:
        stream.seek(0)
        with open(dest, "xb") as out:
            while block := stream.read(COPY_BLOCK):
                size += len(block)
                if size > limit:
                    raise FileMismatchError("a file is larger than quoted")
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    if size > limit:
        raise FileMismatchError("a file is larger than quoted")
    return size, digest.hexdigest()


def stage_files(
    settings: Settings,
    quote_id: str,
    parts: Sequence[tuple[str | None, IO[bytes]]],
    max_lengths: Sequence[int],
) -> tuple[Path, list[StagedFile]]:
    """Stage upload parts durably in a private attempt directory; return (directory, files).

    Each part i is checked against ``max_lengths[i]`` while it is hashed (FileMismatchError if
    larger). commit_staging() later renames the directory to quote_dir(); on any error here
    the directory is removed.
    """
    attempt = quotes_dir(settings) / f".attempt-{quote_id.lower()}-{secrets.token_hex(8)}"
    attempt.mkdir(parents=True)
    try:
        staged = []
        for i, ((name, stream), limit) in enumerate(zip(parts, max_lengths, strict=True)):
            try:
                size, sha = _place(stream, attempt / str(i), limit)
            except FileMismatchError:
                raise FileMismatchError(
                    f"file {i + 1} is larger than the {limit} bytes quoted"
                ) from None
            staged.append(StagedFile(i, safe_name(name, f"{quote_id}-{i}"), size, sha))
        _fsync_dir(attempt)
    except BaseException:
        shutil.rmtree(attempt, ignore_errors=True)
        raise
    return attempt, staged


def commit_staging(attempt: Path, final: Path) -> None:
    """Rename the attempt directory to the quote's staging directory, durably."""
    if final.exists():  # only the quote's one accepted upload gets here: anything there is stale
        shutil.rmtree(final, ignore_errors=True)
    os.rename(attempt, final)
    _fsync_dir(final.parent)


def remove_staging(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def sha256_file(path: Path) -> tuple[int, str]:
    """Return (size, sha256 hex) of a file, read in blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(COPY_BLOCK):
            size += len(block)
            digest.update(block)
    return size, digest.hexdigest()


# --- upload, links, history -------------------------------------------------------------------


def accept_upload(
    rt: Runtime,
    quote_id: str,
    nonce: str,
    signature: str,
    get_parts: Callable[[], Sequence[tuple[str | None, IO[bytes]]]],
    enqueue: Callable[[str], None],
    now: float | None = None,
) -> dict[str, Any]:
    """Accept the one upload of a quote: check, claim the nonce, stage durably, queue the payment.

    Order (protocol.md §2, §3): quote exists, not expired, signature by its owner, not used
    yet, then the nonce (atomic), then the parts (``get_parts`` parses the body only now) are
    staged with fsync, then the forward-only CAS QUOTED -> PAYMENT_QUEUED decides between
    concurrent uploads (the loser's staged files are removed), the consumption is written to
    the ledger and ``enqueue(quote_id)`` queues the payment task. Returns {"message", "quoteId"}.
    """
    settings = rt.settings
    job = load_quote(rt, quote_id)
    qid = job["id"]
    data = job["data"]
    if (time.time() if now is None else now) > float(data["expiresAt"]):
        raise QuoteExpiredError("Quote expired")
    check_signature(quote_id, nonce, signature, data["userAddress"])
    ledger = Ledger.for_settings(settings)
    if job["status"] != Status.QUOTED or ledger.consumed(qid):
        raise QuoteUsedError("This quote already received its upload")
    if data["type"] != OCC_TYPE and registry(rt).get(data["type"]) is None:
        raise StorageUnavailableError(f"Storage {data['type']!r} is not available now")
    claim_nonce(rt, data["userAddress"], nonce)

    parts = get_parts()
    lengths = [int(n) for n in data["lengths"]]
    if len(parts) != len(lengths):
        raise FileMismatchError(f"expected {len(lengths)} file part(s) as quoted, got {len(parts)}")
    attempt, staged = stage_files(settings, qid, parts, lengths)
    try:
        if not rt.jobs.advance(qid, Status.PAYMENT_QUEUED):
            raise QuoteUsedError("This quote already received its upload")
    except BaseException:
        remove_staging(attempt)
        raise
    ledger.record_consumed(qid, nonce)
    commit_staging(attempt, quote_dir(settings, qid))
    rt.jobs.update_data(
        qid,
        upload={
            "nonce": nonce,
            "signature": signature,
            "files": [f.to_dict() for f in staged],
            "uploadedAt": time.time(),
        },
    )
    enqueue(qid)
    log.info("paid upload accepted", extra={"quote_id": qid})
    return {"message": "Files received: payment is being processed", "quoteId": qid}


def build_links(data: Mapping[str, Any], public_base: str) -> list[dict[str, Any]]:
    """Return the DDO ``files`` objects of a stored quote (protocol.md §7), in upload order."""
    if data.get("type") != OCC_TYPE:
        return [dict(link) for link in data.get("links", [])]
    base = public_base.rstrip("/")
    links = []
    for f in data.get("stored", []):
        link: dict[str, Any] = {
            "type": "url",
            "url": f"{base}/download/{f['file_hash']}",
            "method": "GET",
            "fileHash": f["file_hash"],
            "length": int(f["length"]),
        }
        if f.get("expires_at") is not None:
            link["expiresAt"] = int(f["expires_at"])
        links.append(link)
    return links


def get_links(
    rt: Runtime, quote_id: str, nonce: str, signature: str, public_base: str
) -> list[dict[str, Any]]:
    """Return the links of a stored quote for its owner, with a fresh nonce (protocol.md §7)."""
    job = load_quote(rt, quote_id)
    data = job["data"]
    check_signature(quote_id, nonce, signature, data["userAddress"])
    if job["status"] != Status.DONE:
        raise NotReadyError(job["status"])
    claim_nonce(rt, data["userAddress"], nonce)
    return build_links(data, public_base)


def history_entry(job: Mapping[str, Any]) -> dict[str, Any]:
    data = job["data"]
    return {
        "quoteId": job["id"],
        "type": data.get("type"),
        "status": int(job["status"]),
        "tokenAmount": str(data.get("tokenAmount", "0")),
        "chainId": data.get("chainId"),
        "tokenAddress": data.get("tokenAddress"),
        "createdAt": int(job["created_at"]),
        "expiresAt": data.get("expiresAt"),
        "files": [{"length": int(n)} for n in data.get("lengths", [])],
    }


def get_history(
    rt: Runtime,
    user_address: str,
    nonce: str,
    signature: str,
    page: int,
    page_size: int,
    storage: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Return (total, one page of the user's quotes, newest first), for a fresh signed nonce.

    The signed text uses an empty quoteId (protocol.md §1). ``storage`` filters by type.
    """
    check_signature("", nonce, signature, user_address, "userAddress")
    claim_nonce(rt, user_address, nonce)
    offset = (page - 1) * page_size
    if storage is None:
        total, jobs = rt.jobs.history(user_address, offset, page_size)
        return total, [history_entry(j) for j in jobs]
    _, every = rt.jobs.history(user_address, 0, MAX_HISTORY_SCAN)
    matching = [history_entry(j) for j in every if j["data"].get("type") == storage]
    return len(matching), matching[offset : offset + page_size]

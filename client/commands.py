"""The occ-client commands: each takes the resolved Config, prints its result, returns 0."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from client.cache import load_quote, save_quote
from client.checks import check_address, check_quote_id
from client.config import DEFAULT_DURATION, SECONDS_PER_DAY, Config, emit
from client.erc20 import format_units
from client.errors import ClientError, GatewayError
from client.keys import new_nonce, sign_request
from occ_protocol.formats import NONCE_USED_MESSAGE
from occ_protocol.signatures import signed_text
from occ_protocol.status import Status, is_final, status_name


def duration_seconds(args: argparse.Namespace) -> int:
    if args.days is not None:
        return int(args.days * SECONDS_PER_DAY + 0.5)
    if args.duration is not None:
        return int(args.duration)
    return DEFAULT_DURATION


def describe_amount(cfg: Config, amount: int, token_address: str) -> str:
    dev = cfg.devchain.get("token")
    if isinstance(dev, dict) and str(dev.get("address", "")).lower() == token_address.lower():
        decimals, symbol = dev.get("decimals"), dev.get("symbol")
        if isinstance(decimals, int):
            return f"{format_units(amount, decimals)} {symbol} ({amount} base units)"
    return f"{amount} base units of {token_address}"


def format_expiry(value: Any) -> str:
    try:
        ts = float(value)
    except (TypeError, ValueError):
        return str(value)
    if ts > 1e11:  # milliseconds
        ts /= 1000
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class PaymentFailedError(ClientError):
    """The quote ended in a payment failure (status 200-299)."""


# --- commands --------------------------------------------------------------------------------------


def cmd_types(cfg: Config) -> int:
    emit(cfg.types())
    return 0


def check_file(path: Path) -> Path:
    """Return ``path`` if it is a regular file; else one clear line saying what it is."""
    if path.is_dir():
        raise ClientError(f"{path} is a directory, not a file (give each file to upload)")
    if not path.is_file():
        raise ClientError(f"no such file: {path}")
    return path


def request_quote(cfg: Config, files: Sequence[str]) -> dict[str, Any]:
    args = cfg.args
    paths = [Path(f) for f in files]
    for p in paths:
        check_file(p)
    chain_id, token = cfg.payment(args.type)
    body = {
        "type": args.type,
        "files": [{"length": p.stat().st_size} for p in paths],
        "duration": duration_seconds(args),
        "payment": {"chainId": chain_id, "tokenAddress": token},
        "userAddress": cfg.user_address(),
    }
    quote = cfg.gateway.get_quote(body)
    save_quote(quote, paths)
    return quote


def cmd_quote(cfg: Config) -> int:
    quote = request_quote(cfg, cfg.args.file)
    emit(quote)
    return 0


def approve_target(cfg: Config) -> tuple[int, str, str, int | None]:
    """(amount, spender, token, chainId) from --quote-id, --quote-file or --amount/--spender."""
    args = cfg.args
    quote: dict[str, Any] = {}
    if args.quote_id:
        quote = load_quote(args.quote_id)
    elif args.quote_file:
        try:
            text = (
                sys.stdin.read()
                if args.quote_file == "-"
                else Path(args.quote_file).read_text("utf-8")
            )
            loaded = json.loads(text)
        except (OSError, ValueError) as exc:
            raise ClientError(f"cannot read the quote JSON from {args.quote_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ClientError("the quote file is not a JSON object")
        quote = loaded
    amount_text = args.amount if args.amount is not None else quote.get("tokenAmount")
    if amount_text is None:
        raise ClientError("nothing to approve: pass --quote-id, --quote-file or --amount")
    try:
        amount = int(str(amount_text))
    except ValueError:
        raise ClientError(
            "the amount must be an integer number of the token's smallest unit"
        ) from None
    spender = args.spender or quote.get("approveAddress") or cfg.devchain.get("gateway_address")
    if not spender:
        raise ClientError("no spender: pass --spender (the quote's approveAddress)")
    token = cfg.token_address(args.token, quote.get("tokenAddress"))
    chain_id = quote.get("chainId", args.chain_id)
    return (
        amount,
        check_address(str(spender), "spender"),
        token,
        None if chain_id is None else int(chain_id),
    )


def cmd_approve(cfg: Config) -> int:
    amount, spender, token_address, chain_id = approve_target(cfg)
    account = cfg.account()
    cfg.report.say(f"approving {describe_amount(cfg, amount, token_address)} for {spender}")
    result = cfg.token(token_address, chain_id).approve(account, spender, amount)
    cfg.report.say(f"approve transaction {result['txHash']} mined in block {result['blockNumber']}")
    emit(result)
    return 0


def cmd_sign(cfg: Config) -> int:
    args = cfg.args
    quote_id = args.quote_id
    if quote_id:
        check_quote_id(quote_id)
    account = cfg.account()
    signature = sign_request(bytes(account.key), quote_id, args.nonce)
    if args.json:
        emit(
            {
                "quoteId": quote_id,
                "nonce": args.nonce,
                "signedText": signed_text(quote_id, args.nonce),
                "address": account.address,
                "signature": signature,
            }
        )
    else:
        sys.stdout.write(signature + "\n")
    return 0


def status_record(quote_id: str, code: int) -> dict[str, Any]:
    return {
        "quoteId": quote_id,
        "status": code,
        "name": status_name(code),
        "final": is_final(code),
    }


def cmd_status(cfg: Config) -> int:
    quote_id = check_quote_id(cfg.args.quote_id)
    emit(status_record(quote_id, cfg.gateway.get_status(quote_id)))
    return 0


T = TypeVar("T")
#: Times a signed call is signed again after the gateway answered that its nonce was used.
NONCE_RETRIES = 3


def signed_call(
    cfg: Config, quote_id: str, call: Callable[[str, str], T], after: str | None = None
) -> T:
    """Sign (quoteId, nonce) with a fresh nonce and make ``call(nonce, signature)``.

    Another client of the same wallet may have taken the current second (Ocean's uploader.js
    signs with ``Math.round(Date.now() / 1000)``, up to half a second ahead of the clock); the
    gateway then answers 409 "Nonce already used" and changes nothing, so the call is signed
    again in a later second, at most NONCE_RETRIES times.
    """
    account = cfg.account()
    for attempt in range(NONCE_RETRIES + 1):
        nonce = new_nonce(account.address, after)
        signature = sign_request(bytes(account.key), quote_id, nonce)
        try:
            return call(nonce, signature)
        except GatewayError as e:
            used = e.http_status == 409 and e.message.startswith(NONCE_USED_MESSAGE)
            if not used or attempt == NONCE_RETRIES:
                raise
            cfg.report.say(
                f"nonce {nonce} was already used for this wallet (another client?); "
                "signing again in the next second"
            )
            after = nonce
    raise AssertionError("unreachable")  # pragma: no cover


def signed_link(cfg: Config, quote_id: str, after: str | None = None) -> list[dict[str, Any]]:
    return signed_call(cfg, quote_id, lambda n, sig: cfg.gateway.get_link(quote_id, n, sig), after)


def cmd_link(cfg: Config) -> int:
    emit(signed_link(cfg, check_quote_id(cfg.args.quote_id)))
    return 0


def wait_status(cfg: Config, quote_id: str, timeout: float, interval: float) -> int:
    """Poll getStatus, saying each new status on stderr, until a final one; return it."""
    deadline = time.monotonic() + timeout
    last: int | None = None
    while True:
        code = cfg.gateway.get_status(quote_id)
        if code != last:
            cfg.report.say(f"status {code} {status_name(code)}")
            last = code
        if is_final(code):
            return code
        if code == 0:
            raise ClientError(f"the gateway does not know quote {quote_id} (status 0)")
        if time.monotonic() >= deadline:
            raise ClientError(
                f"gave up after {timeout:g} s: quote {quote_id} is still at {code} {status_name(code)} "
                f"(check later with `occ-client status {quote_id}`)"
            )
        time.sleep(interval)


def confirm_price(cfg: Config, amount: int, meta: dict[str, Any]) -> None:
    """Refuse a price over --max-price; unless --yes, ask on the terminal before approving."""
    decimals = meta.get("decimals") if isinstance(meta.get("decimals"), int) else None
    symbol = meta.get("symbol") or "tokens"
    whole = Decimal(amount) / (Decimal(10) ** decimals) if decimals is not None else None
    price = (
        f"{format_units(amount, decimals)} {symbol}"
        if decimals is not None
        else (f"{amount} base units (the token does not say its decimals)")
    )
    max_price = cfg.args.max_price
    if max_price is not None and (whole is None or whole > max_price):
        raise PaymentFailedError(f"the quote asks {price}, more than --max-price {max_price}")
    if cfg.args.yes:
        return
    if not sys.stdin.isatty():
        raise ClientError(f"the quote asks {price}: pass --yes to approve it without a terminal")
    answer = input(f"Approve a payment of {price}? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise PaymentFailedError("payment not approved")


def cmd_upload_paid(cfg: Config) -> int:
    args = cfg.args
    account = cfg.account()
    quote = request_quote(cfg, args.file)
    quote_id = check_quote_id(str(quote["quoteId"]))
    amount = int(str(quote["tokenAmount"]))
    token_address = str(quote["tokenAddress"])
    spender = str(quote["approveAddress"])
    cfg.report.say(
        f"quote {quote_id}: {describe_amount(cfg, amount, token_address)} on chain {quote['chainId']}, "
        f"expires {format_expiry(quote.get('expiresAt'))}"
    )
    if amount > 0:
        token = cfg.token(token_address, int(quote["chainId"]))
        confirm_price(cfg, amount, token.metadata())
        cfg.report.say(f"approving {spender} to take {amount} base units")
        approval = token.approve(account, spender, amount)
        cfg.report.say(
            f"approve transaction {approval['txHash']} mined in block {approval['blockNumber']}"
        )
    total = sum(Path(f).stat().st_size for f in args.file)
    used: list[str] = []

    def upload(nonce: str, signature: str) -> dict[str, Any]:
        used.append(nonce)
        with cfg.report.bar(total, "upload") as progress:
            return cfg.gateway.upload_paid(quote_id, nonce, signature, args.file, progress)

    answer = signed_call(cfg, quote_id, upload)
    nonce = used[-1]
    cfg.report.say(
        f"uploaded {len(args.file)} file(s), {total} bytes: {answer.get('message', 'accepted')}"
    )
    code = wait_status(cfg, quote_id, args.timeout, args.poll_interval)
    if code != Status.DONE:
        failure = PaymentFailedError if 200 <= code < 300 else ClientError
        raise failure(
            f"quote {quote_id} failed with status {code} {status_name(code)}"
            + (" (payment failure)" if 200 <= code < 300 else " (storage failure)")
        )
    links = signed_link(cfg, quote_id, after=nonce)
    emit(links)
    return 0


def cmd_balance(cfg: Config) -> int:
    args = cfg.args
    token_address = cfg.token_address(args.token)
    owner = check_address(args.address) if args.address else str(cfg.account().address)
    token = cfg.token(token_address)
    balance = token.balance_of(owner)
    meta = token.metadata()
    out: dict[str, Any] = {"address": owner, "token": token_address, "balance": str(balance)}
    if meta["symbol"] is not None:
        out["symbol"] = meta["symbol"]
    if isinstance(meta["decimals"], int):
        out["decimals"] = meta["decimals"]
        out["formatted"] = format_units(balance, meta["decimals"])
    emit(out)
    return 0


def cmd_upload(cfg: Config) -> int:
    args = cfg.args
    path = check_file(Path(args.file))
    with cfg.report.bar(path.stat().st_size, "upload") as progress:
        result = cfg.gateway.upload(path, args.replication_factor, args.raw, progress)
    emit(result)
    return 0


def cmd_download(cfg: Config) -> int:
    args = cfg.args
    target = args.output
    if target is None:
        ref = args.ref.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        target = ref or "download.bin"
    if target != "-" and Path(target).is_dir():
        raise ClientError(f"{target} is a directory: give a file name with -o")
    bar: Any = None

    def on_start(total: int | None) -> None:
        nonlocal bar
        bar = tqdm(
            total=total,
            desc="download",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=None if cfg.report.progress else True,
        )

    try:
        result = cfg.gateway.download(
            args.ref,
            target,
            args.sha256,
            on_start,
            lambda n: bar.update(n) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    if not result["verified"]:
        cfg.report.say(
            f"warning: no hash to check against; SHA-256 of the download is {result['sha256']}"
        )
    if target == "-":
        cfg.report.say(json.dumps(result))
    else:
        emit(result)
    return 0


def cmd_files(cfg: Config) -> int:
    emit(cfg.gateway.files(cfg.args.page, cfg.args.per_page))
    return 0


def cmd_delete(cfg: Config) -> int:
    cfg.gateway.delete(cfg.args.hash)
    emit({"deleted": cfg.args.hash.lower()})
    return 0


def cmd_rebalance(cfg: Config) -> int:
    emit(cfg.gateway.rebalance(cfg.args.hash, cfg.args.replication_factor))
    return 0


def cmd_status_network(cfg: Config) -> int:
    emit(cfg.gateway.network_status())
    return 0


def cmd_history(cfg: Config) -> int:
    """The wallet's quotes, newest first (GET /getHistory, signed over an empty quoteId)."""
    address = cfg.account().address
    emit(
        signed_call(
            cfg,
            "",
            lambda n, sig: cfg.gateway.history(address, n, sig, cfg.args.page, cfg.args.page_size),
        )
    )
    return 0


def cmd_verify(cfg: Config) -> int:
    emit(cfg.gateway.verify(cfg.args.hash))
    return 0


def cmd_job(cfg: Config) -> int:
    emit(cfg.gateway.job(cfg.args.job_id))
    return 0

"""occ-client: the OCC gateway from the command line (paid uploads and the direct storage API).

Results (JSON) go to stdout; progress and messages go to stderr. Every failure is one line on
stderr; the exit status says which kind: 2 usage, 3 network (unreachable, timeout, 5xx, still
rate limited), 4 refused by the gateway (4xx), 5 payment failure, 1 anything else (a storage
failure, a missing file...). Out of the box it talks to a `make run` stack: the
gateway on http://localhost:5000 and the dev chain described by data/devchain.json, whose
test_user key (anvil's public test key #0) signs when no other key is given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from tqdm import tqdm

from client import api
from client.api import ClientError, Gateway
from occ_protocol.formats import is_address, is_nonce
from occ_protocol.signatures import signed_text
from occ_protocol.status import Status, is_final, status_name

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

REPO_ROOT = Path(__file__).resolve().parent.parent
SECONDS_PER_DAY = 86400
DEFAULT_DURATION = 30 * SECONDS_PER_DAY

ENV_GATEWAY = "OCC_GATEWAY"
ENV_DEVCHAIN = "OCC_DEVCHAIN"
ENV_KEY = "OCC_PRIVATE_KEY"
ENV_RPC = "OCC_RPC_URL"
ENV_API_KEY = "OCC_API_KEY"
VERSION = "0.1.0"
MIB = 1024 * 1024
PROGRESS_EVERY_S = 3.0  # a progress line this often when stderr is not a terminal
# exit statuses (issue 12): usage 2, network 3, a 4xx answer 4, a payment failure 5, else 1
EXIT_FAILURE, EXIT_USAGE, EXIT_NETWORK, EXIT_REFUSED, EXIT_PAYMENT = 1, 2, 3, 4, 5


# --- output ----------------------------------------------------------------------------------------


def emit(data: Any) -> None:
    """A result: JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


class Reporter:
    """Messages and progress bars on stderr (silenced by --quiet; bars also by --no-progress)."""

    def __init__(self, quiet: bool = False, progress: bool = True) -> None:
        self.quiet = quiet
        self.progress = progress and not quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    @contextmanager
    def bar(self, total: int | None, desc: str) -> Iterator[Callable[[int], None]]:
        """A progress bar on a terminal; elsewhere (a log, a pipe) a line every few seconds."""
        if self.progress and not sys.stderr.isatty():
            yield from self._lines(total, desc)
            return
        with tqdm(
            total=total,
            desc=desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=not self.progress,
            leave=True,
        ) as t:
            yield t.update

    def _lines(self, total: int | None, desc: str) -> Iterator[Callable[[int], None]]:
        done = 0
        last = time.monotonic()

        def line() -> str:
            of = f" / {total / MIB:.1f} MiB ({100 * done / total:.0f}%)" if total else " MiB"
            return f"{desc}: {done / MIB:.1f}{of}"

        def update(n: int) -> None:
            nonlocal done, last
            done += n
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                self.say(line())

        yield update
        self.say(line())


# --- configuration ---------------------------------------------------------------------------------


def default_devchain() -> str:
    env = os.environ.get(ENV_DEVCHAIN)
    if env is not None:
        return env
    local = Path(api.DEFAULT_DEVCHAIN)
    if local.is_file():
        return str(local)
    return str(REPO_ROOT / api.DEFAULT_DEVCHAIN)


class Config:
    """What a command needs, resolved from flags, environment, the dev-chain JSON and GET /."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.report = Reporter(args.quiet, not args.no_progress)
        if not args.gateway.startswith(("http://", "https://")):
            raise ClientError(
                f"--gateway {args.gateway!r} needs a scheme, e.g. http://{args.gateway}"
            )
        self.gateway = Gateway(args.gateway)
        api_key = args.api_key or os.environ.get(ENV_API_KEY, "")
        if api_key:  # the bearer key of direct uploads, deletes and rebalances (API_KEYS)
            self.gateway.session.headers["Authorization"] = f"Bearer {api_key}"
        self.devchain_path = args.devchain
        if (
            args.devchain
            and args.devchain != default_devchain()
            and not Path(args.devchain).is_file()
        ):
            raise ClientError(
                f"no dev chain file {args.devchain} (`make run` writes data/devchain.json; "
                "pass --devchain '' to use none)"
            )
        self._devchain: dict[str, Any] | None = None
        self._account: LocalAccount | None = None
        self._types: list[dict[str, Any]] | None = None

    @property
    def devchain(self) -> dict[str, Any]:
        if self._devchain is None:
            self._devchain = api.load_devchain(self.devchain_path)
        return self._devchain

    def account(self) -> LocalAccount:
        """The signing key: --key-file, then $OCC_PRIVATE_KEY, then the dev chain's test_user."""
        if self._account is not None:
            return self._account
        test_user = self.devchain.get("test_user")
        dev_key = str(test_user.get("private_key") or "") if isinstance(test_user, dict) else ""
        if self.args.key_file:
            source = f"key file {self.args.key_file}"
            key = api.read_key_file(self.args.key_file)
        elif os.environ.get(ENV_KEY):
            source = f"${ENV_KEY}"
            key = os.environ[ENV_KEY]
        elif dev_key:
            source = f"{self.devchain_path} test_user, a public test key"
            key = dev_key
        else:
            raise ClientError(
                f"no private key: pass --key-file, set ${ENV_KEY}, or start the dev chain with "
                f"`make run` (it writes {api.DEFAULT_DEVCHAIN})"
            )
        self._account = api.load_account(key, source)
        self.report.say(f"signing as {self._account.address} (key from {source})")
        return self._account

    def user_address(self) -> str:
        if getattr(self.args, "address", None):
            return api.check_address(self.args.address)
        return str(self.account().address)

    def rpc_url(self) -> str:
        url = self.args.rpc_url or os.environ.get(ENV_RPC) or self.devchain.get("rpc_url")
        if not url:
            raise ClientError(
                f"no chain RPC URL: pass --rpc-url, set ${ENV_RPC}, or start the dev chain with "
                f"`make run` (it writes {api.DEFAULT_DEVCHAIN})"
            )
        return str(url)

    def types(self) -> list[dict[str, Any]]:
        if self._types is None:
            self._types = self.gateway.types()
        return self._types

    def devchain_token(self) -> str | None:
        token = self.devchain.get("token")
        if isinstance(token, dict) and isinstance(token.get("address"), str):
            return str(token["address"])
        return None

    def payment(self, storage_type: str) -> tuple[int, str]:
        """(chainId, tokenAddress) for a quote: flags, else what GET / accepts (dev chain first)."""
        chain_id: int | None = self.args.chain_id
        token: str | None = self.args.token
        if chain_id is not None and token is not None and is_address(token):
            return chain_id, api.check_address(token, "token address")
        types = self.types()
        prefer_chain = self.devchain.get("chain_id")
        if chain_id is None and prefer_chain is not None:
            try:
                return api.pick_payment(
                    types, storage_type, int(prefer_chain), token, self.devchain_token()
                )
            except (ClientError, ValueError):
                pass  # the gateway is not on the local dev chain: take what it offers
        return api.pick_payment(types, storage_type, chain_id, token, self.devchain_token())

    def token_address(self, given: str | None, fallback: str | None = None) -> str:
        """A token address from --token (address or symbol), the quote, or the dev chain."""
        if given:
            if is_address(given):
                return api.check_address(given, "token address")
            dev = self.devchain.get("token")
            if isinstance(dev, dict) and str(dev.get("symbol", "")).lower() == given.lower():
                return api.check_address(str(dev["address"]), "token address")
            chain_id = getattr(self.args, "chain_id", None) or self.devchain.get("chain_id")
            return api.pick_payment(self.types(), "occ", chain_id, given)[1]
        address = fallback or self.devchain_token()
        if not address:
            raise ClientError("no token: pass --token ADDRESS (or a symbol the gateway accepts)")
        return api.check_address(address, "token address")

    def token(self, address: str, chain_id: int | None = None) -> api.Token:
        return api.Token(self.rpc_url(), address, chain_id)


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
            return f"{api.format_units(amount, decimals)} {symbol} ({amount} base units)"
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
    api.save_quote(quote, paths)
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
        quote = api.load_quote(args.quote_id)
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
        api.check_address(str(spender), "spender"),
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
        api.check_quote_id(quote_id)
    account = cfg.account()
    signature = api.sign_request(bytes(account.key), quote_id, args.nonce)
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
    quote_id = api.check_quote_id(cfg.args.quote_id)
    emit(status_record(quote_id, cfg.gateway.get_status(quote_id)))
    return 0


def signed_link(cfg: Config, quote_id: str, after: str | None = None) -> list[dict[str, Any]]:
    account = cfg.account()
    nonce = api.new_nonce(account.address, after)
    signature = api.sign_request(bytes(account.key), quote_id, nonce)
    return cfg.gateway.get_link(quote_id, nonce, signature)


def cmd_link(cfg: Config) -> int:
    emit(signed_link(cfg, api.check_quote_id(cfg.args.quote_id)))
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
        f"{api.format_units(amount, decimals)} {symbol}"
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
    quote_id = api.check_quote_id(str(quote["quoteId"]))
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
    nonce = api.new_nonce(account.address)
    signature = api.sign_request(bytes(account.key), quote_id, nonce)
    total = sum(Path(f).stat().st_size for f in args.file)
    with cfg.report.bar(total, "upload") as progress:
        answer = cfg.gateway.upload_paid(quote_id, nonce, signature, args.file, progress)
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
    owner = api.check_address(args.address) if args.address else str(cfg.account().address)
    token = cfg.token(token_address)
    balance = token.balance_of(owner)
    meta = token.metadata()
    out: dict[str, Any] = {"address": owner, "token": token_address, "balance": str(balance)}
    if meta["symbol"] is not None:
        out["symbol"] = meta["symbol"]
    if isinstance(meta["decimals"], int):
        out["decimals"] = meta["decimals"]
        out["formatted"] = api.format_units(balance, meta["decimals"])
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
    account = cfg.account()
    nonce = api.new_nonce(account.address)
    signature = api.sign_request(bytes(account.key), "", nonce)
    emit(cfg.gateway.history(account.address, nonce, signature, cfg.args.page, cfg.args.page_size))
    return 0


def cmd_verify(cfg: Config) -> int:
    emit(cfg.gateway.verify(cfg.args.hash))
    return 0


def cmd_job(cfg: Config) -> int:
    emit(cfg.gateway.job(cfg.args.job_id))
    return 0


# --- argument parsing ------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def nonce_arg(text: str) -> str:
    if not is_nonce(text):
        raise argparse.ArgumentTypeError("a nonce is 1 to 13 decimal digits")
    return text


def add_common(p: argparse.ArgumentParser, suppress: bool) -> None:
    """Options accepted before or after the subcommand (defaults live on the top-level parser)."""

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    p.add_argument(
        "--gateway",
        default=d(os.environ.get(ENV_GATEWAY, api.DEFAULT_GATEWAY)),
        help=f"gateway base URL (default ${ENV_GATEWAY} or {api.DEFAULT_GATEWAY})",
    )
    p.add_argument(
        "--devchain",
        default=d(default_devchain()),
        metavar="PATH",
        help=f"dev chain JSON from `make run` (default ${ENV_DEVCHAIN} or {api.DEFAULT_DEVCHAIN}; "
        "used when present; '' to ignore)",
    )
    p.add_argument(
        "--key-file",
        default=d(None),
        metavar="PATH",
        help=f"file holding the hex private key (else ${ENV_KEY}, else the dev chain's test_user)",
    )
    p.add_argument(
        "--rpc-url",
        default=d(None),
        help=f"JSON-RPC URL of the chain (else ${ENV_RPC}, else the dev chain)",
    )
    p.add_argument(
        "--api-key",
        default=d(None),
        metavar="KEY",
        help=f"bearer key for uploads, deletes and rebalances when the gateway sets API_KEYS "
        f"(else ${ENV_API_KEY})",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", default=d(False), help="no messages on stderr"
    )
    p.add_argument("--no-progress", action="store_true", default=d(False), help="no progress bars")


def add_payment_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", default="occ", help="storage type from GET / (default occ)")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--duration", type=non_negative_int, metavar="SECONDS", help="how long to store"
    )
    group.add_argument(
        "--days",
        type=float,
        metavar="N",
        help=f"how long to store, in days (default {DEFAULT_DURATION // 86400})",
    )
    p.add_argument(
        "--token", help="payment token: address or symbol (default: the gateway's first)"
    )
    p.add_argument(
        "--chain-id",
        type=int,
        help="payment chain id (default: the dev chain, else the gateway's first)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="occ-client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"occ-client {VERSION}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    common = Parser(add_help=False)
    add_common(common, suppress=True)

    def command(name: str, func: Callable[[Config], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    command("types", cmd_types, "list storage types and accepted payment (GET /)")

    p = command(
        "quote", cmd_quote, "ask for a quote (POST /getQuote); remembered for `approve --quote-id`"
    )
    p.add_argument(
        "--file", nargs="+", required=True, metavar="PATH", help="the files, in upload order"
    )
    add_payment_options(p)
    p.add_argument("--address", help="quote for this address instead of the key's")

    p = command(
        "approve", cmd_approve, "approve the gateway to take a quote's amount (ERC-20 approve)"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--quote-id", help="a quote obtained with `occ-client quote`")
    src.add_argument(
        "--quote-file", metavar="PATH", help="the getQuote JSON answer ('-' for stdin)"
    )
    p.add_argument("--amount", help="amount in the token's smallest unit (overrides the quote's)")
    p.add_argument("--spender", help="address to approve (default: the quote's approveAddress)")
    p.add_argument(
        "--token", help="token address or symbol (default: the quote's, else the dev chain's)"
    )
    p.add_argument("--chain-id", type=int, help="expected chain id of the RPC")

    p = command(
        "upload-paid",
        cmd_upload_paid,
        "the whole paid upload: quote, approve, sign, upload, wait for status 400, print the links",
    )
    p.add_argument("file", nargs="+", metavar="FILE")
    add_payment_options(p)
    p.add_argument("--yes", action="store_true", help="approve the quoted price without asking")
    p.add_argument(
        "--max-price",
        type=Decimal,
        metavar="TOKENS",
        help="refuse a quote above this many whole tokens (exit 5)",
    )
    p.add_argument(
        "--timeout", type=positive_float, default=600.0, help="seconds to wait for status 400"
    )
    p.add_argument(
        "--poll-interval", type=positive_float, default=0.5, help="seconds between getStatus"
    )

    p = command("status", cmd_status, "status code of a quote (GET /getStatus)")
    p.add_argument("quote_id", metavar="QUOTE_ID")

    p = command(
        "link", cmd_link, "link objects of a stored quote (GET /getLink, signed, fresh nonce)"
    )
    p.add_argument("quote_id", metavar="QUOTE_ID")

    p = command("sign", cmd_sign, "print the EIP-191 signature of a request (for curl)")
    p.add_argument("--quote-id", required=True, help="the quoteId ('' for getHistory)")
    p.add_argument(
        "--nonce", required=True, type=nonce_arg, help="e.g. $(date +%%s), the Unix time in seconds"
    )
    p.add_argument(
        "--json", action="store_true", help="print quoteId, nonce, signed text, address too"
    )

    p = command("balance", cmd_balance, "ERC-20 balance of an address (balanceOf)")
    p.add_argument("--address", help="whose balance (default: the key's address)")
    p.add_argument("--token", help="token address or symbol (default: the dev chain's)")
    p.add_argument("--chain-id", type=int, help=argparse.SUPPRESS)

    p = command("upload", cmd_upload, "direct upload, no payment (POST /upload, or PUT with --raw)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--replication-factor", type=positive_int, metavar="N")
    p.add_argument(
        "--raw", action="store_true", help="stream the file as the body (PUT /upload?name=)"
    )

    p = command("download", cmd_download, "download a file by hash or link URL, check its SHA-256")
    p.add_argument("ref", metavar="HASH_OR_URL")
    p.add_argument(
        "-o", "--output", metavar="PATH", help="where to write ('-' for stdout; default: the hash)"
    )
    p.add_argument("--sha256", help="expected SHA-256 (default: the hash in the URL)")

    p = command("files", cmd_files, "list stored files (GET /files)")
    p.add_argument("--page", type=positive_int, default=1)
    p.add_argument("--per-page", type=positive_int, default=100)

    p = command("verify", cmd_verify, "verify every replica of a file (GET /verify/<hash>)")
    p.add_argument("hash", metavar="HASH")

    p = command("delete", cmd_delete, "delete a stored file (DELETE /files/<hash>)")
    p.add_argument("hash", metavar="HASH")

    p = command("rebalance", cmd_rebalance, "change a file's copies (POST /rebalance/<hash>)")
    p.add_argument("hash", metavar="HASH")
    p.add_argument("--replication-factor", type=positive_int, required=True, metavar="N")

    p = command(
        "status-network", cmd_status_network, "network figures and sketch estimates (GET /status)"
    )

    p = command("history", cmd_history, "your quotes, newest first (GET /getHistory, signed)")
    p.add_argument("--page", type=positive_int, default=1)
    p.add_argument("--page-size", type=positive_int, default=20)

    p = command("job", cmd_job, "a background job's status (GET /jobs/<id>)")
    p.add_argument("job_id", metavar="JOB_ID")
    return parser


def exit_status(exc: ClientError) -> int:
    """The exit status of a failure: 3 network, 4 a 4xx answer, 5 a payment failure, else 1."""
    if isinstance(exc, api.GatewayError):
        if exc.http_status == 429 or exc.http_status >= 500:
            return EXIT_NETWORK
        return EXIT_REFUSED
    if isinstance(exc, api.NetworkError):
        return EXIT_NETWORK
    if isinstance(exc, PaymentFailedError):
        return EXIT_PAYMENT
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``occ-client`` and ``python -m client.cli``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        cfg = Config(args)
        return int(args.func(cfg))
    except ClientError as exc:
        print(f"occ-client: {exc}", file=sys.stderr)
        return exit_status(exc)
    except FileNotFoundError as exc:
        print(f"occ-client: no such file: {exc.filename}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"occ-client: {exc.strerror or type(exc).__name__}: {exc.filename or ''}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("occ-client: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

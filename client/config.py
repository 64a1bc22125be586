"""What a command needs: its configuration from flags, environment and the dev chain, and output.

Results (JSON) go to stdout through ``emit``; messages and progress go to stderr (Reporter).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from client.checks import check_address
from client.erc20 import Token, pick_payment
from client.errors import ClientError
from client.gateway import Gateway
from client.keys import DEFAULT_DEVCHAIN, load_account, load_devchain, read_key_file
from occ_protocol.formats import is_address

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
MIB = 1024 * 1024
PROGRESS_EVERY_S = 3.0  # a progress line this often when stderr is not a terminal

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
    local = Path(DEFAULT_DEVCHAIN)
    if local.is_file():
        return str(local)
    return str(REPO_ROOT / DEFAULT_DEVCHAIN)


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
            self._devchain = load_devchain(self.devchain_path)
        return self._devchain

    def account(self) -> LocalAccount:
        """The signing key: --key-file, then $OCC_PRIVATE_KEY, then the dev chain's test_user."""
        if self._account is not None:
            return self._account
        test_user = self.devchain.get("test_user")
        dev_key = str(test_user.get("private_key") or "") if isinstance(test_user, dict) else ""
        if self.args.key_file:
            source = f"key file {self.args.key_file}"
            key = read_key_file(self.args.key_file)
        elif os.environ.get(ENV_KEY):
            source = f"${ENV_KEY}"
            key = os.environ[ENV_KEY]
        elif dev_key:
            source = f"{self.devchain_path} test_user, a public test key"
            key = dev_key
        else:
            raise ClientError(
                f"no private key: pass --key-file, set ${ENV_KEY}, or start the dev chain with "
                f"`make run` (it writes {DEFAULT_DEVCHAIN})"
            )
        self._account = load_account(key, source)
        self.report.say(f"signing as {self._account.address} (key from {source})")
        return self._account

    def user_address(self) -> str:
        if getattr(self.args, "address", None):
            return check_address(self.args.address)
        return str(self.account().address)

    def rpc_url(self) -> str:
        url = self.args.rpc_url or os.environ.get(ENV_RPC) or self.devchain.get("rpc_url")
        if not url:
            raise ClientError(
                f"no chain RPC URL: pass --rpc-url, set ${ENV_RPC}, or start the dev chain with "
                f"`make run` (it writes {DEFAULT_DEVCHAIN})"
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
            return chain_id, check_address(token, "token address")
        types = self.types()
        prefer_chain = self.devchain.get("chain_id")
        if chain_id is None and prefer_chain is not None:
            try:
                return pick_payment(
                    types, storage_type, int(prefer_chain), token, self.devchain_token()
                )
            except (ClientError, ValueError):
                pass  # the gateway is not on the local dev chain: take what it offers
        return pick_payment(types, storage_type, chain_id, token, self.devchain_token())

    def token_address(self, given: str | None, fallback: str | None = None) -> str:
        """A token address from --token (address or symbol), the quote, or the dev chain."""
        if given:
            if is_address(given):
                return check_address(given, "token address")
            dev = self.devchain.get("token")
            if isinstance(dev, dict) and str(dev.get("symbol", "")).lower() == given.lower():
                return check_address(str(dev["address"]), "token address")
            chain_id = getattr(self.args, "chain_id", None) or self.devchain.get("chain_id")
            return pick_payment(self.types(), "occ", chain_id, given)[1]
        address = fallback or self.devchain_token()
        if not address:
            raise ClientError("no token: pass --token ADDRESS (or a symbol the gateway accepts)")
        return check_address(address, "token address")

    def token(self, address: str, chain_id: int | None = None) -> Token:
        return Token(self.rpc_url(), address, chain_id)

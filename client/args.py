"""The command line's argument types and shared options (the commands are in ``client/cli.py``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from client.config import (
    DEFAULT_DURATION,
    ENV_API_KEY,
    ENV_DEVCHAIN,
    ENV_GATEWAY,
    ENV_KEY,
    ENV_RPC,
    default_devchain,
)
from client.gateway import DEFAULT_GATEWAY
from client.keys import DEFAULT_DEVCHAIN
from occ_protocol.formats import is_nonce


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


Number = TypeVar("Number", int, float)


def bounded(
    convert: Callable[[str], Number], noun: str, ok: Callable[[Number], bool], rule: str
) -> Callable[[str], Number]:
    """An argparse type: ``convert`` the text (else "not <noun>"), then require ``ok`` (else rule)."""

    def parse(text: str) -> Number:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(rule)
        return value

    parse.__name__ = convert.__name__
    return parse


positive_int = bounded(int, "an integer", lambda v: v >= 1, "must be at least 1")
non_negative_int = bounded(int, "an integer", lambda v: v >= 0, "must not be negative")
positive_float = bounded(float, "a number", lambda v: v > 0, "must be positive")


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
        default=d(os.environ.get(ENV_GATEWAY, DEFAULT_GATEWAY)),
        help=f"gateway base URL (default ${ENV_GATEWAY} or {DEFAULT_GATEWAY})",
    )
    p.add_argument(
        "--devchain",
        default=d(default_devchain()),
        metavar="PATH",
        help=f"dev chain JSON from `make run` (default ${ENV_DEVCHAIN} or {DEFAULT_DEVCHAIN}; "
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

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
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal

from client import commands as c
from client.args import (
    Parser,
    add_common,
    add_payment_options,
    nonce_arg,
    positive_float,
    positive_int,
)
from client.config import Config
from client.errors import ClientError, GatewayError, NetworkError

VERSION = "0.1.0"
# exit statuses (issue 12): usage 2, network 3, a 4xx answer 4, a payment failure 5, else 1
EXIT_FAILURE, EXIT_USAGE, EXIT_NETWORK, EXIT_REFUSED, EXIT_PAYMENT = 1, 2, 3, 4, 5


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

    command("types", c.cmd_types, "list storage types and accepted payment (GET /)")

    p = command(
        "quote",
        c.cmd_quote,
        "ask for a quote (POST /getQuote); remembered for `approve --quote-id`",
    )
    p.add_argument(
        "--file", nargs="+", required=True, metavar="PATH", help="the files, in upload order"
    )
    add_payment_options(p)
    p.add_argument("--address", help="quote for this address instead of the key's")

    p = command(
        "approve", c.cmd_approve, "approve the gateway to take a quote's amount (ERC-20 approve)"
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
        c.cmd_upload_paid,
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

    p = command("status", c.cmd_status, "status code of a quote (GET /getStatus)")
    p.add_argument("quote_id", metavar="QUOTE_ID")

    p = command(
        "link", c.cmd_link, "link objects of a stored quote (GET /getLink, signed, fresh nonce)"
    )
    p.add_argument("quote_id", metavar="QUOTE_ID")

    p = command("sign", c.cmd_sign, "print the EIP-191 signature of a request (for curl)")
    p.add_argument("--quote-id", required=True, help="the quoteId ('' for getHistory)")
    p.add_argument(
        "--nonce", required=True, type=nonce_arg, help="e.g. $(date +%%s), the Unix time in seconds"
    )
    p.add_argument(
        "--json", action="store_true", help="print quoteId, nonce, signed text, address too"
    )

    p = command("balance", c.cmd_balance, "ERC-20 balance of an address (balanceOf)")
    p.add_argument("--address", help="whose balance (default: the key's address)")
    p.add_argument("--token", help="token address or symbol (default: the dev chain's)")
    p.add_argument("--chain-id", type=int, help=argparse.SUPPRESS)

    p = command(
        "upload", c.cmd_upload, "direct upload, no payment (POST /upload, or PUT with --raw)"
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--replication-factor", type=positive_int, metavar="N")
    p.add_argument(
        "--raw", action="store_true", help="stream the file as the body (PUT /upload?name=)"
    )

    p = command(
        "download", c.cmd_download, "download a file by hash or link URL, check its SHA-256"
    )
    p.add_argument("ref", metavar="HASH_OR_URL")
    p.add_argument(
        "-o", "--output", metavar="PATH", help="where to write ('-' for stdout; default: the hash)"
    )
    p.add_argument("--sha256", help="expected SHA-256 (default: the hash in the URL)")

    p = command("files", c.cmd_files, "list stored files (GET /files)")
    p.add_argument("--page", type=positive_int, default=1)
    p.add_argument("--per-page", type=positive_int, default=100)

    p = command("verify", c.cmd_verify, "verify every replica of a file (GET /verify/<hash>)")
    p.add_argument("hash", metavar="HASH")

    p = command("delete", c.cmd_delete, "delete a stored file (DELETE /files/<hash>)")
    p.add_argument("hash", metavar="HASH")

    p = command("rebalance", c.cmd_rebalance, "change a file's copies (POST /rebalance/<hash>)")
    p.add_argument("hash", metavar="HASH")
    p.add_argument("--replication-factor", type=positive_int, required=True, metavar="N")

    p = command(
        "status-network", c.cmd_status_network, "network figures and sketch estimates (GET /status)"
    )

    p = command("history", c.cmd_history, "your quotes, newest first (GET /getHistory, signed)")
    p.add_argument("--page", type=positive_int, default=1)
    p.add_argument("--page-size", type=positive_int, default=20)

    p = command("job", c.cmd_job, "a background job's status (GET /jobs/<id>)")
    p.add_argument("job_id", metavar="JOB_ID")
    return parser


def exit_status(exc: ClientError) -> int:
    """The exit status of a failure: 3 network, 4 a 4xx answer, 5 a payment failure, else 1."""
    if isinstance(exc, GatewayError):
        if exc.http_status == 429 or exc.http_status >= 500:
            return EXIT_NETWORK
        return EXIT_REFUSED
    if isinstance(exc, NetworkError):
        return EXIT_NETWORK
    if isinstance(exc, c.PaymentFailedError):
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

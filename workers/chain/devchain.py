"""Local dev chain: start anvil, deploy the OCC test token and write the chain config file.

Usage:
    python -m workers.chain.devchain up --port 8545 --out data/devchain.json
    python -m workers.chain.devchain up --port 8546 --chain-id 31338 --symbol USDT --decimals 6 \
        --out data/devchain-b.json
    python -m workers.chain.devchain deploy --rpc http://127.0.0.1:8545 --out data/devchain.json
    python -m workers.chain.devchain path

The file written is a valid PAYMENT_CONFIG (workers/payment_config.py) of one chain; the extra
keys it holds (deployer, funded accounts, the public test user) are informational.

Over ~400 lines because the CLI, anvil's lifecycle (free port, start, wait, stop) and the
token deployment share one config file format and one process handling; apart they would drift.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3

from workers.chain.payments import TOKEN_ARTIFACT, build_fee_fields, load_token_artifact

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_RELATIVE = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_node_deps.sh"

CHAIN_ID = 31337  # anvil's default; `--chain-id` gives another
TOKEN_NAME = "OCC Test Token"
TOKEN_SYMBOL = "OCCT"
# anvil's default mnemonic: its accounts and keys are public test fixtures, never real funds.
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
DEPLOYER_INDEX = 0  # owns the token; also the walk-through test user (protocol.md §2 key)
GATEWAY_INDEX = 1  # the approveAddress: sends transferFrom for payments and refunds
TREASURY_INDEX = 2  # receives payments; approves the gateway for refunds
FUNDED_ACCOUNTS = range(5)  # #0..#4 each get MINT_PER_ACCOUNT tokens
TOKEN_DECIMALS = 18
MINT_WHOLE_TOKENS = 1_000_000  # per funded account, in whole tokens (x 10^decimals)
MINT_PER_ACCOUNT = MINT_WHOLE_TOKENS * 10**TOKEN_DECIMALS  # of the default 18-decimal token
MAX_UINT256 = 2**256 - 1


class DevchainError(RuntimeError):
    """anvil could not be found, started or deployed to."""


def dev_account(index: int) -> LocalAccount:
    """Return anvil's default-mnemonic account number ``index`` (public test keys)."""
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(
        DEFAULT_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"
    )
    return account


def anvil_path() -> Path:
    """Return the anvil binary: $ANVIL_BIN, else node_modules (npm package), else $PATH.

    Raises DevchainError if none exists (run scripts/install_node_deps.sh).
    """
    env = os.environ.get("ANVIL_BIN")
    if env:
        return Path(env)
    bundled = REPO_ROOT / ANVIL_RELATIVE
    if bundled.is_file():
        return bundled
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise DevchainError(f"anvil not found: run {INSTALL_SCRIPT.relative_to(REPO_ROOT)}")


def ensure_anvil() -> Path:
    """Return anvil_path(), running scripts/install_node_deps.sh first if anvil is missing."""
    try:
        return anvil_path()
    except DevchainError:
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, stdout=subprocess.DEVNULL)
        return anvil_path()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Return True if nothing listens on ``host:port`` and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port in TIME_WAIT is free; a live listener still refuses the bind
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def rpc_chain_id(rpc_url: str, timeout: float = 2.0) -> int:
    """Return eth_chainId of the node at ``rpc_url`` (raises OSError/ValueError if it fails)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(
        rpc_url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(json.loads(response.read())["result"], 16)


def start_anvil(
    port: int,
    host: str = "127.0.0.1",
    *,
    timeout: float = 30.0,
    block_time: float | None = None,
    extra_args: Sequence[str] = (),
    chain_id: int = CHAIN_ID,
) -> subprocess.Popen[bytes]:
    """Start anvil (chain id ``chain_id``, default mnemonic, quiet) and return it once RPC answers.

    ``block_time`` None means automine (one block per transaction). The process runs in its
    own session, so a terminal's Ctrl-C reaches only its parent; stop it with stop_anvil().
    """
    cmd = [
        str(ensure_anvil()),
        "--host",
        host,
        "--port",
        str(port),
        "--chain-id",
        str(chain_id),
        "--mnemonic",
        DEFAULT_MNEMONIC,
        "--accounts",
        "10",
        "--threads",
        "1",
        "--quiet",
    ]
    if block_time is not None:
        cmd += ["--block-time", str(block_time)]
    cmd += list(extra_args)
    if not port_is_free(port, host):
        # never mistake another node already on this port for the one we start
        raise DevchainError(f"port {port} on {host} is already in use")
    rpc_url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
        while True:
            if proc.poll() is not None:
                errors.seek(0)
                detail = errors.read().decode(errors="replace").strip()[-2000:]
                raise DevchainError(f"anvil exited with {proc.returncode}: {detail}")
            try:
                if rpc_chain_id(rpc_url, timeout=1.0) == chain_id and proc.poll() is None:
                    return proc
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                stop_anvil(proc)
                raise DevchainError(f"anvil did not answer on {rpc_url} within {timeout} s")
            time.sleep(0.05)


def stop_anvil(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop an anvil started by start_anvil (SIGTERM, then SIGKILL after ``timeout``)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def send_transaction(
    w3: Web3, account: LocalAccount, tx: dict[str, Any], nonce: int | None = None
) -> bytes:
    """Sign ``tx`` locally with ``account`` (fees and gas filled in), send it, return its hash.

    ``nonce`` defaults to the account's pending transaction count.
    """
    if nonce is None:
        nonce = w3.eth.get_transaction_count(account.address, "pending")
    tx = {**tx, "from": account.address, "nonce": nonce, "chainId": w3.eth.chain_id}
    tx.update(build_fee_fields(w3))
    if "gas" not in tx:
        tx["gas"] = w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
    signed = account.sign_transaction(tx)
    return bytes(w3.eth.send_raw_transaction(signed.raw_transaction))


def _wait_ok(w3: Web3, tx_hashes: Sequence[bytes], what: str) -> list[Any]:
    receipts = []
    for tx_hash in tx_hashes:
        receipt = w3.eth.wait_for_transaction_receipt(
            HexBytes(tx_hash), timeout=60, poll_latency=0.05
        )
        if receipt["status"] != 1:
            raise DevchainError(f"{what} reverted: 0x{tx_hash.hex()}")
        receipts.append(receipt)
    return receipts


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path`` with mode 0600 (created that way, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secret + "\n").encode())
    finally:
        os.close(fd)


def deploy_token(
    w3: Web3,
    owner: LocalAccount,
    artifact: dict[str, Any] | None = None,
    *,
    name: str = TOKEN_NAME,
    symbol: str = TOKEN_SYMBOL,
    decimals: int = TOKEN_DECIMALS,
) -> str:
    """Deploy a fresh TestToken(name, symbol, decimals) owned by ``owner``; return its address."""
    if not 0 <= decimals <= 36:
        raise DevchainError(f"decimals must be between 0 and 36, got {decimals}")
    artifact = artifact or load_token_artifact()
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = factory.constructor(name, symbol, decimals).build_transaction(
        {"from": owner.address, "gas": 3_000_000}
    )
    nonce = w3.eth.get_transaction_count(owner.address, "pending")
    tx_hash = send_transaction(w3, owner, {"data": tx["data"], "gas": tx["gas"]}, nonce)
    (receipt,) = _wait_ok(w3, [tx_hash], "token deployment")
    return Web3.to_checksum_address(receipt["contractAddress"])


def deploy(
    rpc_url: str,
    out_path: str | os.PathLike[str],
    *,
    name: str = TOKEN_NAME,
    symbol: str = TOKEN_SYMBOL,
    decimals: int = TOKEN_DECIMALS,
) -> dict[str, Any]:
    """Deploy TestToken(name, symbol, decimals) at ``rpc_url``, fund accounts, write the config.

    Mints 1,000,000 whole tokens to accounts #0..#4, makes the treasury (#2) approve the gateway
    wallet (#1) for refunds (max allowance), writes the gateway key to
    ``<out stem>.gateway.key`` (mode 0600) and the config JSON to ``out_path``.
    Returns the config dict (the same as the JSON file).
    """
    out = Path(out_path).resolve()
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    chain_id = w3.eth.chain_id
    artifact = load_token_artifact()
    deployer = dev_account(DEPLOYER_INDEX)
    gateway = dev_account(GATEWAY_INDEX)
    treasury = dev_account(TREASURY_INDEX)

    token_address = deploy_token(
        w3, deployer, artifact, name=name, symbol=symbol, decimals=decimals
    )
    token = w3.eth.contract(address=token_address, abi=artifact["abi"])  # type: ignore[call-overload]

    hashes = []
    nonce = int(w3.eth.get_transaction_count(deployer.address, "pending"))
    for index in FUNDED_ACCOUNTS:
        to = dev_account(index).address
        data = token.encode_abi("mint", args=[to, MINT_WHOLE_TOKENS * 10**decimals])
        hashes.append(send_transaction(w3, deployer, {"to": token_address, "data": data}, nonce))
        nonce += 1
    _wait_ok(w3, hashes, "mint")
    data = token.encode_abi("approve", args=[gateway.address, MAX_UINT256])
    treasury_nonce = w3.eth.get_transaction_count(treasury.address, "pending")
    _wait_ok(
        w3,
        [send_transaction(w3, treasury, {"to": token_address, "data": data}, treasury_nonce)],
        "treasury approve",
    )

    key_file = out.with_name(out.stem + ".gateway.key")
    write_secret(key_file, "0x" + bytes(gateway.key).hex())
    user = dev_account(DEPLOYER_INDEX)
    config: dict[str, Any] = {
        "chain_id": chain_id,
        "rpc_url": rpc_url,
        "token": {
            "address": token_address,
            "name": token.functions.name().call(),
            "symbol": token.functions.symbol().call(),
            "decimals": token.functions.decimals().call(),
        },
        "token_artifact": str(TOKEN_ARTIFACT),
        "deployer_address": deployer.address,
        "gateway_address": gateway.address,
        "gateway_key_file": str(key_file),
        "treasury_address": treasury.address,
        "funded_accounts": [dev_account(i).address for i in FUNDED_ACCOUNTS],
        # anvil account #0: the public protocol.md §2 test-vector key, for the walk-through.
        "test_user": {"address": user.address, "private_key": "0x" + bytes(user.key).hex()},
        "deployed_block": w3.eth.block_number,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, out)
    log.info("deployed %s at %s on chain %s", config["token"]["symbol"], token_address, chain_id)
    return config


def _summary(config: dict[str, Any]) -> str:
    return (
        f"chain {config['chain_id']} at {config['rpc_url']}: "
        f"{config['token']['symbol']} {config['token']['address']}, "
        f"gateway {config['gateway_address']}, treasury {config['treasury_address']}"
    )


def _cmd_up(args: argparse.Namespace) -> int:
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    proc = start_anvil(args.port, args.host, chain_id=args.chain_id)
    try:
        rpc_url = f"http://{args.host}:{args.port}"
        config = deploy(rpc_url, args.out, **_token_args(args))
        print(_summary(config), flush=True)
        print(f"config written to {args.out}", flush=True)
        while not stop:
            if proc.poll() is not None:
                print(f"anvil exited with {proc.returncode}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        stop_anvil(proc)


def _token_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"name": args.name, "symbol": args.symbol, "decimals": args.decimals}


def _add_token_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=TOKEN_NAME, help=f"token name (default {TOKEN_NAME!r})")
    p.add_argument("--symbol", default=TOKEN_SYMBOL, help=f"token symbol (default {TOKEN_SYMBOL})")
    p.add_argument(
        "--decimals",
        type=int,
        choices=range(37),
        metavar="0..36",
        default=TOKEN_DECIMALS,
        help=f"token decimals (default {TOKEN_DECIMALS})",
    )


def _cmd_deploy(args: argparse.Namespace) -> int:
    if args.chain_id is not None and rpc_chain_id(args.rpc) != args.chain_id:
        raise DevchainError(f"{args.rpc} does not serve chain {args.chain_id}")
    config = deploy(args.rpc, args.out, **_token_args(args))
    print(_summary(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m workers.chain.devchain``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m workers.chain.devchain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start anvil, deploy, stay in the foreground until signalled")
    up.add_argument("--port", type=int, default=8545)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--out", default="data/devchain.json")
    up.add_argument("--chain-id", type=int, default=CHAIN_ID, help=f"default {CHAIN_ID}")
    _add_token_args(up)
    dep = sub.add_parser("deploy", help="deploy to a running node and write the config")
    dep.add_argument("--rpc", default="http://127.0.0.1:8545")
    dep.add_argument("--out", default="data/devchain.json")
    dep.add_argument(
        "--chain-id", type=int, default=None, help="refuse a node serving another chain id"
    )
    _add_token_args(dep)
    sub.add_parser("path", help="print the anvil binary path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "up":
            return _cmd_up(args)
        if args.command == "deploy":
            return _cmd_deploy(args)
        print(anvil_path())
        return 0
    except DevchainError as exc:
        print(f"devchain: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

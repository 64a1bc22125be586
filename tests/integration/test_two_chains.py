"""One gateway, two chains (issue 13 item 6): two anvil instances with different chain ids and
tokens (18 and 6 decimals), one stack (redis-server, a Celery worker, gunicorn) configured with
both through one PAYMENT_CONFIG; a paid upload on each lands on that chain's treasury only, and
`python -m workers.check --rpc` refuses an RPC URL that serves the other chain."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from client import nonces
from occ_protocol.signatures import sign_text, signed_text
from occ_protocol.status import Status
from tests.fixtures.chain import ChainEnv, start_chain
from tests.fixtures.services import ROOT, RedisServer, Stack, free_port, stack_env, wait_for
from workers.chain import devchain

pytestmark = pytest.mark.integration

REDIS_DB = 5
CHAIN_A, CHAIN_B = 31337, 31338


@dataclass
class TwoChains:
    base: str
    stack: Stack
    a: ChainEnv
    b: ChainEnv
    config: dict[str, Any]
    config_path: Path
    nonce_file: Path


@pytest.fixture(scope="module")
def two(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoChains]:
    root = tmp_path_factory.mktemp("two-chains")
    started: list[ChainEnv] = []
    client = redis.Redis(port=redis_server.port, db=REDIS_DB)
    client.flushdb()
    stack: Stack | None = None
    try:
        started.append(start_chain(root, CHAIN_A, symbol="OCEANT", decimals=18))
        # one empty transaction first: chain B's token gets another address than chain A's
        started.append(start_chain(root, CHAIN_B, symbol="USDT", decimals=6, skip_nonces=1))
        a, b = started
        assert a.token_address != b.token_address
        config = {
            "chains": [
                dict(a.config, name="chain A"),
                dict(b.config, name="chain B", confirmations=2),
            ]
        }
        config_path = root / "payments.json"
        config_path.write_text(json.dumps(config, indent=2))
        (root / "logs").mkdir()
        env = stack_env(
            f"redis://127.0.0.1:{redis_server.port}/{REDIS_DB}",
            root / "storage",
            PAYMENT_CONFIG=str(config_path),
            GATEWAY_KEY_FILE="",  # each chain names its own (the dev chain's file does)
            CONFIRMATIONS="1",
            PRIVATE_PORT=str(free_port()),
        )
        stack = Stack(env, root / "storage", logs=root / "logs")
        stack.start_worker("two", concurrency=2)
        port = free_port()
        stack.start_gunicorn(port, workers=1)
        yield TwoChains(
            f"http://127.0.0.1:{port}", stack, a, b, config, config_path, root / "nonces.json"
        )
    finally:
        if stack is not None:
            stack.stop_all()
        for chain in started:
            devchain.stop_anvil(chain.process)
        client.flushdb()


def quote(base: str, user: str, chain_id: int, token: str, length: int) -> requests.Response:
    body = {
        "type": "occ",
        "files": [{"length": length}],
        "duration": 3600,
        "payment": {"chainId": chain_id, "tokenAddress": token},
        "userAddress": user,
    }
    return requests.post(f"{base}/getQuote", json=body, timeout=10)


def check_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.check", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_storages_list_both_chains(two: TwoChains) -> None:
    storages = requests.get(f"{two.base}/", timeout=10).json()
    occ = next(s for s in storages if s["type"] == "occ")
    assert occ["payment"] == [
        {"chainId": CHAIN_A, "acceptedTokens": [{"title": "OCEANT", "value": two.a.token_address}]},
        {"chainId": CHAIN_B, "acceptedTokens": [{"title": "USDT", "value": two.b.token_address}]},
    ]


@pytest.mark.parametrize("which", ["a", "b"])
def test_a_paid_upload_on_each_chain_pays_that_chains_treasury(two: TwoChains, which: str) -> None:
    chain, other = (two.a, two.b) if which == "a" else (two.b, two.a)
    chain_id = CHAIN_A if which == "a" else CHAIN_B
    decimals = 18 if which == "a" else 6
    user = chain.users[0]
    data = f"two chains, paid on {chain_id}".encode()
    started = time.monotonic()
    resp = quote(two.base, user.address, chain_id, chain.token_address, len(data))
    assert resp.status_code == 200, resp.text
    q = resp.json()
    # MIN_PRICE (0.001 whole tokens) in the token's own decimals: price x 10^decimals
    assert q["tokenAmount"] == str(10 ** (decimals - 3))
    assert (q["chainId"], q["tokenAddress"]) == (chain_id, chain.token_address)
    amount = int(q["tokenAmount"])
    before = {
        "treasury": chain.balance(chain.treasury.address),
        "user": chain.balance(user.address),
        "other treasury": other.balance(other.treasury.address),
        "other user": other.balance(user.address),
    }
    chain.token_call(user, "approve", q["approveAddress"], amount)
    nonce = nonces.next_nonce(user.address, path=two.nonce_file)  # whole seconds (uploader.js)
    params = {
        "quoteId": q["quoteId"],
        "nonce": nonce,
        "signature": sign_text(user.key, signed_text(q["quoteId"], nonce)),
    }
    up = requests.post(
        f"{two.base}/upload", params=params, files=[("file1", ("f.bin", data))], timeout=30
    )
    assert up.status_code == 200, up.text

    seen: set[int] = set()

    def final() -> int | None:
        code = int(
            requests.get(
                f"{two.base}/getStatus", params={"quoteId": q["quoteId"]}, timeout=10
            ).json()["status"]
        )
        seen.add(code)
        if code == Status.PAYMENT_CONFIRMING:
            chain.mine(1)  # automine makes no block without a transaction
        return code if Status(code).final else None

    try:
        assert wait_for(final, 60, f"quote on chain {chain_id}", 0.1) == Status.DONE
    except TimeoutError:
        print(two.stack.log_text())
        raise
    print(f"chain {chain_id}: quote -> DONE in {time.monotonic() - started:.1f} s")
    # chain B asks 2 confirmations (its own), chain A 1 (CONFIRMATIONS): only B waits for one more
    assert (Status.PAYMENT_CONFIRMING in seen) == (which == "b"), seen
    assert chain.balance(chain.treasury.address) == before["treasury"] + amount
    assert chain.balance(user.address) == before["user"] - amount
    assert other.balance(other.treasury.address) == before["other treasury"]  # untouched
    assert other.balance(user.address) == before["other user"]


def test_a_token_of_another_chain_is_refused(two: TwoChains) -> None:
    user = two.b.users[1].address
    resp = quote(two.base, user, CHAIN_B, two.a.token_address, 10)
    assert resp.status_code == 400, resp.text
    assert "tokenAddress" in resp.json()["message"]
    assert quote(two.base, user, 1, two.a.token_address, 10).status_code == 400


def test_check_passes_both_chains_and_refuses_an_rpc_serving_the_other(two: TwoChains) -> None:
    good = check_cli(two.stack.env, "--rpc")
    assert good.returncode == 0, good.stderr
    assert good.stdout == "config ok: 2 chains, 2 tokens\n"
    wrong = json.loads(json.dumps(two.config))
    wrong["chains"][1]["rpc_url"] = two.a.rpc_url
    path = two.config_path.with_name("wrong.json")
    path.write_text(json.dumps(wrong))
    bad = check_cli({**two.stack.env, "PAYMENT_CONFIG": str(path)}, "--rpc")
    assert bad.returncode == 78
    assert bad.stderr.splitlines() == [
        f"PAYMENT_CONFIG chains[1].rpc_url: {two.a.rpc_url} serves chain {CHAIN_A}, "
        f"not chain_id {CHAIN_B}"
    ]
    assert bad.stdout == ""

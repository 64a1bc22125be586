"""Paid uploads end to end: real anvil, redis-server, gunicorn and a Celery worker process (reliability rows 9, 11, 12).

One gateway stack serves the module. The worker reaches anvil through a small JSON-RPC proxy
that can hold the next eth_sendRawTransaction for a moment: the test then sees the job at
PAYMENT_SENT (transaction recorded, broadcast in flight) and SIGKILLs the worker's pool process
right there, or deletes the staged files to force a storing failure after payment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from web3 import Web3

from api import create_app
from occ_protocol.signatures import SECP256K1_N, sign_text, signed_text
from occ_protocol.status import Status
from occ_storage.nodes import TEMP_PREFIX, LocalDirNode
from tests.fakes.microservice import MICROSERVICE_ADDRESS, FakeMicroservice
from tests.fixtures.chain import ChainEnv
from tests.fixtures.chaos import record, scale
from tests.fixtures.promises import check_paid_promises, files_outside
from tests.fixtures.services import (
    VENV_BIN,
    RedisServer,
    Stack,
    all_chunk_files,
    bad_chunk_files,
    free_port,
    stack_env,
    wait_for,
)
from workers.chain.devchain import MAX_UINT256
from workers.chain.payments import TRANSFER_TOPIC
from workers.runtime import Runtime
from workers.services.paid.flow import MAX_ATTEMPTS, expire_files, redrive_paid_jobs
from workers.settings import Settings
from workers.state import keys
from workers.state.jobs import Jobs

pytestmark = pytest.mark.integration

REDIS_DB = 2  # the module's gateway; the rejection matrix uses REDIS_DB + 1 (no worker there)
CALLDATA = 4 + 3 * 32  # transferFrom(address,address,uint256); the quote id tag follows


# --- a JSON-RPC proxy that can hold one broadcast ------------------------------------------------


class RpcProxy:
    """Forwards JSON-RPC to anvil; arm() holds the next eth_sendRawTransaction for ``delay`` seconds.

    mode "forward" then sends it on (its reply goes to a process that may be dead), "drop" never
    sends it. ``sent`` lists the hash of every raw transaction the worker tried to broadcast.
    """

    def __init__(self, upstream: str, delay: float = 1.0) -> None:
        self.upstream = upstream
        self.delay = delay
        self.armed: str | None = None
        self.held = threading.Event()
        self.sent: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    req = json.loads(body)
                except ValueError:
                    req = None
                if isinstance(req, dict) and req.get("method") == "eth_sendRawTransaction":
                    with proxy._lock:
                        proxy.sent.append(
                            Web3.keccak(hexstr=req["params"][0]).hex().removeprefix("0x")
                        )
                        mode, proxy.armed = proxy.armed, None
                    if mode:
                        proxy.held.set()
                        time.sleep(proxy.delay)
                        if mode == "drop":
                            self.close_connection = True
                            return
                upstream = requests.post(
                    proxy.upstream,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
                try:
                    self.send_response(upstream.status_code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(upstream.content)))
                    self.end_headers()
                    self.wfile.write(upstream.content)
                except OSError:
                    self.close_connection = True  # the caller was killed meanwhile

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def arm(self, mode: str) -> None:
        self.held.clear()
        self.armed = mode

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the gateway stack -------------------------------------------------------------------------


@dataclass
class Gateway:
    base: str
    stack: Stack
    worker: subprocess.Popen[bytes]
    proxy: RpcProxy
    chain: ChainEnv
    redis: redis.Redis
    jobs: Jobs

    @property
    def staging(self) -> Path:
        return self.stack.storage_dir / "staging" / "quotes"


@pytest.fixture(scope="module")
def gateway(
    redis_server: RedisServer, anvil: ChainEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("paid")
    client = redis.Redis(port=redis_server.port, db=REDIS_DB)
    client.flushdb()
    proxy = RpcProxy(anvil.rpc_url)
    config = dict(anvil.config, rpc_url=proxy.url)
    config_path = root / "devchain.json"
    config_path.write_text(json.dumps(config))
    (root / "logs").mkdir()
    env = stack_env(
        f"redis://127.0.0.1:{redis_server.port}/{REDIS_DB}",
        root / "storage",
        PAYMENT_CONFIG=str(config_path),
        GATEWAY_KEY_FILE=str(anvil.config["gateway_key_file"]),
        CONFIRMATIONS="1",
        PRIVATE_PORT=str(free_port()),
        REGISTRY_ALLOWLIST=MICROSERVICE_ADDRESS,
        ALLOW_LOOPBACK_SERVICES="true",
    )
    stack = Stack(env, root / "storage", logs=root / "logs")
    try:
        worker = stack.start_worker("paid", concurrency=1)
        port = free_port()
        stack.start_gunicorn(port, workers=2)
        gw = Gateway(f"http://127.0.0.1:{port}", stack, worker, proxy, anvil, client, Jobs(client))
        yield gw
        # after every scenario of this module: the promises of reliability.md §1 still hold
        counts = check_paid_promises(
            client,
            stack.storage_dir / "ledger",
            anvil.w3,
            anvil.token_address,
            anvil.treasury.address,
            CALLDATA,
            OBSERVED,
        )
        print(f"promises after the paid-flow scenarios: {counts}")
        allowed = [root / "storage", root / "logs", root / "metrics", config_path]
        assert files_outside(root, allowed) == []
    finally:
        stack.stop_all()
        proxy.close()
        client.flushdb()


# --- client helpers ----------------------------------------------------------------------------

_last_nonce = 0
_nonce_lock = threading.Lock()


def next_nonce() -> str:
    """Milliseconds, strictly increasing within this process (13 digits)."""
    global _last_nonce
    with _nonce_lock:
        _last_nonce = max(_last_nonce + 1, time.time_ns() // 1_000_000)
        return str(_last_nonce)


def payload(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def get_quote(base: str, user: str, lengths: list[int], token: str, **extra: Any) -> dict[str, Any]:
    body = {
        "type": "occ",
        "files": [{"length": n} for n in lengths],
        "duration": 3600,
        "payment": {"chainId": 31337, "tokenAddress": token},
        "userAddress": user,
        **extra,
    }
    resp = requests.post(f"{base}/getQuote", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def signed(account: LocalAccount, quote_id: str) -> dict[str, str]:
    nonce = next_nonce()
    return {
        "quoteId": quote_id,
        "nonce": nonce,
        "signature": sign_text(account.key, signed_text(quote_id, nonce)),
    }


def get_history(base: str, account: LocalAccount, nonce: str | None = None) -> requests.Response:
    """GET /getHistory signed with ``nonce`` (default a fresh one) over an empty quoteId."""
    nonce = nonce or next_nonce()
    params = {
        "userAddress": account.address,
        "nonce": nonce,
        "signature": sign_text(account.key, signed_text("", nonce)),
    }
    return requests.get(f"{base}/getHistory", params=params, timeout=10)


def upload(base: str, params: dict[str, str], files: list[bytes]) -> requests.Response:
    parts = [(f"file{i + 1}", (f"part{i + 1}.bin", data)) for i, data in enumerate(files)]
    return requests.post(f"{base}/upload", params=params, files=parts, timeout=60)


OBSERVED: dict[str, list[int]] = {}  # every status the tests saw, per quote: only forward


def status(base: str, quote_id: str) -> int:
    code = int(
        requests.get(f"{base}/getStatus", params={"quoteId": quote_id}, timeout=10).json()["status"]
    )
    OBSERVED.setdefault(quote_id, []).append(code)
    return code


def wait_final(gw: Gateway, quote_id: str, timeout: float = 60) -> int:
    def final() -> int | None:
        s = status(gw.base, quote_id)
        return s if Status(s).final else None

    try:
        return wait_for(final, timeout, f"quote {quote_id} final", 0.1)  # type: ignore[no-any-return]
    except TimeoutError:
        print(gw.stack.log_text())
        raise


def pad(address: str) -> str:
    return "0x" + "00" * 12 + address[2:].lower()


def transfers(env: ChainEnv, sender: str, recipient: str, from_block: int) -> list[Any]:
    return list(
        env.w3.eth.get_logs(
            {
                "address": Web3.to_checksum_address(env.token_address),
                "fromBlock": from_block,
                "toBlock": "latest",
                "topics": ["0x" + TRANSFER_TOPIC.hex(), pad(sender), pad(recipient)],
            }
        )
    )


def tag_of(env: ChainEnv, log: Any) -> bytes:
    return bytes(env.w3.eth.get_transaction(log["transactionHash"])["input"])[CALLDATA:]


# --- the walk-through --------------------------------------------------------------------------


def test_full_flow_pays_once_stores_and_links(gateway: Gateway) -> None:
    gw, env = gateway, gateway.chain
    user = env.users[0]
    storages = requests.get(f"{gw.base}/", timeout=10).json()
    occ = next(s for s in storages if s["type"] == "occ")
    assert occ["payment"][0]["acceptedTokens"][0]["value"].lower() == env.token_address.lower()

    # quote validation answers 400 naming the field, on the real stack too
    for bad, field in (
        ({"files": []}, "files"),
        ({"payment": {"chainId": 5, "tokenAddress": env.token_address}}, "chainId"),
    ):
        body = {
            "type": "occ",
            "files": [{"length": 1}],
            "duration": 60,
            "userAddress": user.address,
        }
        body.update({"payment": {"chainId": 31337, "tokenAddress": env.token_address}, **bad})
        resp = requests.post(f"{gw.base}/getQuote", json=body, timeout=10)
        assert resp.status_code == 400 and field in resp.json()["message"], resp.text

    files = [payload(1, 200_000), payload(2, 1234)]
    quote = get_quote(
        gw.base,
        user.address.lower(),
        [len(f) for f in files],
        env.token_address.lower(),
        payment={"chainId": "31337", "tokenAddress": env.token_address.lower()},
    )
    amount = int(quote["tokenAmount"])
    assert amount > 0 and quote["approveAddress"] == env.gateway.address
    treasury_before = env.balance(env.treasury.address)
    user_before = env.balance(user.address)
    block = env.w3.eth.block_number
    env.token_call(user, "approve", quote["approveAddress"], amount)

    params = signed(user, quote["quoteId"])
    resp = upload(gw.base, params, files)
    assert resp.status_code == 200, resp.text
    assert "message" in resp.json()
    assert wait_final(gw, quote["quoteId"]) == Status.DONE

    assert env.balance(env.treasury.address) - treasury_before == amount
    assert user_before - env.balance(user.address) == amount
    (log,) = transfers(env, user.address, env.treasury.address, block + 1)
    assert tag_of(env, log) == quote["quoteId"].encode()

    link_params = signed(user, quote["quoteId"])
    links = requests.get(f"{gw.base}/getLink", params=link_params, timeout=10)
    assert links.status_code == 200, links.text
    assert [link["length"] for link in links.json()] == [len(f) for f in files]
    for link, data in zip(links.json(), files, strict=True):
        assert link["type"] == "url" and link["method"] == "GET"
        got = requests.get(link["url"], timeout=30)
        assert got.status_code == 200 and got.content == data
    # the same nonce again: refused; the quote's one upload is spent
    assert requests.post(f"{gw.base}/getLink", params=link_params, timeout=10).status_code == 409
    assert upload(gw.base, signed(user, quote["quoteId"]), files).status_code == 409

    history = get_history(gw.base, user)
    assert history.status_code == 200, history.text
    entry = next(h for h in history.json() if h["quoteId"] == quote["quoteId"])
    assert entry["status"] == 400 and entry["tokenAmount"] == quote["tokenAmount"]


def pay_then_lose_the_staged_file(
    gw: Gateway, user: LocalAccount, size: int, meanwhile: Callable[[], object] = lambda: None
) -> dict[str, Any]:
    """Upload a quote, and while its transfer's broadcast is held, delete its staged file."""
    env = gw.chain
    quote = get_quote(gw.base, user.address, [size], env.token_address)
    env.token_call(user, "approve", quote["approveAddress"], int(quote["tokenAmount"]))
    gw.proxy.arm("forward")
    assert upload(gw.base, signed(user, quote["quoteId"]), [payload(size, size)]).status_code == 200
    assert gw.proxy.held.wait(30)
    assert gw.jobs.status(quote["quoteId"]) == Status.PAYMENT_SENT
    shutil.rmtree(gw.staging / quote["quoteId"])
    meanwhile()
    return quote


def test_store_failure_after_payment_is_refunded(gateway: Gateway) -> None:
    gw, env = gateway, gateway.chain
    user = env.users[1]
    user_before = env.balance(user.address)
    treasury_before = env.balance(env.treasury.address)
    block = env.w3.eth.block_number
    quote = pay_then_lose_the_staged_file(gw, user, 5000)
    amount = int(quote["tokenAmount"])

    assert wait_final(gw, quote["quoteId"]) == Status.REFUNDED
    job = gw.jobs.get(quote["quoteId"])
    assert job is not None
    assert job["data"]["failure"]["name"] == "STAGED_FILE_MISSING"
    assert "STAGED_FILE_MISSING" in job["reason"]
    assert env.balance(user.address) == user_before
    assert env.balance(env.treasury.address) == treasury_before
    assert len(transfers(env, user.address, env.treasury.address, block + 1)) == 1
    (refund,) = transfers(env, env.treasury.address, user.address, block + 1)
    assert "0x" + bytes(refund["transactionHash"]).hex() == job["data"]["refund_tx"]["tx_hash"]
    assert int.from_bytes(bytes(refund["data"]), "big") == amount
    assert tag_of(env, refund) == f"refund:{quote['quoteId']}".encode()


def test_refund_that_cannot_be_sent_ends_refund_failed(gateway: Gateway) -> None:
    """The treasury withdrew its allowance: the refund would revert, so none is sent (412)."""
    gw, env = gateway, gateway.chain
    user = env.users[0]
    block = env.w3.eth.block_number
    gw.proxy.delay = 5.0
    try:
        quote = pay_then_lose_the_staged_file(
            gw, user, 100, lambda: env.token_call(env.treasury, "approve", env.gateway.address, 0)
        )
        assert wait_final(gw, quote["quoteId"]) == Status.REFUND_FAILED
    finally:
        gw.proxy.delay = 1.0
        env.token_call(env.treasury, "approve", env.gateway.address, MAX_UINT256)
    job = gw.jobs.get(quote["quoteId"])
    assert job is not None and job["data"]["failure"]["name"] == "STAGED_FILE_MISSING"
    assert "operator needed" in job["reason"]
    assert len(transfers(env, user.address, env.treasury.address, block + 1)) == 1
    assert transfers(env, env.treasury.address, user.address, block + 1) == []


def test_transfer_never_mined_ends_payment_timeout(gateway: Gateway) -> None:
    """A broadcast transfer stays pending until the payment task's delivery budget is spent: 203,
    nothing stored, and the status stays 203 when the transfer is mined later (operator case)."""
    gw, env = gateway, gateway.chain
    user = env.users[0]
    quote = get_quote(gw.base, user.address, [3000], env.token_address)
    qid = quote["quoteId"]
    env.token_call(user, "approve", quote["approveAddress"], int(quote["tokenAmount"]))
    rpc = env.w3.provider.make_request
    rpc("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        assert upload(gw.base, signed(user, qid), [payload(7, 3000)]).status_code == 200
        wait_for(lambda: gw.jobs.status(qid) == Status.PAYMENT_SENT, 60, "payment sent")
        time.sleep(1.0)  # the task is polling for a receipt that does not come
        assert gw.jobs.status(qid) == Status.PAYMENT_SENT
        gw.redis.hset(keys.job(qid), "deliveries_payment", MAX_ATTEMPTS["payment"])
        assert wait_final(gw, qid, 120) == Status.PAYMENT_TIMEOUT
        assert status(gw.base, qid) == Status.PAYMENT_TIMEOUT
    finally:
        rpc("evm_setAutomine", [True])  # type: ignore[arg-type]
        env.mine(1)
    job = gw.jobs.get(qid)
    assert job is not None and "needs an operator" in job["reason"]
    tx_hash = job["data"]["payment_tx"]["tx_hash"]
    assert env.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)["status"] == 1
    time.sleep(2.0)  # a late delivery must not move a final status
    assert gw.jobs.status(qid) == Status.PAYMENT_TIMEOUT
    assert "stored" not in gw.jobs.get(qid)["data"]  # type: ignore[index]


def pool_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


KILLS = scale(20, 60)


def test_worker_killed_at_payment_sent_pays_exactly_once(gateway: Gateway) -> None:
    """Reliability row 9: SIGKILL the pool process mid-broadcast, 20 times: one transferFrom per quote."""
    gw, env = gateway, gateway.chain
    user = env.users[0]
    block = env.w3.eth.block_number
    quotes = [get_quote(gw.base, user.address, [100 + i], env.token_address) for i in range(KILLS)]
    env.token_call(user, "approve", env.gateway.address, sum(int(q["tokenAmount"]) for q in quotes))
    treasury_before = env.balance(env.treasury.address)
    killed = 0
    for i, quote in enumerate(quotes):
        qid = quote["quoteId"]
        sent_before = len(gw.proxy.sent)
        gw.proxy.arm("forward" if i % 2 else "drop")
        assert upload(gw.base, signed(user, qid), [payload(100 + i, 100 + i)]).status_code == 200
        assert gw.proxy.held.wait(30), gw.stack.log_text()
        # the transfer is recorded (write-ahead) and its broadcast is in flight: kill right here
        assert gw.jobs.status(qid) == Status.PAYMENT_SENT
        recorded = gw.jobs.get(qid)["data"]["payment_tx"]["tx_hash"]  # type: ignore[index]
        for child in pool_children(gw.worker.pid):
            os.kill(child, signal.SIGKILL)
            killed += 1
        assert wait_final(gw, qid, 90) == Status.DONE
        job = gw.jobs.get(qid)
        assert job is not None and int(job["deliveries_payment"]) >= 2  # really re-delivered
        # every broadcast of this quote carried the one recorded transaction
        assert set(gw.proxy.sent[sent_before:]) == {recorded.removeprefix("0x").lower()}
    assert killed >= KILLS
    logs = transfers(env, user.address, env.treasury.address, block + 1)
    tags = sorted(tag_of(env, log) for log in logs)
    record("repetitions", f"{KILLS} quotes")
    record("faults", f"{killed} SIGKILLs of the pool process mid-broadcast")
    record("double_charges", len(tags) - len(set(tags)))
    assert tags == sorted(q["quoteId"].encode() for q in quotes)  # exactly one transfer per quote
    assert env.balance(env.treasury.address) - treasury_before == sum(
        int(q["tokenAmount"]) for q in quotes
    )


def test_worker_killed_during_store_every_job_reaches_400(gateway: Gateway) -> None:
    """Reliability row 3: SIGKILL the pool process at random points of the store, 20 times."""
    gw, env = gateway, gateway.chain
    user = env.users[1]
    rng = np.random.default_rng(3)
    env.token_call(user, "approve", env.gateway.address, 10**24)
    kills: list[tuple[int, int]] = []  # (status, files stored so far) at each kill
    stored: dict[str, list[bytes]] = {}
    for i in range(3 * KILLS):
        if len(kills) == KILLS:
            break
        files = [payload(300 + 2 * i + j, 6_000_000 + i) for j in range(2)]  # 48 chunks, ~0.1 s
        qid = get_quote(gw.base, user.address, [len(f) for f in files], env.token_address)[
            "quoteId"
        ]
        assert upload(gw.base, signed(user, qid), files).status_code == 200
        wait_for(lambda qid=qid: gw.jobs.status(qid) >= Status.STORING, 60, "storing", 0.002)
        if i % 2:  # every other kill lands after the first file is stored, whatever the disk speed

            def first_stored(qid: str = qid) -> bool:
                job = gw.jobs.get(qid)
                return (
                    job is None or job["status"] >= Status.DONE or bool(job["data"].get("stored"))
                )

            wait_for(first_stored, 60, "first file stored", 0.002)
        time.sleep(rng.uniform(0.0, 0.05))  # anywhere from the staged-file check to the end
        job = gw.jobs.get(qid)
        assert job is not None
        if job["status"] < Status.DONE:
            for child in pool_children(gw.worker.pid):
                os.kill(child, signal.SIGKILL)
            kills.append((job["status"], len(job["data"].get("stored", []))))
        assert wait_final(gw, qid, 120) == Status.DONE
        job = gw.jobs.get(qid)
        assert job is not None and [s["file_hash"] for s in job["data"]["stored"]] == [
            hashlib.sha256(f).hexdigest() for f in files
        ]
        stored[qid] = files
    print(f"{len(kills)} kills inside {len(stored)} stores: {kills}")
    record("repetitions", f"{len(stored)} paid stores")
    record("faults", f"{len(kills)} SIGKILLs inside stores")
    assert len(kills) == KILLS
    assert {n for _, n in kills} == {0, 1}  # before any file was stored, and between the two
    for qid, files in stored.items():
        links = requests.get(f"{gw.base}/getLink", params=signed(user, qid), timeout=10).json()
        for link, data in zip(links, files, strict=True):
            assert requests.get(link["url"], timeout=30).content == data

    def replicated(file_hash: str) -> bool:
        report = requests.get(f"{gw.base}/verify/{file_hash}", timeout=60).json()
        return bool(report["replication"]["min"] == 3)

    for files in stored.values():  # the background copies complete too (and stop writing)
        for h in (hashlib.sha256(f).hexdigest() for f in files):
            wait_for(lambda h=h: replicated(h), 120, f"{h} at r = 3")
    assert all_chunk_files(gw.stack.storage_dir)
    assert bad_chunk_files(gw.stack.storage_dir) == []  # no partial chunk under a final name
    # what the kills left behind is temp files only, and the janitor's sweep removes them
    others = set(gw.stack.storage_dir.glob("node_*/chunks/*/*/*")) - set(
        all_chunk_files(gw.stack.storage_dir)
    )
    assert all(p.name.startswith(TEMP_PREFIX) for p in others)
    # a kill can also land inside a manifest write
    others |= set(gw.stack.storage_dir.glob(f"node_*/manifests/*/{TEMP_PREFIX}*"))
    nodes = [LocalDirNode(d, d.name) for d in sorted(gw.stack.storage_dir.glob("node_*"))]
    assert sum(node.cleanup_temp(0) for node in nodes) == len(others)
    record("lost", 0)
    print(f"{len(others)} orphan temp files removed by the janitor")


def test_concurrent_uploads_with_one_nonce_accept_exactly_one(gateway: Gateway) -> None:
    """Reliability row 11: 50 pairs, two quotes of one user uploaded at once with the same nonce."""
    gw, env = gateway, gateway.chain
    user = env.account(6)
    pairs = scale(50, 200)
    quotes = [
        get_quote(gw.base, user.address, [10], env.token_address)["quoteId"]
        for _ in range(2 * pairs)
    ]
    outcomes = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i in range(pairs):
            nonce = next_nonce()
            barrier = threading.Barrier(2)

            def send(qid: str, nonce: str = nonce, barrier: threading.Barrier = barrier) -> int:
                params = {
                    "quoteId": qid,
                    "nonce": nonce,
                    "signature": sign_text(user.key, signed_text(qid, nonce)),
                }
                barrier.wait()
                return upload(gw.base, params, [b"0123456789"]).status_code

            codes = sorted(pool.map(send, quotes[2 * i : 2 * i + 2]))
            outcomes.append(codes)
    record("repetitions", f"{pairs} pairs")
    record("replays", sum(codes.count(200) - 1 for codes in outcomes if codes.count(200) > 1))
    assert outcomes == [[200, 409]] * pairs
    accepted = [q for q in quotes if gw.jobs.status(q) != Status.QUOTED]
    assert len(accepted) == pairs


def _raw_multipart_upload(base: str, params: dict[str, str], body_size: int) -> tuple[Any, bool]:
    """POST /upload with http.client, writing the whole ~body_size multipart body before reading
    (as Ocean's uploader.js does); returns (response, whether the server closed the connection)."""
    import http.client
    from urllib.parse import urlencode, urlsplit

    boundary = "occboundary"
    data = payload(99, body_size)
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file1"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    netloc = urlsplit(base)
    conn = http.client.HTTPConnection(netloc.hostname, netloc.port, timeout=30)
    conn.request(  # raises BrokenPipeError / ConnectionResetError if the server hung up on us
        "POST",
        f"/upload?{urlencode(params)}",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    resp = conn.getresponse()
    payload_bytes = resp.read()
    closed = resp.will_close
    if not closed:  # the body was drained: the same connection serves the next request
        conn.request("GET", "/health")
        again = conn.getresponse()
        again.read()
        assert again.status == 200
    conn.close()
    return (resp.status, json.loads(payload_bytes), dict(resp.getheaders())), closed


def test_upload_refused_before_its_body_is_read_is_answered(gateway: Gateway) -> None:
    """Issue 12 item 2: a 250 KB paid upload with a reused nonce is refused (409) before the body
    is parsed; a client that writes the whole body first must still read the 409 in the error
    shape (not EPIPE), on a connection that is then closed or reusable."""
    gw, env = gateway, gateway.chain
    user = env.account(9)
    quote = get_quote(gw.base, user.address, [250_000], env.token_address)
    used = next_nonce()
    history = get_history(gw.base, user, used)
    assert history.status_code == 200, history.text
    params = {
        "quoteId": quote["quoteId"],
        "nonce": used,
        "signature": sign_text(user.key, signed_text(quote["quoteId"], used)),
    }
    for _ in range(3):
        (code, body, headers), _closed = _raw_multipart_upload(gw.base, params, 250_000)
        assert code == 409, body
        assert body["code"] == 409 and body["status"] == "Conflict", body
        assert "nonce" in body["message"].lower(), body
        assert "Retry-After" not in headers
    assert gw.jobs.status(quote["quoteId"]) == Status.QUOTED


def test_rate_limits_by_wallet_and_accepted_quote_uploads_pass(gateway: Gateway) -> None:
    """Issue 12 item 4, issue 15 item 3: on a second gunicorn with RATE_LIMIT=3/minute (the
    same Redis), unsigned calls are counted per client IP, signed calls per wallet, a 429 has
    Retry-After in the error shape, and the upload of an accepted quote passes even when the
    client IP has used up its budget on /upload."""
    gw, env = gateway, gateway.chain
    saved = dict(gw.stack.env)
    gw.stack.env["RATE_LIMIT"] = "3/minute"
    try:
        port = free_port()
        gw.stack.start_gunicorn(port, workers=2)
    finally:
        gw.stack.env.clear()
        gw.stack.env.update(saved)
    base = f"http://127.0.0.1:{port}"
    # the quote is made on the main gateway (its own budget); /health spent one of this one's
    first, second = env.account(5), env.account(4)
    forwarded = {"X-Forwarded-For": "198.51.100.9"}  # one client IP behind the trusted proxy

    def history(account: LocalAccount) -> requests.Response:
        nonce = next_nonce()
        params = {
            "userAddress": account.address,
            "nonce": nonce,
            "signature": sign_text(account.key, signed_text("", nonce)),
        }
        return requests.get(f"{base}/getHistory", params=params, headers=forwarded, timeout=10)

    # signed calls: per wallet, whatever the IP
    assert [history(first).status_code for _ in range(4)] == [200, 200, 200, 429]
    limited = history(first)
    assert limited.status_code == 429 and limited.json()["code"] == 429
    assert limited.json()["status"] and limited.json()["message"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert history(second).status_code == 200  # another wallet, same IP
    # unsigned calls: per IP; successes never carry Retry-After
    codes = []
    for _ in range(4):
        resp = requests.post(f"{base}/upload", headers=forwarded, timeout=10)
        codes.append(resp.status_code)
        if resp.status_code != 429:
            assert "Retry-After" not in resp.headers
    assert codes[-1] == 429, codes
    # the upload of an accepted quote is never refused by the general limit: spend the
    # wallet's /upload budget on a quote that already has its upload, then upload a fresh one
    used, fresh = (
        get_quote(gw.base, first.address, [10], env.token_address)["quoteId"] for _ in range(2)
    )

    def paid_upload(quote_id: str) -> requests.Response:
        return requests.post(
            f"{base}/upload",
            params=signed(first, quote_id),
            files=[("file1", ("a.bin", b"0123456789"))],
            headers=forwarded,
            timeout=30,
        )

    assert paid_upload(used).status_code == 200  # accepted: not counted
    assert [paid_upload(used).status_code for _ in range(4)] == [409, 409, 409, 429]
    resp = paid_upload(fresh)
    assert resp.status_code == 200, resp.text
    assert "Retry-After" not in resp.headers
    assert gw.jobs.status(fresh) >= Status.PAYMENT_QUEUED  # accepted, payment queued


def test_remote_storage_flow_relays_links(gateway: Gateway) -> None:
    """A registered microservice: the gateway quotes through it, collects payment, hands it the staged files."""
    gw, env = gateway, gateway.chain
    port = int(gw.stack.env["PRIVATE_PORT"])
    gw.stack.spawn(
        [
            *(str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}"),
            *("--workers", "1", "--threads", "4", "api.private:create_private_app()"),
        ],
        "private",
    )
    wait_for(
        lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok, 60, "private API"
    )
    fake = FakeMicroservice(
        register_url=f"http://127.0.0.1:{port}/register",
        chain_id=31337,
        token_address=env.token_address,
        heartbeat_s=600,
    ).start()
    try:
        assert fake.registrations == 1
        types = [s["type"] for s in requests.get(f"{gw.base}/", timeout=10).json()]
        assert types == ["occ", "arweave"]
        user = env.users[0]
        files = [payload(7, 3000), payload(8, 10)]
        quote = get_quote(
            gw.base, user.address, [len(f) for f in files], env.token_address, type="arweave"
        )
        assert quote["tokenAmount"] == "4"  # the microservice's price, relayed as a string
        assert quote["approveAddress"] == env.gateway.address  # the gateway collects the payment
        treasury_before = env.balance(env.treasury.address)
        env.token_call(user, "approve", quote["approveAddress"], int(quote["tokenAmount"]))
        assert upload(gw.base, signed(user, quote["quoteId"]), files).status_code == 200
        assert wait_final(gw, quote["quoteId"]) == Status.DONE
        assert env.balance(env.treasury.address) - treasury_before == 4
        assert fake.fetched[quote["quoteId"]] == files  # fetched from the private /staged URLs
        links = requests.get(
            f"{gw.base}/getLink", params=signed(user, quote["quoteId"]), timeout=10
        ).json()
        assert [link["type"] for link in links] == ["arweave", "arweave"]
        assert all(link["transactionId"] == link["transactionHash"] for link in links)
        assert not (gw.staging / quote["quoteId"]).exists()

        # the same service now fails its uploads (status 404): the payment comes back on chain
        fake.fail_uploads = True
        block = env.w3.eth.block_number
        user_before = env.balance(user.address)
        treasury_before = env.balance(env.treasury.address)
        quote = get_quote(gw.base, user.address, [10], env.token_address, type="arweave")
        env.token_call(user, "approve", quote["approveAddress"], int(quote["tokenAmount"]))
        assert upload(gw.base, signed(user, quote["quoteId"]), [payload(9, 10)]).status_code == 200
        assert wait_final(gw, quote["quoteId"]) == Status.REFUNDED
        job = gw.jobs.get(quote["quoteId"])
        assert job is not None and job["data"]["failure"]["name"] == "BACKEND_FAILED"
        assert "status 404" in job["data"]["failure"]["reason"]
        assert len(transfers(env, user.address, env.treasury.address, block + 1)) == 1
        (refund,) = transfers(env, env.treasury.address, user.address, block + 1)
        assert "0x" + bytes(refund["transactionHash"]).hex() == job["data"]["refund_tx"]["tx_hash"]
        assert env.balance(user.address) == user_before
        assert env.balance(env.treasury.address) == treasury_before
    finally:
        fake.stop()


def in_process(gw: Gateway, **overrides: Any) -> Runtime:
    """A runtime on the module's Redis and storage, publishing tasks to its worker."""
    from workers.celery_app import app as celery_app

    settings = dataclasses.replace(Settings.from_env(gw.stack.env), **overrides)
    celery_app.conf.broker_url = settings.redis_url
    celery_app._pool = None  # drop a pool bound to another broker
    celery_app.amqp._producer_pool = None
    return Runtime(settings)


def test_sweeper_redrives_a_job_whose_message_was_lost(gateway: Gateway) -> None:
    gw, env = gateway, gateway.chain
    qid = get_quote(gw.base, env.account(9).address, [10], env.token_address)["quoteId"]
    # as if the upload's process died after the CAS, before recording the files and enqueueing
    assert gw.jobs.advance(qid, Status.PAYMENT_QUEUED)
    gw.redis.hset(keys.job(qid), "updated_at", f"{time.time() - 3600:.6f}")
    rt = in_process(gw)
    assert redrive_paid_jobs(rt) == 1
    assert redrive_paid_jobs(rt) == 0  # re-driven at most once per deadline
    assert wait_final(gw, qid) == Status.STAGED_FILE_MISSING  # nothing was charged


def test_paid_files_expire_after_duration_and_grace(gateway: Gateway) -> None:
    gw, env = gateway, gateway.chain
    user = env.users[1]
    data = payload(99, 777)
    quote = get_quote(gw.base, user.address, [len(data)], env.token_address)
    env.token_call(user, "approve", quote["approveAddress"], int(quote["tokenAmount"]))
    assert upload(gw.base, signed(user, quote["quoteId"]), [data]).status_code == 200
    assert wait_final(gw, quote["quoteId"]) == Status.DONE
    (link,) = requests.get(
        f"{gw.base}/getLink", params=signed(user, quote["quoteId"]), timeout=10
    ).json()
    assert link["expiresAt"] > time.time() + 3500
    later = time.time() + 3700  # the quote paid for 3600 s
    assert expire_files(in_process(gw), now=time.time() + 1800) == 0
    assert expire_files(in_process(gw), now=later) == 0  # PAID_GRACE_PERIOD (1 day) still runs
    assert expire_files(in_process(gw, paid_grace_period=0), now=later) >= 1
    assert requests.get(link["url"], timeout=10).status_code == 404


# --- rejection matrix (reliability row 12), in process on a Redis DB no worker reads ------------


def _twin(signature: str) -> str:
    raw = bytes.fromhex(signature[2:])
    s, v = int.from_bytes(raw[32:64], "big"), raw[64]
    return "0x" + (raw[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])).hex()


def test_rejection_matrix_enqueues_nothing(
    redis_server: RedisServer, anvil: ChainEnv, tmp_path: Path
) -> None:
    from workers.celery_app import app as celery_app

    url = f"redis://127.0.0.1:{redis_server.port}/{REDIS_DB + 1}"
    broker = redis.Redis.from_url(url)
    broker.flushdb()

    def make(ttl: int) -> Any:
        settings = Settings(
            storage_dir=tmp_path / "storage",
            redis_url=url,
            payment_config_file=anvil.config_path,
            quote_ttl=ttl,
        )
        flask_app = create_app({"SETTINGS": settings, "TESTING": True})
        celery_app._pool = None  # publish to this Redis DB, whatever an earlier app used
        celery_app.amqp._producer_pool = None
        return flask_app.test_client()

    client, short = make(1800), make(1)
    jobs = Jobs(broker)
    owner, other = anvil.account(7), anvil.account(8)

    def quote(c: Any, address: str) -> str:
        body = {
            "type": "occ",
            "files": [{"length": 4}],
            "duration": 60,
            "payment": {"chainId": 31337, "tokenAddress": anvil.token_address},
            "userAddress": address,
        }
        resp = c.post("/getQuote", json=body)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return str(resp.get_json()["quoteId"])

    def send(c: Any, qid: str, nonce: str, signature: str) -> Any:
        return c.post(
            "/upload",
            query_string={"quoteId": qid, "nonce": nonce, "signature": signature},
            data={"file1": (io.BytesIO(b"data"), "d.bin")},
            content_type="multipart/form-data",
        )

    qid = quote(client, owner.address.lower())
    other_qid = quote(client, other.address)
    expired = quote(short, owner.address)
    time.sleep(1.2)

    used = next_nonce()
    assert (
        client.get(
            "/getHistory",
            query_string={
                "userAddress": owner.address,
                "nonce": used,
                "signature": sign_text(owner.key, signed_text("", used)),
            },
        ).status_code
        == 200
    )
    lower = str(int(used) - 1)
    n = next_nonce()
    good = sign_text(owner.key, signed_text(qid, n))
    digest = bytes.fromhex(signed_text(qid, n)[2:])
    over_digest = (
        "0x"
        + bytes(Account.sign_message(encode_defunct(primitive=digest), owner.key).signature).hex()
    )
    cases = {
        "reused nonce": (qid, used, sign_text(owner.key, signed_text(qid, used)), 409),
        "lower nonce": (qid, lower, sign_text(owner.key, signed_text(qid, lower)), 409),
        "wrong signer": (qid, n, sign_text(other.key, signed_text(qid, n)), 403),
        "another user's quote": (
            other_qid,
            n,
            sign_text(owner.key, signed_text(other_qid, n)),
            403,
        ),
        "expired quote": (expired, n, sign_text(owner.key, signed_text(expired, n)), 400),
        "high-s twin": (qid, n, _twin(good), 400),
        "64-byte signature": (qid, n, good[:-2], 400),
        "malformed hex": (qid, n, good[:-1] + "g", 400),
        "signature over the raw digest": (qid, n, over_digest, 403),
        "malformed nonce": (qid, "12a", good, 400),
        "unknown quote": ("ab" * 16, n, good, 404),
    }
    for name, (q, nonce, signature, code) in cases.items():
        resp = send(client, q, nonce, signature)
        assert resp.status_code == code, (name, resp.get_data(as_text=True))
        body = resp.get_json()
        assert body["code"] == code and body["message"], name
        if name == "expired quote":
            assert body["message"] == "Quote expired"
        for each in (qid, other_qid, expired):
            assert jobs.status(each) == Status.QUOTED, name
        assert broker.llen("celery") == 0, name

    # the same valid signature, the quote bound to a lowercase address, checked as 20 bytes: passes
    checksummed = quote(client, owner.address)
    for q in (qid, checksummed):
        nonce = next_nonce()
        resp = send(client, q, nonce, sign_text(owner.key, signed_text(q, nonce)))
        assert resp.status_code == 200, resp.get_data(as_text=True)
    assert broker.llen("celery") == 2  # the check above would have seen any message
    assert client.get(f"/getStatus?quoteId={qid}").get_json() == {"status": 100}
    assert client.post(f"/getStatus?quoteId={'0' * 32}").get_json() == {"status": 0}
    assert client.get(f"/getStatus?quoteId={expired}").get_json() == {
        "status": int(Status.QUOTE_EXPIRED)
    }
    broker.flushdb()

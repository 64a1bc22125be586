"""occ-client as a subprocess against a real stack: redis, a Celery worker, gunicorn and anvil.

The direct storage API round trip, and the whole paid flow of protocol.md (quote, approve,
sign, upload, status 400, getLink, download, the treasury paid exactly tokenAmount).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from client.erc20 import Token
from occ_protocol.signatures import sign_text, signed_text
from tests.fixtures.chain import ChainEnv
from tests.fixtures.services import ROOT, Stack, free_port

pytestmark = pytest.mark.integration


class Client:
    """Runs ``python -m client.cli`` with a clean environment (no key or dev chain but the given)."""

    def __init__(self, gateway: str, tmp: Path, devchain: Path | None = None) -> None:
        self.gateway = gateway
        self.devchain = devchain
        self.cache = tmp / "client-cache"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OCC_", "PYTEST"))}
        self.env.update(OCC_CLIENT_CACHE=str(self.cache), PYTHONPATH=str(ROOT))

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "client.cli", "--gateway", self.gateway, "--no-progress"]
        argv += ["--devchain", str(self.devchain) if self.devchain else ""]
        return subprocess.run(
            argv + list(args),
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, timeout: float = 120) -> Any:
        proc = self.run(*args, timeout=timeout)
        assert proc.returncode == 0, f"occ-client {' '.join(args)} failed:\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        return json.loads(proc.stdout)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- direct storage ----------------------------------------------------------------------------------


@pytest.fixture
def direct_gateway(stack: Stack) -> str:
    stack.start_worker(concurrency=1)
    port = free_port()
    stack.start_gunicorn(port)
    return f"http://127.0.0.1:{port}"


def test_direct_upload_download_round_trip(direct_gateway: str, tmp_path: Path) -> None:
    client = Client(direct_gateway, tmp_path)
    data = os.urandom(5 * 65536 + 321)  # several chunks of the test stack's CHUNK_SIZE
    src = tmp_path / "report.bin"
    src.write_bytes(data)

    up = client.ok("upload", str(src), "--replication-factor", "2")
    assert up["success"] is True and up["file_hash"] == sha256(data)
    assert up["file_name"] == "report.bin" and up["file_size"] == len(data)
    assert up["replication_factor"] == 2

    out = tmp_path / "out" / "copy.bin"
    out.parent.mkdir()
    got = client.ok("download", up["file_hash"], "-o", str(out))
    assert got["verified"] is True and got["sha256"] == sha256(data) and got["size"] == len(data)
    assert out.read_bytes() == data

    raw = tmp_path / "raw.txt"
    raw.write_bytes(b"raw body upload\n" * 1000)
    up_raw = client.ok("upload", "--raw", str(raw))
    assert up_raw["file_hash"] == sha256(raw.read_bytes()) and up_raw["file_name"] == "raw.txt"

    listed = client.ok("files")
    assert {f["file_hash"] for f in listed["files"]} >= {up["file_hash"], up_raw["file_hash"]}
    assert client.ok("verify", up["file_hash"])["retrievable"] is True

    missing = client.run("verify", "0" * 64)
    assert missing.returncode == 4 and missing.stdout == ""  # refused by the gateway (4xx)
    assert (
        missing.stderr.startswith("occ-client: gateway error 404")
        and "Traceback" not in missing.stderr
    )

    # rebalance (a worker job), network status, delete
    job = client.ok("rebalance", up["file_hash"], "--replication-factor", "3")
    assert job["job_id"]
    deadline = time.monotonic() + 60
    while not (state := client.ok("job", job["job_id"]))["final"]:
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert state["status"] == 400
    assert client.ok("verify", up["file_hash"])["replication"]["min"] == 3
    network = client.ok("status-network")
    assert network["network"]["total_nodes"] == 5 and "union_size" in network["network"]
    assert client.ok("delete", up_raw["file_hash"]) == {"deleted": up_raw["file_hash"]}
    gone = client.run("verify", up_raw["file_hash"])
    assert gone.returncode == 4 and "404" in gone.stderr


# --- the paid flow -----------------------------------------------------------------------------------


@pytest.fixture
def paid_gateway(stack: Stack, anvil: ChainEnv) -> str:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stack.env.update(
        PAYMENT_CONFIG=str(anvil.config_path),
        GATEWAY_KEY_FILE=str(anvil.config["gateway_key_file"]),
        PUBLIC_BASE_URL=base,
    )
    stack.start_worker()
    stack.start_gunicorn(port)
    return base


@pytest.fixture
def block_producer(anvil: ChainEnv) -> Iterator[None]:
    """Mine an empty block every 0.5 s, as a live chain would, so confirmations accrue."""
    stop = threading.Event()

    def produce() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(Exception):  # anvil busy or stopping: skip a beat
                anvil.mine(1)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)


def test_upload_paid_end_to_end(
    paid_gateway: str, anvil: ChainEnv, stack: Stack, tmp_path: Path, block_producer: None
) -> None:
    client = Client(paid_gateway, tmp_path, anvil.config_path)
    user = anvil.config["test_user"]["address"]
    treasury = anvil.config["treasury_address"]
    first = tmp_path / "test.txt"
    first.write_bytes(b"hello OCC, paid\n")
    second = tmp_path / "data.bin"
    second.write_bytes(os.urandom(3 * 65536 + 7))
    files = [first, second]

    treasury_before = anvil.balance(treasury)
    assert client.ok("balance", "--address", treasury)["balance"] == str(treasury_before)

    proc = client.run(
        "upload-paid",
        str(first),
        str(second),
        "--days",
        "1",
        "--timeout",
        "150",
        "--yes",
        timeout=240,
    )
    assert proc.returncode == 0, f"{proc.stderr}\n--- stack logs ---\n{stack.log_text()}"
    assert "Traceback" not in proc.stderr
    assert anvil.config["test_user"]["private_key"][2:] not in proc.stdout + proc.stderr
    assert "status 400 DONE" in proc.stderr
    links = json.loads(proc.stdout)

    # the quote the client made (kept in its cache): what was paid for
    (saved,) = (client.cache / "quotes").glob("*.json")
    quote = json.loads(saved.read_text())
    quote_id, amount = quote["quoteId"], int(quote["tokenAmount"])
    assert amount > 0 and quote["tokenAddress"].lower() == anvil.token_address.lower()
    assert quote["approveAddress"].lower() == anvil.config["gateway_address"].lower()

    # status 400, and the link objects of protocol.md §7, in upload order
    assert client.ok("status", quote_id) == {
        "quoteId": quote_id,
        "status": 400,
        "name": "DONE",
        "final": True,
    }
    assert requests.get(
        f"{paid_gateway}/getStatus", params={"quoteId": quote_id}, timeout=10
    ).json() == {"status": 400}
    assert len(links) == len(files)
    for link, path in zip(links, files, strict=True):
        data = path.read_bytes()
        assert link["type"] == "url" and link["method"] == "GET"
        assert link["fileHash"] == sha256(data) and link["length"] == len(data)
        assert link["url"] == f"{paid_gateway}/download/{sha256(data)}"
        assert requests.get(link["url"], timeout=30).content == data
        out = tmp_path / f"link-{path.name}"
        got = client.ok("download", link["url"], "-o", str(out))
        assert got["verified"] is True and out.read_bytes() == data

    # a later getLink with a fresh nonce gives the same links
    assert client.ok("link", quote_id) == links

    # the treasury received exactly tokenAmount; the approval was used up
    assert anvil.balance(treasury) - treasury_before == amount
    assert int(client.ok("balance", "--address", treasury)["balance"]) == treasury_before + amount
    token = Token(anvil.rpc_url, anvil.token_address)
    assert token.allowance(user, anvil.config["gateway_address"]) == 0

    # the price is confirmed before approve: over --max-price exit 5, no terminal and no --yes
    # exit 1; neither approves anything
    over = client.run(
        "upload-paid", str(first), "--days", "1", "--max-price", "0.000000000000000001"
    )
    assert over.returncode == 5 and "more than --max-price" in over.stderr, over.stderr
    unasked = client.run("upload-paid", str(first), "--days", "1")
    assert unasked.returncode == 1 and "pass --yes" in unasked.stderr, unasked.stderr
    assert token.allowance(user, anvil.config["gateway_address"]) == 0


def ocean_style_upload(base: str, anvil: ChainEnv, data: bytes) -> list[dict[str, Any]]:
    """The flow of Ocean's uploader.js on the test user's wallet, with its nonce convention:
    ``Math.round(Date.now() / 1000)`` (seconds) for the upload and again for getLink."""
    account = anvil.account(0)
    assert account.address == anvil.config["test_user"]["address"]
    quote = requests.post(
        f"{base}/getQuote",
        json={
            "type": "occ",
            "files": [{"length": len(data)}],
            "duration": 3600,
            "payment": {"chainId": "31337", "tokenAddress": anvil.token_address},
            "userAddress": account.address,
        },
        timeout=10,
    ).json()
    qid = quote["quoteId"]
    anvil.token_call(account, "approve", quote["approveAddress"], int(quote["tokenAmount"]))

    def signed(nonce: str) -> dict[str, str]:
        return {
            "quoteId": qid,
            "nonce": nonce,
            "signature": sign_text(account.key, signed_text(qid, nonce)),
        }

    up = requests.post(
        f"{base}/upload",
        params=signed(str(round(time.time()))),
        files=[("file1", ("ocean.bin", data))],
        timeout=30,
    )
    assert up.status_code == 200, up.text
    deadline = time.monotonic() + 90
    while (
        code := requests.get(f"{base}/getStatus", params={"quoteId": qid}, timeout=10).json()[
            "status"
        ]
    ) != 400:
        assert code < 200 or 300 <= code < 400, f"status {code}"
        assert time.monotonic() < deadline, f"still {code}"
        time.sleep(0.3)
    time.sleep(1.0)  # uploader.js's next call comes in a later second
    link = requests.get(f"{base}/getLink", params=signed(str(round(time.time()))), timeout=10)
    assert link.status_code == 200, link.text
    return link.json()  # type: ignore[no-any-return]


def test_oceans_client_works_on_a_wallet_our_client_used(
    paid_gateway: str, anvil: ChainEnv, stack: Stack, tmp_path: Path, block_producer: None
) -> None:
    """Issue 12 item 1: after occ-client (upload, getLink, link) the same wallet still works with
    second nonces as Ocean's uploader.js sends them; before the fix our millisecond nonces
    locked it out with 409 for good."""
    client = Client(paid_gateway, tmp_path, anvil.config_path)
    ours = tmp_path / "ours.txt"
    ours.write_bytes(b"signed by occ-client\n")
    proc = client.run(
        "upload-paid", str(ours), "--days", "1", "--timeout", "150", "--yes", timeout=240
    )
    assert proc.returncode == 0, f"{proc.stderr}\n--- stack logs ---\n{stack.log_text()}"
    (saved,) = (client.cache / "quotes").glob("*.json")
    ours_qid = json.loads(saved.read_text())["quoteId"]
    client.ok("link", ours_qid)  # one more signed call by our client
    remembered = json.loads((client.cache / "nonces.json").read_text())
    (last,) = remembered.values()
    assert len(str(last)) == 10 and last <= time.time()  # seconds, never ahead of the clock

    data = os.urandom(70_000)
    # uploader.js clashes with any signed call made in the same second, its own included;
    # what must hold is that a call in any later second works.
    while round(time.time()) <= last:
        time.sleep(0.05)
    links = ocean_style_upload(paid_gateway, anvil, data)
    assert [link["fileHash"] for link in links] == [sha256(data)]
    assert requests.get(links[0]["url"], timeout=30).content == data
    # and our client again after Ocean's: still accepted, and its history lists both quotes
    assert client.ok("link", ours_qid)[0]["fileHash"] == sha256(ours.read_bytes())
    history = client.ok("history", "--page-size", "100")
    assert ours_qid in {h["quoteId"] for h in history}
    assert [h["status"] for h in history if h["quoteId"] == ours_qid] == [400]

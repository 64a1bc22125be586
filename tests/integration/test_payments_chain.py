"""Payments on a real anvil chain: reliability.md row 13 (payment matrix) and write-ahead sends."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from web3.exceptions import TransactionNotFound

from tests.fixtures.chain import ChainEnv
from workers.chain import devchain
from workers.chain.payments import (
    BroadcastResult,
    CheckStatus,
    PaymentState,
    PreparedTx,
    TokenPayments,
    TransferWouldRevertError,
)

pytestmark = pytest.mark.integration

AMOUNT = 5 * 10**18
QUOTE_ID = "40acc6937e1bd98631f47e7cbda72920"
FORCED_GAS = 150_000  # skips estimation so a doomed transferFrom reaches the chain and reverts


def _approve(env: ChainEnv, user_index: int, amount: int, token: str | None = None) -> None:
    env.token_call(env.account(user_index), "approve", env.gateway.address, amount, token=token)


def _assert_not_paid(pay: TokenPayments, tx_hash: str, payer: str, amount: int) -> None:
    verdict = pay.verify_payment(tx_hash, payer, amount)
    assert verdict.state is not PaymentState.PAID
    assert not verdict.paid


def _wait_receipt(env: ChainEnv, tx_hash: str) -> None:
    env.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)  # type: ignore[arg-type]


# --- the valid case ----------------------------------------------------------------------


def test_valid_payment_is_paid_exactly_once(anvil: ChainEnv) -> None:
    pay = anvil.payments()
    user = anvil.account(3)
    _approve(anvil, 3, AMOUNT)
    assert pay.check(user.address, AMOUNT).status is CheckStatus.OK
    treasury_before = anvil.balance(anvil.treasury.address)
    user_before = anvil.balance(user.address)

    recorded: list[PreparedTx] = []

    def record(prepared: PreparedTx) -> None:
        # write-ahead: the node has not seen the transaction when it is recorded
        with pytest.raises(TransactionNotFound):
            anvil.w3.eth.get_transaction(prepared.tx_hash)  # type: ignore[arg-type]
        recorded.append(PreparedTx.from_dict(json.loads(json.dumps(prepared.to_dict()))))

    prepared, result = pay.pay(user.address.lower(), AMOUNT, record, tag=QUOTE_ID)
    assert result is BroadcastResult.SENT
    assert recorded == [prepared]
    _wait_receipt(anvil, prepared.tx_hash)

    verdict = pay.verify_payment(prepared.tx_hash, user.address, AMOUNT, tag=QUOTE_ID)
    assert verdict.state is PaymentState.PAID and verdict.final and verdict.confirmations >= 1
    # the tag binds the transaction to its quote: another quote cannot claim it
    other = pay.verify_payment(prepared.tx_hash, user.address, AMOUNT, tag="f" * 32)
    assert other.state is PaymentState.WRONG_TRANSFER
    assert anvil.balance(anvil.treasury.address) == treasury_before + AMOUNT
    assert anvil.balance(user.address) == user_before - AMOUNT

    # a retried task re-sends the recorded bytes: no second transfer
    for _ in range(3):
        assert pay.broadcast(recorded[0]) is BroadcastResult.KNOWN
    anvil.mine(2)
    assert anvil.balance(anvil.treasury.address) == treasury_before + AMOUNT
    assert pay.verify_payment(prepared.tx_hash, user.address, AMOUNT).paid
    # the allowance is used up: a second payment for the same approval cannot go through
    assert pay.check(user.address, AMOUNT).status is CheckStatus.ALLOWANCE_TOO_LOW


def test_crash_between_record_and_broadcast_sends_once(anvil: ChainEnv) -> None:
    pay = anvil.payments()
    user = anvil.account(4)
    _approve(anvil, 4, AMOUNT)
    treasury_before = anvil.balance(anvil.treasury.address)

    class Crash(Exception):
        pass

    recorded: list[dict[str, object]] = []

    def record_then_crash(prepared: PreparedTx) -> None:
        recorded.append(prepared.to_dict())
        raise Crash  # the worker dies after the durable write, before broadcast

    with pytest.raises(Crash):
        pay.pay(user.address, AMOUNT, record_then_crash)
    assert anvil.balance(anvil.treasury.address) == treasury_before

    # the re-delivered task finds the record and broadcasts the same bytes (twice, even)
    prepared = PreparedTx.from_dict(recorded[0])
    assert pay.broadcast(prepared) is BroadcastResult.SENT
    assert pay.broadcast(prepared) is BroadcastResult.KNOWN
    _wait_receipt(anvil, prepared.tx_hash)
    assert pay.verify_payment(prepared.tx_hash, user.address, AMOUNT).paid
    assert anvil.balance(anvil.treasury.address) == treasury_before + AMOUNT


def test_orphan_with_reused_nonce_is_dropped_never_mined(anvil: ChainEnv) -> None:
    pay = anvil.payments()
    user = anvil.account(3)
    _approve(anvil, 3, 2 * AMOUNT)
    treasury_before = anvil.balance(anvil.treasury.address)

    orphan = pay.prepare_payment(user.address, AMOUNT, tag="a" * 32)  # recorded, node went away
    other = pay.prepare_payment(user.address, AMOUNT, tag="b" * 32)  # another job: same nonce
    assert orphan.nonce == other.nonce and orphan.tx_hash != other.tx_hash
    assert pay.broadcast(other) is BroadcastResult.SENT
    _wait_receipt(anvil, other.tx_hash)

    assert pay.broadcast(orphan) is BroadcastResult.DROPPED
    assert pay.verify_payment(orphan.tx_hash, user.address, AMOUNT).state is PaymentState.PENDING
    assert anvil.balance(anvil.treasury.address) == treasury_before + AMOUNT


# --- the payment matrix: none of these is PAID ---------------------------------------------


def test_tags_make_same_user_and_amount_distinct(anvil: ChainEnv) -> None:
    pay = anvil.payments()
    user = anvil.account(3)
    _approve(anvil, 3, AMOUNT)
    nonce = pay.next_nonce()
    plain = [
        pay.prepare_payment(user.address, AMOUNT, nonce=nonce, gas=FORCED_GAS) for _ in range(2)
    ]
    tagged = [
        pay.prepare_payment(user.address, AMOUNT, nonce=nonce, gas=FORCED_GAS, tag=t)
        for t in ("1", "2")
    ]
    # deterministic signing: without a tag two quotes could share one transaction hash
    assert plain[0].tx_hash == plain[1].tx_hash
    assert tagged[0].tx_hash != tagged[1].tx_hash
    # an untagged transfer does not pay a tagged quote
    prepared, _ = pay.pay(user.address, AMOUNT, lambda p: None)
    _wait_receipt(anvil, prepared.tx_hash)
    assert pay.verify_payment(prepared.tx_hash, user.address, AMOUNT).paid
    verdict = pay.verify_payment(prepared.tx_hash, user.address, AMOUNT, tag=QUOTE_ID)
    assert verdict.state is PaymentState.WRONG_TRANSFER


def test_reverted_transfer_is_not_paid(anvil: ChainEnv) -> None:
    pay = anvil.payments()
    user = anvil.account(4)
    _approve(anvil, 4, 0)
    assert pay.check(user.address, AMOUNT).status is CheckStatus.ALLOWANCE_TOO_LOW
    with pytest.raises(TransferWouldRevertError):
        pay.prepare_payment(user.address, AMOUNT)
    treasury_before = anvil.balance(anvil.treasury.address)

    prepared = pay.prepare_payment(user.address, AMOUNT, gas=FORCED_GAS)
    assert pay.broadcast(prepared) is BroadcastResult.SENT
    _wait_receipt(anvil, prepared.tx_hash)
    verdict = pay.verify_payment(prepared.tx_hash, user.address, AMOUNT)
    assert verdict.state is PaymentState.REVERTED and verdict.final
    assert anvil.balance(anvil.treasury.address) == treasury_before


def test_wrong_recipient_is_not_paid(anvil: ChainEnv) -> None:
    pay = anvil.payments()
    user, elsewhere = anvil.account(3), anvil.account(9)
    _approve(anvil, 3, AMOUNT)
    prepared = pay.prepare_transfer_from(user.address, elsewhere.address, AMOUNT)
    assert pay.broadcast(prepared) is BroadcastResult.SENT
    _wait_receipt(anvil, prepared.tx_hash)
    verdict = pay.verify_payment(prepared.tx_hash, user.address, AMOUNT)
    assert verdict.state is PaymentState.WRONG_TRANSFER
    # the same transaction is a good transfer to where it really went
    assert pay.verify_payment(
        prepared.tx_hash, user.address, AMOUNT, recipient=elsewhere.address
    ).paid


def test_wrong_token_is_not_paid(anvil: ChainEnv) -> None:
    pay = anvil.payments()
    user = anvil.account(3)
    other_token = anvil.deploy_token()
    assert other_token.lower() != anvil.token_address.lower()
    anvil.token_call(anvil.deployer, "mint", user.address, AMOUNT, token=other_token)
    _approve(anvil, 3, AMOUNT, token=other_token)
    other = anvil.payments(token_address=other_token)
    treasury_before = anvil.balance(anvil.treasury.address)

    prepared, result = other.pay(user.address, AMOUNT, lambda p: None)
    assert result is BroadcastResult.SENT
    _wait_receipt(anvil, prepared.tx_hash)
    assert other.verify_payment(prepared.tx_hash, user.address, AMOUNT).paid  # in the other token
    verdict = pay.verify_payment(prepared.tx_hash, user.address, AMOUNT)
    assert verdict.state is PaymentState.WRONG_TRANSFER
    assert anvil.balance(anvil.treasury.address) == treasury_before


def test_one_unit_short_is_not_paid(anvil: ChainEnv) -> None:
    pay = anvil.payments()
    user = anvil.account(4)
    _approve(anvil, 4, AMOUNT)
    prepared, _ = pay.pay(user.address, AMOUNT - 1, lambda p: None)
    _wait_receipt(anvil, prepared.tx_hash)
    assert (
        pay.verify_payment(prepared.tx_hash, user.address, AMOUNT).state
        is PaymentState.WRONG_TRANSFER
    )
    assert (
        pay.verify_payment(prepared.tx_hash, user.address, AMOUNT + 1).state
        is PaymentState.WRONG_TRANSFER
    )
    assert pay.verify_payment(prepared.tx_hash, user.address, AMOUNT - 1).paid


def test_allowance_short_is_not_paid(anvil: ChainEnv) -> None:
    pay = anvil.payments()
    user = anvil.account(3)
    _approve(anvil, 3, AMOUNT - 1)
    check = pay.check(user.address, AMOUNT)
    assert check.status is CheckStatus.ALLOWANCE_TOO_LOW and check.allowance == AMOUNT - 1
    assert not check.ok
    with pytest.raises(TransferWouldRevertError):
        pay.prepare_payment(user.address, AMOUNT)
    prepared = pay.prepare_payment(user.address, AMOUNT, gas=FORCED_GAS)
    pay.broadcast(prepared)
    _wait_receipt(anvil, prepared.tx_hash)
    assert pay.verify_payment(prepared.tx_hash, user.address, AMOUNT).state is PaymentState.REVERTED
    _assert_not_paid(pay, prepared.tx_hash, user.address, AMOUNT)


def test_balance_short_is_not_paid(anvil: ChainEnv) -> None:
    pay = anvil.payments()
    user = anvil.account(5)  # holds no tokens at deploy time
    anvil.token_call(
        anvil.account(3), "transfer", user.address, AMOUNT - 1 - anvil.balance(user.address)
    )
    _approve(anvil, 5, AMOUNT)
    check = pay.check(user.address, AMOUNT)
    assert check.status is CheckStatus.BALANCE_TOO_LOW and check.balance == AMOUNT - 1
    treasury_before = anvil.balance(anvil.treasury.address)
    prepared = pay.prepare_payment(user.address, AMOUNT, gas=FORCED_GAS)
    pay.broadcast(prepared)
    _wait_receipt(anvil, prepared.tx_hash)
    assert pay.verify_payment(prepared.tx_hash, user.address, AMOUNT).state is PaymentState.REVERTED
    assert anvil.balance(anvil.treasury.address) == treasury_before
    assert anvil.balance(user.address) == AMOUNT - 1


def test_unknown_hash_is_pending(anvil: ChainEnv) -> None:
    verdict = anvil.payments().verify_payment("0x" + "ab" * 32, anvil.account(3).address, AMOUNT)
    assert verdict.state is PaymentState.PENDING and not verdict.final


# --- confirmations, refunds, concurrency ---------------------------------------------------


def test_confirmations_are_required(anvil: ChainEnv) -> None:
    pay = anvil.payments(confirmations=3)
    user = anvil.account(4)
    _approve(anvil, 4, AMOUNT)
    prepared, _ = pay.pay(user.address, AMOUNT, lambda p: None)
    _wait_receipt(anvil, prepared.tx_hash)
    verdict = pay.verify_payment(prepared.tx_hash, user.address, AMOUNT)
    assert verdict.state is PaymentState.CONFIRMING and verdict.confirmations == 1
    anvil.mine(1)
    assert (
        pay.verify_payment(prepared.tx_hash, user.address, AMOUNT).state is PaymentState.CONFIRMING
    )
    anvil.mine(1)
    verdict = pay.verify_payment(prepared.tx_hash, user.address, AMOUNT)
    assert verdict.state is PaymentState.PAID and verdict.confirmations == 3


def test_refund_returns_the_amount(anvil: ChainEnv) -> None:
    pay = anvil.payments()
    user = anvil.account(3)
    _approve(anvil, 3, AMOUNT)
    user_start = anvil.balance(user.address)
    treasury_start = anvil.balance(anvil.treasury.address)
    paid, _ = pay.pay(user.address, AMOUNT, lambda p: None)
    _wait_receipt(anvil, paid.tx_hash)
    assert pay.verify_payment(paid.tx_hash, user.address, AMOUNT).paid
    assert anvil.balance(user.address) == user_start - AMOUNT

    recorded: list[PreparedTx] = []
    refund, result = pay.refund(user.address, AMOUNT, recorded.append)
    assert result is BroadcastResult.SENT and recorded == [refund]
    assert pay.broadcast(refund) is BroadcastResult.KNOWN
    _wait_receipt(anvil, refund.tx_hash)
    assert pay.verify_refund(refund.tx_hash, user.address, AMOUNT).paid
    # a refund is not a payment into the treasury
    assert not pay.verify_payment(refund.tx_hash, user.address, AMOUNT).paid
    assert anvil.balance(user.address) == user_start
    assert anvil.balance(anvil.treasury.address) == treasury_start


def test_concurrent_senders_share_the_nonce_lock(anvil: ChainEnv) -> None:
    lock = threading.Lock()  # stands in for the Redis lock shared by worker processes
    workers = [anvil.payments() for _ in range(2)]
    for w in workers:
        w._nonce_lock = lock
    user = anvil.account(4)
    n = 6
    _approve(anvil, 4, n * 1000)
    treasury_before = anvil.balance(anvil.treasury.address)
    sent: list[PreparedTx] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            prepared, _ = workers[i % 2].pay(user.address, 1000, lambda p: None)
            sent.append(prepared)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len({p.nonce for p in sent}) == n
    for p in sent:
        _wait_receipt(anvil, p.tx_hash)
        assert workers[0].verify_payment(p.tx_hash, user.address, 1000).paid
    assert anvil.balance(anvil.treasury.address) == treasury_before + n * 1000


# --- the dev chain itself --------------------------------------------------------------------


def test_deploy_config_keeps_the_key_out_of_the_json(anvil: ChainEnv) -> None:
    config = json.loads(anvil.config_path.read_text())
    assert config == anvil.config
    assert config["chain_id"] == 31337
    assert config["token"] == {
        "address": anvil.token_address,
        "name": "OCC Test Token",
        "symbol": "OCCT",
        "decimals": 18,
    }
    key_file = Path(config["gateway_key_file"])
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key = key_file.read_text().strip()
    assert key == "0x" + bytes(anvil.gateway.key).hex()
    assert key[2:] not in anvil.config_path.read_text()
    assert config["gateway_address"] == anvil.gateway.address
    pay = anvil.payments()
    assert pay.allowance(config["treasury_address"]) == 2**256 - 1  # refunds are pre-approved


def test_start_anvil_refuses_a_port_in_use(anvil: ChainEnv) -> None:
    port = int(anvil.rpc_url.rsplit(":", 1)[1])
    with pytest.raises(devchain.DevchainError, match="in use"):
        devchain.start_anvil(port)
    assert anvil.w3.eth.chain_id == 31337


def test_cli_up_deploys_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = devchain.free_port()
    out = tmp_path / "devchain.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.chain.devchain",
            "up",
            "--port",
            str(port),
            "--out",
            str(out),
        ],
        cwd=devchain.REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not out.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        config = json.loads(out.read_text())
        assert devchain.rpc_chain_id(config["rpc_url"]) == 31337
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "OCCT" in output
        assert Path(config["gateway_key_file"]).read_text().strip()[2:] not in output
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""ERC-20 payments on an EVM chain: allowance/balance checks, write-ahead transferFrom, receipts.

protocol.md §5. The gateway wallet (the quote's approveAddress) sends
``transferFrom(user, treasury, amount)`` for a payment and ``transferFrom(treasury, user,
amount)`` for a refund (the treasury has approved the gateway). Every transaction is built
and signed locally with an explicit account nonce and handed to the caller to record durably
*before* it is broadcast, so a retried task re-sends the same signed bytes (same hash) and can
never send a second transfer. This module keeps no state: the caller (workers/jobs.py) does.

Over ~400 lines because payment, refund and their receipts share one build-sign-record-send path.
"""

from __future__ import annotations

import enum
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import requests
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3RPCError,
)

from occ_protocol.signatures import address_bytes, normalize_address

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN_ARTIFACT = REPO_ROOT / "chain" / "TestToken.json"

# keccak256("Transfer(address,address,uint256)")
TRANSFER_TOPIC = bytes.fromhex("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef")
GAS_MARGIN = 1.25  # multiplier over eth_estimateGas
DEFAULT_PRIORITY_FEE = 10**9  # 1 gwei, when the node has no eth_maxPriorityFeePerGas
MAX_TAG_BYTES = 64
TRANSFER_FROM_CALLDATA_BYTES = 4 + 3 * 32


class PaymentError(Exception):
    """Base class of errors raised by workers.chain.payments (no HTTP codes; api/errors.py maps)."""


class ChainUnavailableError(PaymentError):
    """The RPC node did not answer (connection refused, timeout): transient, retry later."""


class WrongChainError(ChainUnavailableError):
    """The RPC node serves another chain than the configured one: nothing is read or sent there.

    Transient like an unreachable node (the operator fixes the RPC URL, the task retries), so a
    quote is never failed, charged or refunded on the wrong network's answers.
    """


class NonceConflictError(PaymentError):
    """Another transaction with the same account nonce is pending: transient, retry later.

    It resolves into KNOWN (ours was mined) or DROPPED (the other one was) on a later broadcast.
    """


class TransferWouldRevertError(PaymentError):
    """Gas estimation reverted: allowance or balance changed since check(); re-check."""


class BroadcastError(PaymentError):
    """The node rejected the transaction for a reason that retrying the same bytes won't fix."""


class CheckStatus(enum.StrEnum):
    """Outcome of TokenPayments.check, named like the status codes of protocol.md §4."""

    OK = "OK"
    ALLOWANCE_TOO_LOW = "ALLOWANCE_TOO_LOW"
    BALANCE_TOO_LOW = "BALANCE_TOO_LOW"


@dataclass(frozen=True)
class CheckResult:
    """Allowance and balance of a payer against the amount due (smallest token units)."""

    status: CheckStatus
    allowance: int
    balance: int
    amount: int

    @property
    def ok(self) -> bool:
        return self.status is CheckStatus.OK


@dataclass(frozen=True)
class PreparedTx:
    """A locally signed transaction, to be recorded durably before broadcast.

    ``raw_tx_hex`` is the signed RLP (public data, no key material); ``to_dict``/``from_dict``
    give a JSON-safe form for Redis or a job record.
    """

    nonce: int
    tx_hash: str
    raw_tx_hex: str
    sender: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreparedTx:
        return cls(
            nonce=int(data["nonce"]),
            tx_hash=str(data["tx_hash"]),
            raw_tx_hex=str(data["raw_tx_hex"]),
            sender=str(data["sender"]),
        )


class BroadcastResult(enum.StrEnum):
    """What broadcast() found: SENT now, KNOWN (already pending or mined), or DROPPED.

    DROPPED means another transaction used this account nonce and was mined, so this one can
    never be: the caller may prepare a new transaction (a new nonce) without risk of paying
    twice.
    """

    SENT = "SENT"
    KNOWN = "KNOWN"
    DROPPED = "DROPPED"


class PaymentState(enum.StrEnum):
    """Verdict of verify_payment on one transaction hash."""

    PENDING = "PENDING"  # no receipt yet (in the mempool, unknown, or reorged out)
    CONFIRMING = "CONFIRMING"  # mined, fewer blocks on top than required
    PAID = "PAID"  # status 1, the exact Transfer log, enough confirmations
    REVERTED = "REVERTED"  # status 0, with enough confirmations
    WRONG_TRANSFER = "WRONG_TRANSFER"  # status 1 but no matching Transfer log from the token


FINAL_STATES = frozenset({PaymentState.PAID, PaymentState.REVERTED, PaymentState.WRONG_TRANSFER})


@dataclass(frozen=True)
class PaymentVerdict:
    """State of a payment or refund transaction, with the reason in words."""

    state: PaymentState
    tx_hash: str
    block_number: int | None = None
    confirmations: int = 0
    reason: str = ""

    @property
    def paid(self) -> bool:
        return self.state is PaymentState.PAID

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@cache
def _artifact_cached(path: str) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(Path(path).read_text()))


def load_token_artifact(path: str | Path | None = None) -> dict[str, Any]:
    """Return the committed build artifact (abi, bytecode, compiler, sources) as a dict."""
    return _artifact_cached(str(path or TOKEN_ARTIFACT))


def load_token_abi(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Return the ERC-20 ABI from chain/TestToken.json."""
    return cast(list[dict[str, Any]], load_token_artifact(path)["abi"])


def build_fee_fields(w3: Web3) -> dict[str, int]:
    """Return EIP-1559 fee fields if the chain has a base fee, else a legacy gasPrice."""
    block = w3.eth.get_block("latest")
    base_fee = block.get("baseFeePerGas")
    if base_fee is None:
        return {"gasPrice": int(w3.eth.gas_price)}
    try:
        tip = int(w3.eth.max_priority_fee)
    except (Web3RPCError, ValueError):
        tip = DEFAULT_PRIORITY_FEE
    return {"maxFeePerGas": 2 * int(base_fee) + tip, "maxPriorityFeePerGas": tip}


def _hex(value: bytes | HexBytes | str) -> str:
    if isinstance(value, str):
        return value if value.startswith("0x") else "0x" + value
    return "0x" + bytes(value).hex()


def _tag_bytes(tag: bytes | str | None) -> bytes:
    if tag is None:
        return b""
    raw = tag.encode("utf-8") if isinstance(tag, str) else bytes(tag)
    if len(raw) > MAX_TAG_BYTES:
        raise ValueError(f"tag must be at most {MAX_TAG_BYTES} bytes")
    return raw


def _rpc_message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    if not isinstance(message, str):
        message = str(exc)
    return message.lower()


@contextmanager
def _chain_errors() -> Iterator[None]:
    """Turn transport failures of the RPC node into ChainUnavailableError."""
    try:
        yield
    except (
        requests.ConnectionError,
        requests.Timeout,
        ProviderConnectionError,
        TimeExhausted,
        ConnectionError,
        TimeoutError,
    ) as exc:
        raise ChainUnavailableError("the chain RPC node is unavailable") from exc


NonceLock = AbstractContextManager[Any] | Callable[[], AbstractContextManager[Any]]


class TokenPayments:
    """Payments in one ERC-20 token, sent by the gateway wallet, paid into the treasury.

    ``nonce_lock`` serialises account-nonce allocation across processes: a context manager
    (e.g. a redis-py Lock, re-entered on each use) or a zero-argument factory returning one.
    The default is a process-local lock, enough for one process only. ``chain_id`` is the
    configured chain: every transaction is signed for it (EIP-155, so it is invalid anywhere
    else) after the node confirmed it serves that chain (WrongChainError otherwise).
    """

    def __init__(
        self,
        w3: Web3,
        token_address: str,
        abi: Sequence[Mapping[str, Any]],
        gateway: LocalAccount,
        treasury: str,
        confirmations: int = 1,
        *,
        nonce_lock: NonceLock | None = None,
        chain_id: int | None = None,
    ) -> None:
        if confirmations < 1:
            raise ValueError("confirmations must be at least 1")
        self.w3 = w3
        self.token_address: ChecksumAddress = normalize_address(token_address)
        self.token = w3.eth.contract(address=self.token_address, abi=list(abi))
        self.gateway = gateway
        self.gateway_address: ChecksumAddress = normalize_address(gateway.address)
        self.treasury_address: ChecksumAddress = normalize_address(treasury)
        self.confirmations = confirmations
        self._nonce_lock: NonceLock = nonce_lock if nonce_lock is not None else threading.Lock()
        self._held = threading.local()
        self.expected_chain_id = chain_id
        self._chain_id: int | None = None

    # --- reads ----------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self.verify_chain()
        assert self._chain_id is not None
        return self._chain_id

    def verify_chain(self) -> int:
        """Ask the node for its chain id (eth_chainId) and return it.

        Raises WrongChainError if it is not the configured ``chain_id``, ChainUnavailableError
        if the node does not answer.
        """
        with _chain_errors():
            served = int(self.w3.eth.chain_id)
        if self.expected_chain_id is not None and served != self.expected_chain_id:
            raise WrongChainError(
                f"the RPC node serves chain {served}, not the configured chain "
                f"{self.expected_chain_id}"
            )
        self._chain_id = served
        return served

    def allowance(self, owner: str, spender: str | None = None) -> int:
        """Return allowance(owner, spender or the gateway wallet), in smallest units."""
        with _chain_errors():
            return int(
                self.token.functions.allowance(
                    normalize_address(owner), normalize_address(spender or self.gateway_address)
                ).call()
            )

    def balance_of(self, owner: str) -> int:
        """Return balanceOf(owner), in smallest units."""
        with _chain_errors():
            return int(self.token.functions.balanceOf(normalize_address(owner)).call())

    def check(self, user: str, amount: int) -> CheckResult:
        """Return whether ``user`` has approved the gateway for, and holds, ``amount``.

        The allowance is checked first (status 200 before 201 in protocol.md §4).
        """
        allowance = self.allowance(user)
        balance = self.balance_of(user)
        if allowance < amount:
            status = CheckStatus.ALLOWANCE_TOO_LOW
        elif balance < amount:
            status = CheckStatus.BALANCE_TOO_LOW
        else:
            status = CheckStatus.OK
        return CheckResult(status=status, allowance=allowance, balance=balance, amount=amount)

    # --- account nonces -------------------------------------------------------------------

    @contextmanager
    def nonce_guard(self) -> Iterator[None]:
        """Hold the nonce lock (re-entrant within one thread) around allocate, record, send."""
        depth = getattr(self._held, "depth", 0)
        if depth:
            self._held.depth = depth + 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        lock = self._nonce_lock
        manager = lock if isinstance(lock, AbstractContextManager) else lock()
        with manager:
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0

    def next_nonce(self) -> int:
        """Return the gateway's next account nonce (its pending transaction count).

        Only meaningful inside nonce_guard() held until the transaction is broadcast; a
        transaction recorded but never broadcast leaves no gap: its nonce is reused, and the
        orphan is reported DROPPED by a later broadcast().
        """
        with self.nonce_guard(), _chain_errors():
            return int(self.w3.eth.get_transaction_count(self.gateway_address, "pending"))

    # --- writes ---------------------------------------------------------------------------

    def prepare_transfer_from(
        self,
        from_addr: str,
        to_addr: str,
        amount: int,
        *,
        nonce: int | None = None,
        gas: int | None = None,
        tag: bytes | str | None = None,
    ) -> PreparedTx:
        """Build and sign ``transferFrom(from_addr, to_addr, amount)`` from the gateway wallet.

        Returns the PreparedTx (nonce, hash, signed bytes) without sending it. ``nonce``
        defaults to next_nonce(); ``gas`` defaults to an estimate (raises
        TransferWouldRevertError if the call would revert). ``tag`` (e.g. the quote id) is
        appended to the calldata, which the ABI decoder ignores: without it two quotes of
        one user for one amount could sign byte-identical transactions with one hash.
        Record the result durably, then broadcast() it; prefer pay()/refund(), which hold
        the nonce lock across all three.
        """
        if amount <= 0:
            raise ValueError("amount must be positive")
        data = (
            self.token.encode_abi(
                "transferFrom",
                args=[normalize_address(from_addr), normalize_address(to_addr), int(amount)],
            )
            + _tag_bytes(tag).hex()
        )
        with self.nonce_guard(), _chain_errors():
            tx: dict[str, Any] = {
                "from": self.gateway_address,
                "to": self.token_address,
                "data": data,
                "value": 0,
                # re-asked per transaction when configured: an RPC URL now serving another
                # network is refused before anything is signed
                "chainId": self.verify_chain() if self.expected_chain_id else self.chain_id,
                "nonce": self.next_nonce() if nonce is None else int(nonce),
            }
            if gas is None:
                try:
                    estimate = self.w3.eth.estimate_gas(cast(Any, tx))
                except ContractLogicError as exc:
                    raise TransferWouldRevertError("transferFrom would revert") from exc
                gas = int(estimate * GAS_MARGIN)
            tx["gas"] = int(gas)
            tx.update(build_fee_fields(self.w3))
        signed = self.gateway.sign_transaction(tx)
        return PreparedTx(
            nonce=int(tx["nonce"]),
            tx_hash=_hex(signed.hash),
            raw_tx_hex=_hex(signed.raw_transaction),
            sender=self.gateway_address,
        )

    def prepare_payment(self, user: str, amount: int, **kwargs: Any) -> PreparedTx:
        """Return a prepared ``transferFrom(user, treasury, amount)`` (see prepare_transfer_from)."""
        return self.prepare_transfer_from(user, self.treasury_address, amount, **kwargs)

    def prepare_refund(self, user: str, amount: int, **kwargs: Any) -> PreparedTx:
        """Return a prepared ``transferFrom(treasury, user, amount)`` sent by the gateway."""
        return self.prepare_transfer_from(self.treasury_address, user, amount, **kwargs)

    def broadcast(self, prepared: PreparedTx) -> BroadcastResult:
        """Send the recorded signed bytes; idempotent.

        Returns SENT, or KNOWN if the node already has this transaction (pending or mined),
        or DROPPED if its nonce was taken by another mined transaction. Raises
        NonceConflictError (transient) while a different transaction with the same nonce is
        pending, ChainUnavailableError if the node is down, BroadcastError otherwise.
        """
        with _chain_errors():
            try:
                self.w3.eth.send_raw_transaction(HexBytes(prepared.raw_tx_hex))
                return BroadcastResult.SENT
            except Web3RPCError as exc:
                message = _rpc_message(exc)
                if self._tx_known(prepared.tx_hash):
                    return BroadcastResult.KNOWN
                if "already known" in message or "already imported" in message:
                    return BroadcastResult.KNOWN
                if "nonce too low" in message or "nonce is too low" in message:
                    mined = self.w3.eth.get_transaction_count(
                        normalize_address(prepared.sender), "latest"
                    )
                    if mined > prepared.nonce and not self._tx_known(prepared.tx_hash):
                        return BroadcastResult.DROPPED
                    raise NonceConflictError("the account nonce is in use") from exc
                if "underpriced" in message or "replacement" in message:
                    raise NonceConflictError(
                        "another transaction with this nonce is pending"
                    ) from exc
                raise BroadcastError("the node rejected the transaction") from exc

    def _tx_known(self, tx_hash: str) -> bool:
        try:
            self.w3.eth.get_transaction(HexBytes(tx_hash))
        except TransactionNotFound:
            return False
        return True

    def send(
        self, prepare: Callable[[], PreparedTx], record: Callable[[PreparedTx], None]
    ) -> tuple[PreparedTx, BroadcastResult]:
        """Under the nonce lock: prepare, ``record(prepared)`` durably, then broadcast.

        If ``record`` raises, nothing is broadcast. Returns (prepared, broadcast result).
        """
        with self.nonce_guard():
            prepared = prepare()
            record(prepared)
            return prepared, self.broadcast(prepared)

    def pay(
        self,
        user: str,
        amount: int,
        record: Callable[[PreparedTx], None],
        tag: bytes | str | None = None,
    ) -> tuple[PreparedTx, BroadcastResult]:
        """Charge ``amount`` from ``user`` into the treasury, write-ahead (see send).

        Pass the quote id as ``tag`` (see prepare_transfer_from).
        """
        return self.send(lambda: self.prepare_payment(user, amount, tag=tag), record)

    def refund(
        self,
        user: str,
        amount: int,
        record: Callable[[PreparedTx], None],
        tag: bytes | str | None = None,
    ) -> tuple[PreparedTx, BroadcastResult]:
        """Return ``amount`` from the treasury to ``user``, write-ahead (see send)."""
        return self.send(lambda: self.prepare_refund(user, amount, tag=tag), record)

    # --- verification ---------------------------------------------------------------------

    def verify_payment(
        self,
        tx_hash: str,
        payer: str,
        amount: int,
        recipient: str | None = None,
        tag: bytes | str | None = None,
    ) -> PaymentVerdict:
        """Return the verdict on ``tx_hash`` as a payment of ``amount`` from payer to recipient.

        PAID needs receipt status 1, a Transfer log emitted by this token contract with
        exactly from=payer, to=recipient (default: the treasury), value=amount, and at least
        ``confirmations`` blocks (the receipt's block counts as one). With ``tag``, the
        transaction must also be a direct transferFrom call on the token whose calldata
        ends with that tag (WRONG_TRANSFER otherwise). REVERTED and WRONG_TRANSFER are also
        given only once confirmed; before that, CONFIRMING.
        """
        payer_b = address_bytes(payer)
        recipient_b = address_bytes(recipient or self.treasury_address)
        with _chain_errors():
            try:
                receipt = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return PaymentVerdict(PaymentState.PENDING, tx_hash, reason="no receipt yet")
            block_number = receipt.get("blockNumber")
            if block_number is None:
                return PaymentVerdict(PaymentState.PENDING, tx_hash, reason="not mined yet")
            canonical = self.w3.eth.get_block(block_number)
            if bytes(canonical["hash"]) != bytes(receipt["blockHash"]):
                return PaymentVerdict(PaymentState.PENDING, tx_hash, reason="block reorganised")
            head = int(self.w3.eth.block_number)
            tag_ok = tag is None or self._has_tag(tx_hash, _tag_bytes(tag))
        confirmations = max(0, head - int(block_number) + 1)
        if int(receipt["status"]) != 1:
            state, reason = PaymentState.REVERTED, "transaction reverted"
        elif not tag_ok:
            state, reason = (
                PaymentState.WRONG_TRANSFER,
                "transaction is not tagged for this payment",
            )
        elif self._has_transfer(receipt["logs"], payer_b, recipient_b, int(amount)):
            state, reason = PaymentState.PAID, "transfer confirmed"
        else:
            state, reason = PaymentState.WRONG_TRANSFER, "no matching Transfer log from the token"
        if confirmations < self.confirmations:
            reason = f"{reason}; {confirmations}/{self.confirmations} confirmations"
            state = PaymentState.CONFIRMING
        return PaymentVerdict(state, tx_hash, int(block_number), confirmations, reason)

    def verify_refund(
        self, tx_hash: str, user: str, amount: int, tag: bytes | str | None = None
    ) -> PaymentVerdict:
        """Return the verdict on a refund: a transfer of ``amount`` from the treasury to user."""
        return self.verify_payment(tx_hash, self.treasury_address, amount, recipient=user, tag=tag)

    def _has_tag(self, tx_hash: str, tag: bytes) -> bool:
        tx = self.w3.eth.get_transaction(HexBytes(tx_hash))
        data = bytes(HexBytes(tx.get("input", b"")))
        to = tx.get("to")
        return (
            to is not None
            and address_bytes(str(to)) == address_bytes(self.token_address)
            and len(data) == TRANSFER_FROM_CALLDATA_BYTES + len(tag)
            and data[TRANSFER_FROM_CALLDATA_BYTES:] == tag
        )

    def _has_transfer(
        self, logs: Sequence[Mapping[str, Any]], payer: bytes, recipient: bytes, amount: int
    ) -> bool:
        token = address_bytes(self.token_address)
        for entry in logs:
            topics = [bytes(t) for t in entry.get("topics", [])]
            if (
                address_bytes(str(entry["address"])) != token
                or len(topics) != 3
                or topics[0] != TRANSFER_TOPIC
            ):
                continue
            data = bytes(entry.get("data", b""))
            if (
                topics[1][-20:] == payer
                and topics[2][-20:] == recipient
                and len(data) == 32
                and int.from_bytes(data, "big") == amount
            ):
                return True
        return False

"""The ERC-20 payment token on chain (approve, balanceOf, allowance) and choosing it from GET /.

web3 is imported by Token itself: it takes over a second to import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import requests

from client.checks import check_address
from client.errors import ClientError, NetworkError
from occ_protocol.formats import is_address

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

ERC20_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "approve",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "allowance",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "balanceOf",
        "stateMutability": "view",
        "inputs": [{"name": "account", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "decimals",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    },
    {
        "type": "function",
        "name": "symbol",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "string"}],
    },
]


def format_units(amount: int, decimals: int) -> str:
    """``1500000000000000000, 18`` -> ``"1.5"`` (exact, no floats)."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**decimals) if decimals > 0 else (abs(amount), 0)
    text = str(whole)
    if decimals > 0 and frac:
        text += "." + str(frac).rjust(decimals, "0").rstrip("0")
    return sign + text


class Token:
    """An ERC-20 token through a JSON-RPC node: approve (signed locally), balanceOf, allowance."""

    def __init__(self, rpc_url: str, token_address: str, chain_id: int | None = None) -> None:
        self.rpc_url = rpc_url
        from web3 import Web3

        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        self.address = check_address(token_address, "token address")
        self.contract = self.w3.eth.contract(address=self.address, abi=ERC20_ABI)
        self.expected_chain_id = chain_id

    def _rpc(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except requests.RequestException:
            raise NetworkError(f"cannot reach the chain RPC at {self.rpc_url} ({what})") from None
        except ClientError:
            raise
        except Exception as exc:
            raise ClientError(f"{what} failed: {type(exc).__name__}: {exc}") from None

    def check_chain(self) -> int:
        chain_id = int(self._rpc("eth_chainId", lambda: self.w3.eth.chain_id))
        if self.expected_chain_id is not None and chain_id != int(self.expected_chain_id):
            raise ClientError(
                f"the RPC at {self.rpc_url} is chain {chain_id}, but the quote is for chain "
                f"{self.expected_chain_id}"
            )
        return chain_id

    def balance_of(self, owner: str) -> int:
        who = check_address(owner)
        return int(self._rpc("balanceOf", lambda: self.contract.functions.balanceOf(who).call()))

    def allowance(self, owner: str, spender: str) -> int:
        o, s = check_address(owner), check_address(spender, "spender")
        return int(self._rpc("allowance", lambda: self.contract.functions.allowance(o, s).call()))

    def metadata(self) -> dict[str, Any]:
        """symbol and decimals (None when the token does not implement them)."""
        out: dict[str, Any] = {"symbol": None, "decimals": None}
        for key in out:
            try:
                out[key] = getattr(self.contract.functions, key)().call()
            except Exception:
                out[key] = None
        return out

    def approve(
        self, account: LocalAccount, spender: str, amount: int, timeout: float = 120
    ) -> dict[str, Any]:
        """Send ``approve(spender, amount)`` from ``account`` and wait for a successful receipt."""
        spender = check_address(spender, "spender")
        if amount < 0 or amount >= 2**256:
            raise ClientError("amount must be between 0 and 2**256 - 1")
        chain_id = self.check_chain()

        def build_and_send() -> bytes:
            nonce = self.w3.eth.get_transaction_count(account.address, "pending")
            tx = self.contract.functions.approve(spender, amount).build_transaction(
                {"from": account.address, "nonce": nonce, "chainId": chain_id}
            )
            signed = account.sign_transaction(dict(tx))  # type: ignore[arg-type]
            return bytes(self.w3.eth.send_raw_transaction(signed.raw_transaction))

        tx_hash = self._rpc("sending approve", build_and_send)
        receipt = self._rpc(
            "waiting for the approve receipt",
            lambda: self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=timeout, poll_latency=0.2
            ),
        )
        hex_hash = "0x" + tx_hash.hex()
        if int(receipt["status"]) != 1:
            raise ClientError(f"approve transaction {hex_hash} reverted")
        return {
            "txHash": hex_hash,
            "blockNumber": int(receipt["blockNumber"]),
            "owner": account.address,
            "spender": spender,
            "token": self.address,
            "amount": str(amount),
        }


# --- choosing a chain and token from GET / ---------------------------------------------------------


def pick_payment(
    types: Sequence[Mapping[str, Any]],
    storage_type: str,
    chain_id: int | None = None,
    token: str | None = None,
    prefer_token: str | None = None,
) -> tuple[int, str]:
    """(chainId, tokenAddress) accepted by ``storage_type``.

    ``token`` is an address or a symbol (matched against ``title``). Without a chain id the first
    payment entry is used (the one holding ``prefer_token`` if there is one); without a token, the
    preferred token if accepted, else the first accepted token.
    """
    entry = next(
        (t for t in types if isinstance(t, Mapping) and t.get("type") == storage_type), None
    )
    if entry is None:
        known = ", ".join(str(t.get("type")) for t in types if isinstance(t, Mapping))
        raise ClientError(
            f"the gateway has no storage type {storage_type!r} (it has: {known or 'none'})"
        )
    payments = [p for p in entry.get("payment") or [] if isinstance(p, Mapping)]

    def tokens_of(p: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [t for t in p.get("acceptedTokens") or [] if isinstance(t, Mapping) and "value" in t]

    def has(p: Mapping[str, Any], address: str | None) -> bool:
        return address is not None and any(
            str(t["value"]).lower() == address.lower() for t in tokens_of(p)
        )

    if chain_id is not None:
        payments = [p for p in payments if str(p.get("chainId")) == str(chain_id)]
        if not payments:
            raise ClientError(
                f"storage type {storage_type!r} does not accept payment on chain {chain_id}"
            )
    if not payments:
        raise ClientError(f"storage type {storage_type!r} lists no payment methods")
    token_is_address = token is not None and is_address(token)
    wanted = token if token_is_address else prefer_token
    chosen = next((p for p in payments if has(p, wanted)), payments[0])
    accepted = tokens_of(chosen)
    if token is not None:
        if token_is_address:
            if not has(chosen, token):
                raise ClientError(f"token {token} is not accepted on chain {chosen.get('chainId')}")
            address = token
        else:
            match = [t for t in accepted if str(t.get("title", "")).lower() == token.lower()]
            if not match:
                titles = ", ".join(str(t.get("title")) for t in accepted)
                raise ClientError(
                    f"no accepted token called {token!r} (accepted: {titles or 'none'})"
                )
            address = str(match[0]["value"])
    elif has(chosen, prefer_token):
        address = str(prefer_token)
    elif accepted:
        address = str(accepted[0]["value"])
    else:
        raise ClientError(f"no accepted tokens on chain {chosen.get('chainId')}")
    try:
        cid = int(chosen["chainId"])
    except (KeyError, TypeError, ValueError):
        raise ClientError("the gateway listed a payment method without a numeric chainId") from None
    return cid, check_address(address, "token address")

"""PAYMENT_CONFIG (workers/payment_config.py) and `python -m workers.check` without a chain: every
kind of error is one line naming its JSON path; the dev chain's file and several chains pass."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3
from web3.providers.base import JSONBaseProvider

from workers import check
from workers.chain.payments import TokenPayments, WrongChainError, load_token_abi
from workers.payment_config import (
    PaymentConfigError,
    load_payment_config,
    parse_payment_config,
    read_payment_config,
)
from workers.services.paid.quotes import GIB, SECONDS_PER_MONTH, payment_options, price_occ
from workers.settings import ConfigError, Settings

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
USDC = "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"
GATEWAY_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil #1
GATEWAY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TREASURY = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def chain(chain_id: int = 31337, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "chain_id": chain_id,
        "rpc_url": "http://127.0.0.1:8545",
        "gateway_address": GATEWAY,
        "treasury_address": TREASURY,
        "token": {"address": TOKEN, "symbol": "OCCT", "decimals": 18},
    }
    data.update(overrides)
    return data


def two_chains() -> dict[str, Any]:
    second = chain(11155111, rpc_url="https://rpc.example.org/sepolia", confirmations=3)
    del second["token"]
    second["tokens"] = [
        {"address": TOKEN.lower(), "symbol": "OCEAN", "decimals": 18},
        {"address": USDC, "symbol": "USDC", "decimals": 6, "price_per_gib_month": "0.25"},
    ]
    return {"chains": [chain(), second]}


def lines(data: Any) -> list[str]:
    with pytest.raises(PaymentConfigError) as exc:
        parse_payment_config(data)
    assert isinstance(exc.value, ConfigError)  # every caller of ConfigError handles it
    return list(exc.value.lines)


def bad_second(**overrides: Any) -> dict[str, Any]:
    config = two_chains()
    config["chains"][1].update(overrides)
    return config


# --- one line per error -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            bad_second(gateway_address="0x1234"),
            "PAYMENT_CONFIG chains[1].gateway_address: Not a 0x-prefixed 20-byte hex address.",
            id="bad address",
        ),
        pytest.param(
            chain(treasury_address=TREASURY[:-1] + "c"),  # one letter's case changed
            "PAYMENT_CONFIG treasury_address: Mixed-case address fails its EIP-55 checksum: "
            "check it for a typo (all-lowercase skips the check).",
            id="bad checksum",
        ),
        pytest.param(
            bad_second(chain_id=31337),
            "PAYMENT_CONFIG chains[1].chain_id: Duplicate chain id 31337 (also chains[0]).",
            id="duplicate chain id",
        ),
        pytest.param(
            chain(rpc="http://x"),
            "PAYMENT_CONFIG rpc: Unknown field.",
            id="unknown key",
        ),
        pytest.param(
            {"chains": [chain(token={**chain()["token"], "price": "1"})]},
            "PAYMENT_CONFIG chains[0].token.price: Unknown field.",
            id="unknown token key",
        ),
        pytest.param(
            {"chains": [{k: v for k, v in chain().items() if k != "token"}]},
            "PAYMENT_CONFIG chains[0].token: Missing data for required field (or give tokens).",
            id="missing token",
        ),
        pytest.param(
            bad_second(tokens=[]),
            "PAYMENT_CONFIG chains[1].tokens: Must hold at least one token.",
            id="empty tokens",
        ),
        pytest.param(
            {
                "chains": [
                    chain(),
                    chain(5, token={"address": TOKEN, "symbol": "X", "decimals": 37}),
                ]
            },
            "PAYMENT_CONFIG chains[1].token.decimals: "
            "Must be greater than or equal to 0 and less than or equal to 36.",
            id="decimals out of range",
        ),
        pytest.param(
            chain(token={"address": TOKEN, "symbol": "X", "decimals": "18"}),
            "PAYMENT_CONFIG token.decimals: Not a valid integer.",
            id="decimals as a string",
        ),
        pytest.param(
            chain(
                token={"address": TOKEN, "symbol": "X", "decimals": 6, "price_per_gib_month": -1}
            ),
            "PAYMENT_CONFIG token.price_per_gib_month: Must be greater than or equal to 0.",
            id="negative price",
        ),
        pytest.param(
            chain(rpc_url="ws://127.0.0.1:8545"),
            "PAYMENT_CONFIG rpc_url: Not an http(s) URL.",
            id="websocket rpc",
        ),
        pytest.param(
            chain(confirmations=1001),
            "PAYMENT_CONFIG confirmations: "
            "Must be greater than or equal to 0 and less than or equal to 1000.",
            id="confirmations out of range",
        ),
        pytest.param(
            chain(chain_id=0),
            "PAYMENT_CONFIG chain_id: "
            "Must be greater than or equal to 1 and less than or equal to 9223372036854775807.",
            id="chain id zero",
        ),
        pytest.param(
            chain(gateway_address="0x" + "0" * 40),
            "PAYMENT_CONFIG gateway_address: Must not be the zero address.",
            id="zero address",
        ),
        pytest.param(
            {"chains": []},
            "PAYMENT_CONFIG chains: Must hold at least one chain.",
            id="no chains",
        ),
        pytest.param(
            {"chains": [chain(), "sepolia"]},
            "PAYMENT_CONFIG chains[1]: Must be a JSON object.",
            id="chain not an object",
        ),
        pytest.param(
            [chain()],
            'PAYMENT_CONFIG: must be a JSON object: one chain, or {"chains": [...]}',
            id="top level list",
        ),
    ],
)
def test_each_error_is_one_line_naming_its_path(data: Any, expected: str) -> None:
    assert lines(data) == [expected]


def test_every_error_is_reported_at_once_in_file_order() -> None:
    config = two_chains()
    config["chains"][0]["token"]["decimals"] = -1
    config["chains"][1]["tokens"][1]["address"] = "0xnope"
    config["chains"][1]["colour"] = "blue"
    assert lines(config) == [
        "PAYMENT_CONFIG chains[0].token.decimals: "
        "Must be greater than or equal to 0 and less than or equal to 36.",
        "PAYMENT_CONFIG chains[1].tokens[1].address: Not a 0x-prefixed 20-byte hex address.",
        "PAYMENT_CONFIG chains[1].colour: Unknown field.",
    ]


def test_a_token_twice_on_one_chain_and_token_with_tokens_are_refused() -> None:
    config = two_chains()
    config["chains"][1]["tokens"].append({"address": TOKEN, "symbol": "OCEAN2", "decimals": 18})
    assert lines(config) == [
        "PAYMENT_CONFIG chains[1].tokens[2].address: Duplicate token address (also tokens[0])."
    ]
    both = chain(tokens=[chain()["token"]])
    assert lines(both) == ["PAYMENT_CONFIG tokens: Give either token or tokens, not both."]


def test_malformed_json_and_unreadable_file_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "chains.json"
    broken.write_text('{"chain_id": 1,,}')
    with pytest.raises(PaymentConfigError) as exc:
        read_payment_config(broken)
    assert exc.value.lines == (
        f"PAYMENT_CONFIG: {broken} is not valid JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 16 (char 15)",
    )
    missing = tmp_path / "absent.json"
    with pytest.raises(PaymentConfigError) as exc:
        read_payment_config(missing)
    assert exc.value.lines == (f"PAYMENT_CONFIG: cannot read {missing}: No such file or directory",)
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        broken.write_text("{}")
        broken.chmod(0)
        with pytest.raises(PaymentConfigError) as exc:
            read_payment_config(broken)
        assert exc.value.lines == (f"PAYMENT_CONFIG: cannot read {broken}: Permission denied",)


# --- what passes --------------------------------------------------------------------------------


def devchain_file(tmp_path: Path) -> dict[str, Any]:
    """The shape workers.chain.devchain.deploy writes (every key it writes)."""
    return {
        "chain_id": 31337,
        "rpc_url": "http://127.0.0.1:8545",
        "token": {"address": TOKEN, "name": "OCC Test Token", "symbol": "OCCT", "decimals": 18},
        "token_artifact": "/app/chain/TestToken.json",
        "deployer_address": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "gateway_address": GATEWAY,
        "gateway_key_file": str(tmp_path / "devchain.gateway.key"),
        "treasury_address": TREASURY,
        "funded_accounts": ["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"],
        "test_user": {
            "address": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
            "private_key": "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        },
        "deployed_block": 9,
    }


def test_the_dev_chain_file_passes(tmp_path: Path) -> None:
    config = parse_payment_config(devchain_file(tmp_path), confirmations=2)
    (only,) = config.chains
    assert (only.chain_id, only.confirmations, only.path) == (31337, 2, "")
    assert only.gateway_key_file == tmp_path / "devchain.gateway.key"
    (token,) = only.tokens
    assert (token.symbol, token.decimals, token.name, token.price_per_gib_month) == (
        "OCCT",
        18,
        "OCC Test Token",
        None,
    )


def test_the_keys_devchain_writes_are_all_accepted() -> None:
    """Guards test_the_dev_chain_file_passes: the keys listed there are the ones deploy() writes."""
    source = (Path(__file__).resolve().parents[3] / "workers/chain/devchain.py").read_text()
    body = source[source.index("    config: dict[str, Any] = {") :]
    body = body[: body.index("\n    }\n")]
    written = {line.split('"')[1] for line in body.splitlines()[1:] if line.startswith('        "')}
    assert written == set(devchain_file(Path("/tmp")))


def test_several_chains_and_tokens_pass_checksummed_with_defaults(tmp_path: Path) -> None:
    config = parse_payment_config(two_chains(), confirmations=4, base_dir=tmp_path)
    first, second = config.chains
    assert [c.path for c in config.chains] == ["chains[0]", "chains[1]"]
    assert (first.confirmations, second.confirmations) == (4, 3)  # the chain's own wins
    assert config.token_count == 3 and config.chain(11155111) is second
    assert second.tokens[0].address == TOKEN  # lowercase in the file, EIP-55 here
    assert second.tokens[1].price_per_gib_month == Decimal("0.25")
    assert config.chain(1) is None


def test_a_relative_key_file_is_next_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "chains.json"
    path.write_text(json.dumps(chain(gateway_key_file="keys/gw.key")))
    (only,) = read_payment_config(path).chains
    assert only.gateway_key_file == tmp_path / "keys" / "gw.key"


def test_payment_options_take_prices_and_decimals_per_token(tmp_path: Path) -> None:
    path = tmp_path / "chains.json"
    path.write_text(json.dumps(two_chains()))
    settings = Settings(payment_config_file=path, price_per_gib_month="OCCT=2,OCEAN=0.5")
    options = payment_options(settings)
    assert [(o.chain_id, o.symbol, o.price_per_gib_month, o.confirmations) for o in options] == [
        (31337, "OCCT", Decimal(2), 1),
        (11155111, "OCEAN", Decimal("0.5"), 3),
        (11155111, "USDC", Decimal("0.25"), 3),
    ]
    usdc = options[2]
    # amount = price x 10^decimals: a GiB-month of the 6-decimal token is 0.25 x 10^6
    assert price_occ(
        GIB, SECONDS_PER_MONTH, usdc.price_per_gib_month, usdc.decimals, Decimal(0)
    ) == (250_000)
    with pytest.raises(ConfigError, match="no price for OCEAN"):
        payment_options(Settings(payment_config_file=path, price_per_gib_month="OCCT=2"))


def test_the_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "chains.json"
    path.write_text(json.dumps(chain()))
    settings = Settings(payment_config_file=path)
    first = load_payment_config(settings)
    assert load_payment_config(settings) is first
    path.write_text(json.dumps(two_chains()))
    assert len(load_payment_config(settings).chains) == 2
    path.write_text("{")
    with pytest.raises(PaymentConfigError):
        load_payment_config(settings)


# --- python -m workers.check (no RPC) -------------------------------------------------------------


def run_check(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    *args: str,
) -> tuple[int, str, str]:
    for name in ("PAYMENT_CONFIG", "GATEWAY_KEY_FILE", "PRICE_PER_GIB_MONTH", "MIN_PRICE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = check.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_passes_a_good_config_and_counts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "gw.key"
    key.write_text(GATEWAY_KEY + "\n")
    path = tmp_path / "chains.json"
    path.write_text(json.dumps(two_chains()))
    env = {"PAYMENT_CONFIG": str(path), "GATEWAY_KEY_FILE": str(key)}
    assert run_check(monkeypatch, capsys, env) == (0, "config ok: 2 chains, 3 tokens\n", "")
    assert run_check(monkeypatch, capsys, {}) == (0, "config ok: 0 chains, 0 tokens\n", "")


def test_check_prints_every_error_line_and_exits_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = two_chains()
    config["chains"][1]["tokens"][0]["decimals"] = 99
    config["chains"][0]["treasury_address"] = "0xabc"
    path = tmp_path / "chains.json"
    path.write_text(json.dumps(config))
    code, out, err = run_check(monkeypatch, capsys, {"PAYMENT_CONFIG": str(path)})
    assert (code, out) == (78, "")
    assert err.splitlines() == [
        "PAYMENT_CONFIG chains[0].treasury_address: Not a 0x-prefixed 20-byte hex address.",
        "PAYMENT_CONFIG chains[1].tokens[0].decimals: "
        "Must be greater than or equal to 0 and less than or equal to 36.",
    ]
    code, _, err = run_check(monkeypatch, capsys, {"NUM_NODES": "0"})
    assert (code, err) == (78, "NUM_NODES must be between 1 and 1000, got 0\n")


def test_check_refuses_missing_wrong_and_unreadable_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = two_chains()
    other_key = Account.create().key.hex()
    (tmp_path / "other.key").write_text(other_key)
    config["chains"][1]["gateway_key_file"] = "other.key"
    path = tmp_path / "chains.json"
    path.write_text(json.dumps(config))
    code, _, err = run_check(monkeypatch, capsys, {"PAYMENT_CONFIG": str(path)})
    other = Account.from_key(other_key).address
    assert code == 78
    assert err.splitlines() == [
        "PAYMENT_CONFIG chains[0].gateway_key_file: "
        "no gateway key: set GATEWAY_KEY_FILE or the chain's gateway_key_file",
        f"PAYMENT_CONFIG chains[1].gateway_address: the key in chains[1].gateway_key_file is "
        f"{other}, not this gateway_address",
    ]
    assert other_key.removeprefix("0x") not in err  # never the key itself
    missing = tmp_path / "absent.key"
    env = {"PAYMENT_CONFIG": str(path), "GATEWAY_KEY_FILE": str(missing)}
    code, _, err = run_check(monkeypatch, capsys, env)
    assert err.splitlines()[0] == (
        f"GATEWAY_KEY_FILE: gateway key file {missing} cannot be read: No such file or directory"
    )
    assert run_check(monkeypatch, capsys, env, "--no-keys")[:2] == (
        0,
        "config ok: 2 chains, 3 tokens\n",
    )


def test_check_refuses_a_token_without_a_price(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "chains.json"
    path.write_text(json.dumps(two_chains()))
    env = {"PAYMENT_CONFIG": str(path), "PRICE_PER_GIB_MONTH": "OCCT=1", "MIN_PRICE": "lots"}
    code, _, err = run_check(monkeypatch, capsys, env, "--no-keys")
    assert code == 78
    assert err.splitlines() == [
        "MIN_PRICE must be a decimal number, got 'lots'",
        "PRICE_PER_GIB_MONTH has no price for OCEAN",
    ]


# --- the payment step never signs for another chain -----------------------------------------------


class OneChainProvider(JSONBaseProvider):
    """Answers eth_chainId with ``chain_id``; anything else is a test failure."""

    def __init__(self, chain_id: int) -> None:
        super().__init__()
        self.served = chain_id
        self.calls: list[str] = []

    def make_request(self, method: Any, params: Any) -> Any:
        self.calls.append(str(method))
        assert method == "eth_chainId", method
        return {"jsonrpc": "2.0", "id": 1, "result": hex(self.served)}

    def is_connected(self, show_traceback: bool = False) -> bool:
        return True


def test_a_node_serving_another_chain_is_refused_before_anything_is_signed() -> None:
    provider = OneChainProvider(31337)
    gateway = Account.from_key(GATEWAY_KEY)
    pay = TokenPayments(Web3(provider), TOKEN, load_token_abi(), gateway, TREASURY, chain_id=31338)
    with pytest.raises(WrongChainError, match="serves chain 31337, not the configured chain 31338"):
        pay.verify_chain()
    with pytest.raises(WrongChainError):
        pay.prepare_payment(GATEWAY, 10, nonce=0, gas=100_000)
    assert set(provider.calls) == {"eth_chainId"}  # no nonce, no gas, no fee asked
    same = TokenPayments(Web3(provider), TOKEN, load_token_abi(), gateway, TREASURY, chain_id=31337)
    assert same.verify_chain() == 31337

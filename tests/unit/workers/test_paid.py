"""workers/paid.py and the api/paid views without servers: prices, quote validation, signatures, staging, links."""

from __future__ import annotations

import hashlib
import json
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from flask import Flask

from api import create_app
from api.errors import first_error
from occ_protocol.signatures import SECP256K1_N, signed_text
from workers.services.paid import quotes
from workers.services.paid.errors import (
    FileMismatchError,
    MalformedSignatureError,
    QuoteRequestError,
    WrongSignerError,
)
from workers.services.paid.ledger import Ledger, check_signature
from workers.services.paid.quotes import (
    GIB,
    SECONDS_PER_MONTH,
    find_option,
    parse_price,
    payment_options,
    price_occ,
)
from workers.services.paid.staging import quotes_dir, stage_files
from workers.services.paid.uploads import build_links
from workers.settings import ConfigError, Settings

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
GATEWAY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TREASURY = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
USER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
USER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
VECTOR_QUOTE = "40acc6937e1bd98631f47e7cbda72920"
VECTOR_NONCE = "1700000000"
VECTOR_SIGNATURE = "0x41348bc0781c4d800e09406b449e5f1bcfa4fbe2cba2de731e624bac08a03b195a1bc9b803a1b475301a2ca39a4484fcf62ce7e6849fcffc138f12475ef4a4a01b"
ONE = Decimal(1)


# --- prices -----------------------------------------------------------------------------------


def test_price_is_exact_for_one_gib_month() -> None:
    assert price_occ(GIB, SECONDS_PER_MONTH, ONE, 18, Decimal(0)) == 10**18
    assert price_occ(GIB // 2, SECONDS_PER_MONTH // 2, ONE, 18, Decimal(0)) == 10**18 // 4
    assert price_occ(3 * GIB, 2 * SECONDS_PER_MONTH, Decimal("2.5"), 6, Decimal(0)) == 15 * 10**6


def test_price_rounds_up_never_down() -> None:
    # 1 byte for 1 second at 1 token/GiB-month: 10^18 / (2^30 * 2,592,000) = 359.3... -> 360
    assert price_occ(1, 1, ONE, 18, Decimal(0)) == 360
    exact = 10**18 * 7 * 11
    assert exact % (GIB * SECONDS_PER_MONTH) != 0
    assert price_occ(7, 11, ONE, 18, Decimal(0)) == -(-exact // (GIB * SECONDS_PER_MONTH))


def test_minimum_price_applies_in_smallest_units() -> None:
    assert price_occ(1, 1, ONE, 18, Decimal("0.001")) == 10**15
    assert price_occ(1, 1, ONE, 6, Decimal("0.001")) == 1000
    # above the minimum, the minimum does not matter
    assert price_occ(GIB, SECONDS_PER_MONTH, ONE, 18, Decimal("0.001")) == 10**18


def test_price_uses_decimal_not_float() -> None:
    # 0.1 + 0.2 style prices stay exact: 0.3 tokens of 18 decimals for one GiB-month
    assert price_occ(GIB, SECONDS_PER_MONTH, Decimal("0.3"), 18, Decimal(0)) == 3 * 10**17
    huge = price_occ(
        10 * 1024 * GIB, 10 * 12 * SECONDS_PER_MONTH, Decimal("123.456789"), 18, Decimal(0)
    )
    assert huge == 10 * 1024 * 120 * 123456789 * 10**12


def test_parse_price_plain_and_per_symbol() -> None:
    assert parse_price("1.5", "OCCT") == Decimal("1.5")
    assert parse_price("OCCT=2, usdc=0.5", "USDC") == Decimal("0.5")
    with pytest.raises(ConfigError, match="OCEAN"):
        parse_price("OCCT=2", "OCEAN")
    with pytest.raises(ConfigError, match="PRICE_PER_GIB_MONTH"):
        parse_price("cheap", "OCCT")


# --- payment configuration ------------------------------------------------------------------------


def write_config(tmp_path: Path) -> Path:
    config = {
        "chain_id": 31337,
        "rpc_url": "http://127.0.0.1:1",
        "token": {"address": TOKEN.lower(), "symbol": "OCCT", "decimals": 18, "name": "OCC Test"},
        "gateway_address": GATEWAY,
        "treasury_address": TREASURY,
    }
    path = tmp_path / "devchain.json"
    path.write_text(json.dumps(config))
    return path


def test_payment_options_and_lookup(tmp_path: Path) -> None:
    settings = Settings(payment_config_file=write_config(tmp_path), price_per_gib_month="2")
    (option,) = payment_options(settings)
    assert option.address == TOKEN and option.price_per_gib_month == Decimal(2)
    assert find_option([option], 31337, TOKEN.upper().replace("0X", "0x")) is option
    with pytest.raises(QuoteRequestError) as chain:
        find_option([option], 1, TOKEN)
    assert chain.value.field == "payment.chainId"
    with pytest.raises(QuoteRequestError) as token:
        find_option([option], 31337, "0x" + "11" * 20)
    assert token.value.field == "payment.tokenAddress"
    assert payment_options(Settings()) == []


# --- quote validation through the view ----------------------------------------------------------


class FakeJobs:
    def __init__(self) -> None:
        self.created: dict[str, dict[str, Any]] = {}

    def create(self, job_id: str, kind: str, status: int, data: dict[str, Any], owner: str) -> bool:
        self.created[job_id] = {"kind": kind, "status": status, "data": data, "owner": owner}
        return True


class NoStorages:
    def get(self, storage_type: str) -> None:
        return None

    def list(self) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    settings = Settings(
        storage_dir=tmp_path / "storage",
        redis_url="redis://127.0.0.1:1/0",  # never reached by these tests
        payment_config_file=write_config(tmp_path),
        max_duration=365 * 86400,
        max_upload_size=10 * GIB,
    )
    flask_app = create_app({"SETTINGS": settings, "TESTING": True})
    flask_app.extensions["occ"].__dict__["jobs"] = FakeJobs()
    monkeypatch.setattr(quotes, "registry", lambda rt: NoStorages())
    return flask_app


def quote_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "occ",
        "files": [{"length": 1000}, {"length": 24}],
        "duration": 86400,
        "payment": {"chainId": 31337, "tokenAddress": TOKEN},
        "userAddress": USER.lower(),
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (quote_body(files=[]), "files"),
        ({k: v for k, v in quote_body().items() if k != "files"}, "files"),
        (quote_body(files=[{"length": 0}]), "files[0].length"),
        (quote_body(files=[{"length": 5}, {"length": -1}]), "files[1].length"),
        (quote_body(files=[{"length": "5"}]), "files[0].length"),
        (quote_body(files=[{"length": True}]), "files[0].length"),
        (quote_body(payment={"chainId": 1, "tokenAddress": TOKEN}), "payment.chainId"),
        (quote_body(payment={"chainId": "x1", "tokenAddress": TOKEN}), "payment.chainId"),
        (
            quote_body(payment={"chainId": 31337, "tokenAddress": "0x" + "22" * 20}),
            "payment.tokenAddress",
        ),
        (quote_body(payment={"chainId": 31337, "tokenAddress": "0x12"}), "payment.tokenAddress"),
        (quote_body(type="filecoin"), "type"),
        (quote_body(userAddress="0xnothex"), "userAddress"),
        (quote_body(userAddress=USER + "00"), "userAddress"),
        (quote_body(duration=0), "duration"),
        (quote_body(duration=-5), "duration"),
        (quote_body(duration=365 * 86400 + 1), "duration"),
        (quote_body(duration=1.5), "duration"),
        (quote_body(files=[{"length": 11 * GIB}]), "files"),
    ],
)
def test_invalid_quotes_get_400_naming_the_field(
    app: Flask, body: dict[str, Any], field: str
) -> None:
    resp = app.test_client().post("/getQuote", json=body)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    err = resp.get_json()
    assert err["code"] == 400 and err["status"]
    assert f" {field}:" in err["message"], err["message"]
    assert not app.extensions["occ"].jobs.created


def test_quote_body_must_be_a_json_object(app: Flask) -> None:
    resp = app.test_client().post("/getQuote", data="[1]", content_type="application/json")
    assert resp.status_code == 400 and "body" in resp.get_json()["message"]


def test_valid_quote_answers_and_records_the_binding(app: Flask) -> None:
    resp = app.test_client().post(
        "/getQuote", json=quote_body(payment={"chainId": "31337", "tokenAddress": TOKEN.lower()})
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    answer = resp.get_json()
    assert set(answer) == {
        "quoteId",
        "tokenAmount",
        "approveAddress",
        "chainId",
        "tokenAddress",
        "expiresAt",
    }
    assert len(answer["quoteId"]) == 32 and int(answer["quoteId"], 16) >= 0
    assert isinstance(answer["tokenAmount"], str) and answer["tokenAmount"] == str(
        10**15
    )  # min price
    assert answer["chainId"] == 31337 and answer["tokenAddress"] == TOKEN
    assert answer["approveAddress"] == GATEWAY
    job = app.extensions["occ"].jobs.created[answer["quoteId"]]
    assert job["kind"] == "quote" and job["status"] == 1 and job["owner"] == USER
    assert job["data"]["lengths"] == [1000, 24] and job["data"]["duration"] == 86400
    assert job["data"]["tokenAmount"] == answer["tokenAmount"]


def test_storages_list_the_builtin_type(app: Flask) -> None:
    (occ,) = app.test_client().get("/").get_json()
    assert occ["type"] == "occ"
    assert occ["payment"] == [
        {"chainId": 31337, "acceptedTokens": [{"title": "OCCT", "value": TOKEN}]}
    ]


@pytest.mark.parametrize(
    "path", ["/getStatus?quoteId=xyz", "/getStatus", "/getLink?quoteId=" + "a" * 32]
)
def test_malformed_queries_get_400(app: Flask, path: str) -> None:
    resp = app.test_client().get(path)
    assert resp.status_code == 400
    assert resp.get_json()["message"].startswith("Invalid ")


def test_first_error_paths() -> None:
    assert first_error({"files": {1: {"length": ["bad"]}}}) == ("files[1].length", "bad")
    assert first_error({"payment": {"chainId": ["no"]}, "type": ["x"]}) == ("payment.chainId", "no")
    assert first_error(["top"]) == ("body", "top")


# --- signatures -----------------------------------------------------------------------------------


def test_protocol_vector_verifies_for_any_address_case() -> None:
    check_signature(VECTOR_QUOTE, VECTOR_NONCE, VECTOR_SIGNATURE, USER)
    check_signature(VECTOR_QUOTE, VECTOR_NONCE, VECTOR_SIGNATURE, USER.lower())


def test_signature_rejections() -> None:
    with pytest.raises(WrongSignerError):
        check_signature(VECTOR_QUOTE, VECTOR_NONCE, VECTOR_SIGNATURE, GATEWAY)
    with pytest.raises(WrongSignerError):  # another nonce: the text differs
        check_signature(VECTOR_QUOTE, "1700000001", VECTOR_SIGNATURE, USER)
    raw = bytes.fromhex(VECTOR_SIGNATURE[2:])
    r, s, v = raw[:32], int.from_bytes(raw[32:64], "big"), raw[64]
    high_s = "0x" + (r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])).hex()
    for bad in (high_s, VECTOR_SIGNATURE[:-2], VECTOR_SIGNATURE[:-1] + "z", "0x"):
        with pytest.raises(MalformedSignatureError):
            check_signature(VECTOR_QUOTE, VECTOR_NONCE, bad, USER)
    digest = bytes.fromhex(signed_text(VECTOR_QUOTE, VECTOR_NONCE)[2:])
    over_digest = Account.sign_message(encode_defunct(primitive=digest), USER_KEY).signature
    with pytest.raises(WrongSignerError):
        check_signature(VECTOR_QUOTE, VECTOR_NONCE, "0x" + bytes(over_digest).hex(), USER)


# --- ledger and staging ---------------------------------------------------------------------------


def test_ledger_never_lowers_a_nonce(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger")
    assert ledger.last_nonce(USER) is None
    ledger.record_nonce(USER, 1700000000)
    ledger.record_nonce(USER.lower(), 5)
    assert ledger.last_nonce(USER.upper().replace("0X", "0x")) == 1700000000
    assert not ledger.consumed(VECTOR_QUOTE)
    ledger.record_consumed(VECTOR_QUOTE, "1")
    assert Ledger(tmp_path / "ledger").consumed(VECTOR_QUOTE.upper())


def test_staging_links_temp_files_and_checks_sizes(tmp_path: Path) -> None:
    settings = Settings(storage_dir=tmp_path / "s")
    settings.staging_dir.mkdir(parents=True)
    temps = []
    for payload in (b"a" * 1000, b"bc"):
        t = tempfile.NamedTemporaryFile(dir=settings.staging_dir, prefix=".upload-")  # noqa: SIM115
        t.write(payload)
        t.seek(0)
        temps.append(t)
    attempt, staged = stage_files(
        settings, VECTOR_QUOTE, [("../x/a.bin", temps[0]), (None, temps[1])], [1000, 2]
    )
    assert [f.length for f in staged] == [1000, 2]
    assert staged[0].sha256 == hashlib.sha256(b"a" * 1000).hexdigest()
    assert staged[0].name == "a.bin" and staged[1].name == f"{VECTOR_QUOTE}-1"
    assert (attempt / "0").stat().st_ino == Path(temps[0].name).stat().st_ino  # moved, not copied
    for t in temps:
        t.close()
    assert (attempt / "1").read_bytes() == b"bc"  # survives the temp file's deletion

    big = tempfile.NamedTemporaryFile(dir=settings.staging_dir)  # noqa: SIM115
    big.write(b"x" * 11)
    big.seek(0)
    with pytest.raises(FileMismatchError, match="file 1 is larger"):
        stage_files(settings, VECTOR_QUOTE, [("f", big)], [10])
    assert [p.name for p in quotes_dir(settings).iterdir()] == [attempt.name]  # nothing left behind


# --- links ----------------------------------------------------------------------------------------


def test_occ_links_in_upload_order() -> None:
    data = {
        "type": "occ",
        "stored": [
            {"file_hash": "b" * 64, "length": 5, "expires_at": 1800000000.5},
            {"file_hash": "a" * 64, "length": 7, "expires_at": None},
        ],
    }
    links = build_links(data, "https://gw.example/")
    assert links == [
        {
            "type": "url",
            "url": "https://gw.example/download/" + "b" * 64,
            "method": "GET",
            "fileHash": "b" * 64,
            "length": 5,
            "expiresAt": 1800000000,
        },
        {
            "type": "url",
            "url": "https://gw.example/download/" + "a" * 64,
            "method": "GET",
            "fileHash": "a" * 64,
            "length": 7,
        },
    ]


def test_remote_links_are_relayed() -> None:
    stored = [{"type": "arweave", "transactionHash": "tx1", "transactionId": "tx1"}]
    assert build_links({"type": "arweave", "links": stored}, "http://x") == stored

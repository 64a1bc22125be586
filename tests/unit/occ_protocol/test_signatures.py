"""protocol.md §2 signatures and nonces, §6 signed registration records (reliability.md row 12)."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from occ_protocol import signatures as sig
from occ_protocol.signatures import SignatureError

# protocol.md §2 test vector (anvil/Hardhat default key #0, a public test key)
KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
QUOTE_ID = "40acc6937e1bd98631f47e7cbda72920"
NONCE = "1700000000"
TEXT = "0x89accafb4dd0d5ece3be833db66f6c804bafaf768c123e1c66f00cef2d4dec6c"
EIP191_HASH = "0x382408d9ee6dcf0ba3372f08ac249cd9169de1b9567977bb0b98f3fc7caf4d46"
SIGNATURE = (
    "0x41348bc0781c4d800e09406b449e5f1bcfa4fbe2cba2de731e624bac08a03b19"
    "5a1bc9b803a1b475301a2ca39a4484fcf62ce7e6849fcffc138f12475ef4a4a01b"
)
OTHER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil #1


def _with_v(signature: str, v: int) -> str:
    return signature[:-2] + f"{v:02x}"


def _high_s_twin(signature: str) -> str:
    raw = bytes.fromhex(signature[2:])
    s = int.from_bytes(raw[32:64], "big")
    v = 28 if raw[64] == 27 else 27
    return "0x" + (raw[:32] + (sig.SECP256K1_N - s).to_bytes(32, "big") + bytes([v])).hex()


# --- the test vector -----------------------------------------------------------------------


def test_vector_signed_text() -> None:
    text = sig.signed_text(QUOTE_ID, NONCE)
    assert text == TEXT
    assert len(text) == 66


def test_vector_eip191_hash() -> None:
    assert sig.message_hash(TEXT) == EIP191_HASH


def test_vector_signature_recovers_address() -> None:
    assert sig.recover_signer(TEXT, SIGNATURE) == ADDRESS
    sig.verify_owner(QUOTE_ID, NONCE, SIGNATURE, ADDRESS)


def test_vector_sign_text_reproduces_signature() -> None:
    assert sig.sign_text(KEY, TEXT) == SIGNATURE


def test_history_signing_uses_empty_quote_id() -> None:
    text = sig.signed_text("", NONCE)
    signature = sig.sign_text(KEY, text)
    sig.verify_owner("", NONCE, signature, ADDRESS)
    with pytest.raises(SignatureError):
        sig.verify_owner(QUOTE_ID, NONCE, signature, ADDRESS)


# --- rejections (reliability.md row 12) ---------------------------------------------------


def test_signature_over_raw_digest_is_rejected() -> None:
    digest = bytes.fromhex(TEXT[2:])
    signed = Account.sign_message(encode_defunct(primitive=digest), KEY)
    raw_sig = "0x" + bytes(signed.signature).hex()
    assert sig.recover_signer(TEXT, raw_sig) != ADDRESS
    with pytest.raises(SignatureError, match="owner"):
        sig.verify_owner(QUOTE_ID, NONCE, raw_sig, ADDRESS)


def test_high_s_twin_is_rejected() -> None:
    twin = _high_s_twin(SIGNATURE)
    # the twin is mathematically valid for the same key, which is why it must be refused
    assert (
        Account.recover_message(
            encode_defunct(text=TEXT),
            signature=bytes.fromhex(twin[2:]),
        )
        == ADDRESS
    )
    with pytest.raises(SignatureError, match="high-s"):
        sig.recover_signer(TEXT, twin)
    with pytest.raises(SignatureError):
        sig.verify_owner(QUOTE_ID, NONCE, twin, ADDRESS)


@pytest.mark.parametrize("length", [64, 66, 0, 130])
def test_wrong_length_is_rejected(length: int) -> None:
    raw = bytes.fromhex(SIGNATURE[2:])
    bad = "0x" + (raw * 3)[:length].hex()
    with pytest.raises(SignatureError, match="65 bytes"):
        sig.verify_owner(QUOTE_ID, NONCE, bad, ADDRESS)


@pytest.mark.parametrize(
    "bad",
    [
        SIGNATURE[:-1],  # odd number of hex digits
        SIGNATURE[:-2] + "zz",
        "0x" + "g" * 130,
        "not a signature",
        "0x 41",
        "",
    ],
)
def test_malformed_hex_is_rejected(bad: str) -> None:
    with pytest.raises(SignatureError):
        sig.verify_owner(QUOTE_ID, NONCE, bad, ADDRESS)


@pytest.mark.parametrize("bad", [None, 123, ["0x00"]])
def test_non_string_signature_is_rejected(bad: object) -> None:
    with pytest.raises(SignatureError):
        sig.recover_signer(TEXT, bad)


@pytest.mark.parametrize("v", [2, 26, 29, 35, 36, 255])
def test_v_outside_27_28_is_rejected(v: int) -> None:
    with pytest.raises(SignatureError, match="v must be"):
        sig.recover_signer(TEXT, _with_v(SIGNATURE, v))


def test_v_zero_one_is_normalised() -> None:
    assert SIGNATURE.endswith("1b")  # v = 27
    assert sig.recover_signer(TEXT, _with_v(SIGNATURE, 0)) == ADDRESS
    sig.verify_owner(QUOTE_ID, NONCE, _with_v(SIGNATURE, 0), ADDRESS)
    # v = 1 selects the other recovery id: a valid signature, but of someone else
    assert sig.recover_signer(TEXT, _with_v(SIGNATURE, 1)) != ADDRESS


def test_zero_r_or_s_is_rejected() -> None:
    raw = bytes.fromhex(SIGNATURE[2:])
    with pytest.raises(SignatureError, match="r is out of range"):
        sig.recover_signer(TEXT, "0x" + (bytes(32) + raw[32:]).hex())
    with pytest.raises(SignatureError, match="s is out of range"):
        sig.recover_signer(TEXT, "0x" + (raw[:32] + bytes(32) + raw[64:]).hex())


def test_signature_without_0x_prefix_and_bytes_accepted() -> None:
    assert sig.recover_signer(TEXT, SIGNATURE[2:]) == ADDRESS
    assert sig.recover_signer(TEXT, bytes.fromhex(SIGNATURE[2:])) == ADDRESS


def test_wrong_signer_is_rejected() -> None:
    other = sig.sign_text(OTHER_KEY, TEXT)
    with pytest.raises(SignatureError, match="owner"):
        sig.verify_owner(QUOTE_ID, NONCE, other, ADDRESS)


def test_other_quote_or_nonce_is_rejected() -> None:
    with pytest.raises(SignatureError):
        sig.verify_owner("0" * 32, NONCE, SIGNATURE, ADDRESS)
    with pytest.raises(SignatureError):
        sig.verify_owner(QUOTE_ID, "1700000001", SIGNATURE, ADDRESS)


def test_nonce_is_hashed_as_received() -> None:
    # a leading zero is a different text: the nonce is never reformatted
    assert sig.signed_text(QUOTE_ID, "01700000000") != TEXT
    with pytest.raises(SignatureError):
        sig.verify_owner(QUOTE_ID, "01700000000", SIGNATURE, ADDRESS)


@pytest.mark.parametrize("address", [ADDRESS, ADDRESS.lower(), "0x" + ADDRESS[2:].upper()])
def test_address_case_never_matters(address: str) -> None:
    sig.verify_owner(QUOTE_ID, NONCE, SIGNATURE, address)


@pytest.mark.parametrize("address", ["", "0x", ADDRESS[:-1], ADDRESS + "0", ADDRESS[2:], None])
def test_malformed_expected_address_is_rejected(address: object) -> None:
    with pytest.raises(SignatureError):
        sig.verify_owner(QUOTE_ID, NONCE, SIGNATURE, address)  # type: ignore[arg-type]


# --- nonces and addresses ------------------------------------------------------------------


@pytest.mark.parametrize("nonce", ["0", "1", "1700000000", "1700000000000", "9" * 13])
def test_valid_nonces(nonce: str) -> None:
    assert sig.is_valid_nonce(nonce)
    assert sig.nonce_value(nonce) == int(nonce)


@pytest.mark.parametrize(
    "nonce", ["", "9" * 14, "-1", "+1", "1.5", "1e9", " 1", "1 ", "١٢", "0x10", None, 17]
)
def test_invalid_nonces(nonce: object) -> None:
    assert not sig.is_valid_nonce(nonce)
    with pytest.raises(SignatureError):
        sig.nonce_value(nonce)  # type: ignore[arg-type]


def test_verify_owner_rejects_invalid_nonce() -> None:
    with pytest.raises(SignatureError, match="nonce"):
        sig.verify_owner(QUOTE_ID, "17e8", SIGNATURE, ADDRESS)


def test_normalize_address() -> None:
    assert sig.normalize_address(ADDRESS.lower()) == ADDRESS
    assert sig.normalize_address(ADDRESS) == ADDRESS
    assert sig.address_bytes(ADDRESS) == bytes.fromhex(ADDRESS[2:].lower())
    assert sig.same_address(ADDRESS, ADDRESS.lower())
    for bad in ["", ADDRESS[2:], ADDRESS + "00", "0x" + "z" * 40, None, 5]:
        with pytest.raises(sig.InvalidAddressError):
            sig.normalize_address(bad)
    assert issubclass(sig.InvalidAddressError, ValueError)


# --- registration records (protocol.md §6) ------------------------------------------------

NOW = 1_700_000_000
RECORD = {
    "type": "filecoin",
    "description": "Filecoin storage — übersicht",
    "url": "http://127.0.0.1:9000",
    "payment": [{"chainId": 31337, "acceptedTokens": [{"title": "OCCT", "value": ADDRESS}]}],
}


def test_canonical_json_is_sorted_compact_utf8_without_signature() -> None:
    text = sig.canonical_json({"b": 1, "a": {"d": [1, 2], "c": "ü"}, "signature": "0x00"})
    assert text == '{"a":{"c":"ü","d":[1,2]},"b":1}'


def test_record_round_trip() -> None:
    signed = sig.sign_record(KEY, {**RECORD, "timestamp": NOW})
    assert signed["timestamp"] == NOW
    assert signed["signature"] == sig.sign_text(KEY, sig.canonical_json(signed))
    assert sig.verify_record(signed, [ADDRESS.lower()], now=NOW + 10) == ADDRESS


def test_sign_record_adds_timestamp() -> None:
    signed = sig.sign_record(KEY, RECORD, now=NOW + 0.7)
    assert signed["timestamp"] == NOW
    assert sig.verify_record(signed, [ADDRESS], now=NOW) == ADDRESS


@pytest.mark.parametrize("delta", [-301, 301, 10_000])
def test_stale_or_future_record_is_rejected(delta: int) -> None:
    signed = sig.sign_record(KEY, {**RECORD, "timestamp": NOW})
    with pytest.raises(SignatureError, match="timestamp"):
        sig.verify_record(signed, [ADDRESS], now=NOW + delta)
    assert sig.verify_record(signed, [ADDRESS], now=NOW + 300) == ADDRESS


def test_record_signer_not_allow_listed_is_rejected() -> None:
    signed = sig.sign_record(OTHER_KEY, {**RECORD, "timestamp": NOW})
    with pytest.raises(SignatureError, match="allow-list"):
        sig.verify_record(signed, [ADDRESS, "not-an-address"], now=NOW)
    with pytest.raises(SignatureError, match="allow-list"):
        sig.verify_record(signed, [], now=NOW)


def test_tampered_record_is_rejected() -> None:
    signed = sig.sign_record(KEY, {**RECORD, "timestamp": NOW})
    tampered = {**signed, "url": "http://169.254.169.254"}
    with pytest.raises(SignatureError, match="allow-list"):
        sig.verify_record(tampered, [ADDRESS], now=NOW)
    # moving the timestamp forward (a replay) breaks the signature too
    replay = {**signed, "timestamp": NOW + 600}
    with pytest.raises(SignatureError):
        sig.verify_record(replay, [ADDRESS], now=NOW + 600)


@pytest.mark.parametrize("timestamp", [None, "1700000000", True, float("nan")])
def test_record_timestamp_must_be_numeric(timestamp: object) -> None:
    record = {**RECORD, "timestamp": timestamp}
    record["signature"] = sig.sign_text(KEY, sig.canonical_json(record))
    with pytest.raises(SignatureError, match="timestamp"):
        sig.verify_record(record, [ADDRESS], now=NOW)


def test_unsigned_record_is_rejected() -> None:
    with pytest.raises(SignatureError, match="not signed"):
        sig.verify_record({**RECORD, "timestamp": NOW}, [ADDRESS], now=NOW)


def test_signature_error_is_value_error() -> None:
    assert issubclass(SignatureError, ValueError)

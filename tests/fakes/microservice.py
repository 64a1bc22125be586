"""A conforming fake storage microservice ("arweave"-like) speaking the wire protocol of workers/remote.py.

It serves getQuote / upload / getStatus / getLink on 127.0.0.1 (werkzeug in a thread), fetches
uploaded files from the URLs it is given (the gateway's private /staged URLs) checking length and
SHA-256, and registers itself with the gateway's private /register, signed by anvil test key #3,
re-registering every ``heartbeat_s`` seconds until stop_heartbeat().

    fake = FakeMicroservice(register_url="http://127.0.0.1:5001/register", heartbeat_s=60)
    fake.start()
    ...
    fake.stop()
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
from typing import Any

import requests
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.serving import BaseWSGIServer, make_server

from occ_protocol.signatures import sign_record
from tests.fixtures.services import free_port

# anvil / Hardhat default account #3 (a public test key): the microservice's registration signer
MICROSERVICE_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"
MICROSERVICE_ADDRESS = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
DEFAULT_TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
APPROVE_ADDRESS = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"  # anvil #4

QUOTED, REMOTE_PENDING, DONE = 1, 302, 400
FILE_MISMATCH, STAGED_FILE_MISSING, BACKEND_FAILED = 402, 403, 404


class FakeMicroservice:
    """A storage microservice on 127.0.0.1:<free port>; ``url``, ``registrations``, ``uploads``."""

    def __init__(
        self,
        storage_type: str = "arweave",
        *,
        register_url: str | None = None,
        heartbeat_s: float = 60.0,
        key: str = MICROSERVICE_KEY,
        chain_id: int = 8996,
        token_address: str = DEFAULT_TOKEN,
        token_title: str = "OCEAN",
        tokens_as_dict: bool = False,
        upload_delay_s: float = 0.2,
        fail_uploads: bool = False,
    ) -> None:
        self.storage_type = storage_type
        self.register_url = register_url
        self.heartbeat_s = heartbeat_s
        self.key = key
        self.chain_id = chain_id
        self.token_address = token_address
        self.token_title = token_title
        self.tokens_as_dict = tokens_as_dict
        self.upload_delay_s = upload_delay_s
        self.fail_uploads = fail_uploads
        self.port = free_port()
        self.registrations = 0  # successful (2xx) registrations
        self.register_statuses: list[int] = []
        self.uploads: list[dict[str, Any]] = []  # the upload bodies received
        self.fetched: dict[str, list[bytes]] = {}  # quoteId -> bytes fetched from the gateway
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._stop_heartbeat = threading.Event()
        self._last_timestamp = 0
        self.app = self._build_app()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> FakeMicroservice:
        """Serve, then (if register_url is set) register once and start the heartbeat."""
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-ms", daemon=True
        )
        self._thread.start()
        if self.register_url:
            self.register()
            self.start_heartbeat()
        return self

    def stop(self) -> None:
        self.stop_heartbeat()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def start_heartbeat(self, interval_s: float | None = None) -> None:
        if interval_s is not None:
            self.heartbeat_s = interval_s
        self._stop_heartbeat.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="fake-ms-heartbeat", daemon=True)
        self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        self._stop_heartbeat.set()
        if self._heartbeat is not None:
            self._heartbeat.join(10)
            self._heartbeat = None

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(self.heartbeat_s):
            # the gateway may be down for a moment; try again next beat
            with contextlib.suppress(requests.RequestException):
                self.register()

    # --- registration -------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """The unsigned registration record."""
        tokens: Any = (
            {self.token_title: self.token_address}
            if self.tokens_as_dict
            else [{"title": self.token_title, "value": self.token_address}]
        )
        return {
            "type": self.storage_type,
            "description": f"Fake {self.storage_type} storage for tests",
            "url": self.url,
            "payment": [{"chainId": self.chain_id, "acceptedTokens": tokens}],
        }

    def signed_record(self, timestamp: int | None = None) -> dict[str, Any]:
        """The record signed with a fresh timestamp (strictly increasing, so never a replay)."""
        with self._lock:
            if timestamp is None:
                timestamp = max(int(time.time()), self._last_timestamp + 1)
            self._last_timestamp = max(self._last_timestamp, timestamp)
        return sign_record(self.key, self.record(), now=timestamp)

    def register(self, register_url: str | None = None) -> int:
        """POST a freshly signed record to the gateway's /register; return the HTTP status."""
        target = register_url or self.register_url
        if not target:
            raise ValueError("no register_url")
        resp = requests.post(target, json=self.signed_record(), timeout=10)
        with self._lock:
            self.register_statuses.append(resp.status_code)
            if resp.ok:
                self.registrations += 1
        return resp.status_code

    # --- the wire protocol ----------------------------------------------------------------------

    def status_of(self, quote_id: str) -> int:
        with self._lock:
            job = self._jobs.get(quote_id)
            return int(job["status"]) if job else 0

    def _build_app(self) -> Flask:
        app = Flask(f"fake-{self.storage_type}")

        def error(code: int, message: str) -> ResponseReturnValue:
            return jsonify({"code": code, "message": message}), code

        @app.post("/getQuote")
        def get_quote() -> ResponseReturnValue:
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or not isinstance(body.get("files"), list):
                return error(400, "files required")
            payment = body.get("payment") or {}
            lengths: list[int] = []
            for f in body["files"]:
                n = f.get("length") if isinstance(f, dict) else None
                if not isinstance(n, int) or n <= 0:
                    return error(400, "file lengths must be positive integers")
                lengths.append(n)
            if not lengths:
                return error(400, "files required")
            try:
                chain_id = int(payment["chainId"])
            except (KeyError, TypeError, ValueError):
                return error(400, "payment.chainId required")
            if chain_id != self.chain_id:
                return error(400, "unsupported chain")
            token = payment.get("tokenAddress")
            if not isinstance(token, str) or token.lower() != self.token_address.lower():
                return error(400, "unsupported token")
            return jsonify(
                {
                    "tokenAmount": str(math.ceil(sum(lengths) / 1000)),
                    "approveAddress": APPROVE_ADDRESS,
                    "chainId": chain_id,
                    "tokenAddress": token,
                }
            )

        @app.post("/upload")
        def upload() -> ResponseReturnValue:
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or not isinstance(body.get("quoteId"), str):
                return error(400, "quoteId required")
            files = body.get("files")
            if not isinstance(files, list) or not files:
                return error(400, "files required")
            quote_id = body["quoteId"]
            with self._lock:
                self.uploads.append(body)
                if quote_id in self._jobs:
                    return error(409, "quote already uploaded")
                self._jobs[quote_id] = {"status": REMOTE_PENDING, "links": []}
            threading.Thread(target=self._store, args=(quote_id, files), daemon=True).start()
            return jsonify({"message": "accepted"})

        @app.route("/getStatus", methods=["GET", "POST"])
        def get_status() -> ResponseReturnValue:
            return jsonify({"status": self.status_of(request.args.get("quoteId", ""))})

        @app.route("/getLink", methods=["GET", "POST"])
        def get_link() -> ResponseReturnValue:
            quote_id = request.args.get("quoteId", "")
            with self._lock:
                job = self._jobs.get(quote_id)
                if job is None or job["status"] != DONE:
                    return error(404, "no finished upload for this quote")
                return jsonify(job["links"])

        return app

    def _store(self, quote_id: str, files: list[dict[str, Any]]) -> None:
        """Fetch each staged file from the gateway, check it, then 'store' it after a short delay."""
        status, links, blobs = DONE, [], []
        for f in files:
            try:
                resp = requests.get(f["url"], timeout=10)
            except (requests.RequestException, KeyError, TypeError):
                status = STAGED_FILE_MISSING
                break
            if resp.status_code != 200:
                status = STAGED_FILE_MISSING
                break
            data = resp.content
            if len(data) != f.get("length") or hashlib.sha256(data).hexdigest() != f.get("sha256"):
                status = FILE_MISMATCH
                break
            blobs.append(data)
            tx = hashlib.sha256(b"arweave-tx:" + quote_id.encode() + data).hexdigest()
            links.append({"type": "arweave", "transactionHash": tx, "transactionId": tx})
        time.sleep(self.upload_delay_s)
        if status == DONE and self.fail_uploads:
            status = BACKEND_FAILED
        with self._lock:
            self.fetched[quote_id] = blobs
            self._jobs[quote_id] = {"status": status, "links": links if status == DONE else []}

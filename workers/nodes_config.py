"""Storage node configuration: a nodes file (JSON) or NODES_JSON lists local and S3 nodes.

    {"nodes": [
      {"id": "disk-a", "kind": "local", "path": "/srv/occ/disk-a", "weight": 1},
      {"id": "rgw-1", "kind": "s3", "endpoint": "http://10.0.0.5:7480", "bucket": "occ-1",
       "region": "default", "credentials_file": "/run/secrets/rgw-1.env", "weight": 2}
    ]}

Without NODES_FILE / NODES_JSON, NUM_NODES local directories under STORAGE_DIR are used. S3
credentials come from `credentials_file` (KEY=VALUE lines with AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY) or from the environment variables named by `access_key_env` /
`secret_key_env` (default AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); they are never logged
and never part of a repr. boto3 is used (not minio-py) because its retry modes retry only
transient errors (throttling, 5xx, connection failures) and it speaks to every S3 dialect we
target (Ceph RGW, MinIO, Garage, AWS) with path-style addressing.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from occ_storage.errors import NodeError
from occ_storage.nodes import LocalDirNode, NodeBackend
from occ_storage.s3node import S3Node

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_LOCAL_KEYS = {"id", "kind", "path", "weight"}
_S3_KEYS = {
    "id",
    "kind",
    "weight",
    "endpoint",
    "bucket",
    "region",
    "prefix",
    "addressing_style",
    "credentials_file",
    "access_key_env",
    "secret_key_env",
    "pool_size",
    "connect_timeout",
    "read_timeout",
    "max_attempts",
    "capacity_bytes",
    "checksum_sha256",
    "create_bucket",
    "conditional_put",
}


class NodeConfigError(ValueError):
    """The node configuration is invalid; the message is one line naming the node."""


@dataclass(frozen=True)
class NodeSpec:
    """One validated node entry (secrets are read when the node is built, never stored here)."""

    id: str
    kind: str
    weight: float = 1.0
    path: Path | None = None
    endpoint: str = ""
    bucket: str = ""
    region: str = "us-east-1"
    prefix: str = ""
    addressing_style: str = "path"
    credentials_file: Path | None = None
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"
    pool_size: int = 16
    connect_timeout: float = 2.0
    read_timeout: float = 15.0
    max_attempts: int = 3
    capacity_bytes: int | None = None
    checksum_sha256: bool = True
    create_bucket: bool = False
    conditional_put: bool | None = None  # None: "auto", probed at start-up
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def public(self) -> dict[str, Any]:
        """What /status may show (no credentials)."""
        if self.kind == "local":
            return {"id": self.id, "kind": "local", "weight": self.weight}
        return {
            "id": self.id,
            "kind": "s3",
            "weight": self.weight,
            "endpoint": self.endpoint,
            "bucket": self.bucket,
        }


def _num(
    entry: Mapping[str, Any], key: str, default: float, lo: float, hi: float, what: str
) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NodeConfigError(f"{what}: {key} must be a number, got {value!r}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise NodeConfigError(f"{what}: {key} must be between {lo} and {hi}, got {value!r}")
    return float(value)


def _str(entry: Mapping[str, Any], key: str, default: str, what: str) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str):
        raise NodeConfigError(f"{what}: {key} must be a string, got {type(value).__name__}")
    return value.strip()


def _bool(entry: Mapping[str, Any], key: str, default: bool, what: str) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise NodeConfigError(f"{what}: {key} must be true or false, got {value!r}")
    return value


def _auto_bool(entry: Mapping[str, Any], key: str, what: str) -> bool | None:
    value = entry.get(key, "auto")
    if value == "auto":
        return None
    if not isinstance(value, bool):
        raise NodeConfigError(f'{what}: {key} must be true, false or "auto", got {value!r}')
    return value


def parse_node(entry: object, index: int, storage_dir: Path) -> NodeSpec:
    """Validate one entry; raise NodeConfigError naming it."""
    what = f"node #{index}"
    if not isinstance(entry, Mapping):
        raise NodeConfigError(f"{what}: must be an object, got {type(entry).__name__}")
    node_id = entry.get("id")
    if not isinstance(node_id, str) or not _ID_RE.fullmatch(node_id):
        raise NodeConfigError(f"{what}: id must match {_ID_RE.pattern}, got {node_id!r}")
    what = f"node {node_id!r}"
    kind = entry.get("kind", "local")
    weight = _num(entry, "weight", 1.0, 0.0, 1e6, what)
    if kind == "local":
        unknown = set(entry) - _LOCAL_KEYS
        if unknown:
            raise NodeConfigError(f"{what}: unknown keys {sorted(unknown)}")
        raw_path = _str(entry, "path", node_id, what) or node_id
        path = Path(raw_path)
        return NodeSpec(
            node_id, "local", weight, path if path.is_absolute() else storage_dir / path
        )
    if kind != "s3":
        raise NodeConfigError(f"{what}: kind must be 'local' or 's3', got {kind!r}")
    unknown = set(entry) - _S3_KEYS
    if unknown:
        raise NodeConfigError(f"{what}: unknown keys {sorted(unknown)}")
    endpoint = _str(entry, "endpoint", "", what).rstrip("/")
    if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", endpoint):
        raise NodeConfigError(f"{what}: endpoint must be an http(s) URL, got {endpoint!r}")
    bucket = _str(entry, "bucket", "", what)
    if not _BUCKET_RE.fullmatch(bucket):
        raise NodeConfigError(f"{what}: bucket must be a valid S3 bucket name, got {bucket!r}")
    style = _str(entry, "addressing_style", "path", what)
    if style not in ("path", "virtual", "auto"):
        raise NodeConfigError(f"{what}: addressing_style must be path, virtual or auto")
    cred = _str(entry, "credentials_file", "", what)
    capacity = entry.get("capacity_bytes")
    if capacity is not None and (
        isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0
    ):
        raise NodeConfigError(f"{what}: capacity_bytes must be a positive integer")
    return NodeSpec(
        node_id,
        "s3",
        weight,
        endpoint=endpoint,
        bucket=bucket,
        region=_str(entry, "region", "us-east-1", what) or "us-east-1",
        prefix=_str(entry, "prefix", "", what),
        addressing_style=style,
        credentials_file=Path(cred) if cred else None,
        access_key_env=_str(entry, "access_key_env", "AWS_ACCESS_KEY_ID", what),
        secret_key_env=_str(entry, "secret_key_env", "AWS_SECRET_ACCESS_KEY", what),
        pool_size=int(_num(entry, "pool_size", 16, 1, 1024, what)),
        connect_timeout=_num(entry, "connect_timeout", 2.0, 0.1, 300, what),
        read_timeout=_num(entry, "read_timeout", 15.0, 0.1, 3600, what),
        max_attempts=int(_num(entry, "max_attempts", 3, 1, 20, what)),
        capacity_bytes=capacity,
        checksum_sha256=_bool(entry, "checksum_sha256", True, what),
        create_bucket=_bool(entry, "create_bucket", False, what),
        conditional_put=_auto_bool(entry, "conditional_put", what),
    )


def load_node_specs(env: Mapping[str, str], storage_dir: Path) -> tuple[NodeSpec, ...]:
    """The nodes of NODES_FILE or NODES_JSON (empty: use NUM_NODES local directories)."""
    path = env.get("NODES_FILE", "").strip()
    raw = env.get("NODES_JSON", "").strip()
    source = "NODES_JSON"
    if path:
        source = f"NODES_FILE {path}"
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise NodeConfigError(f"{source}: cannot be read: {exc.strerror}") from None
    if not raw:
        return ()
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise NodeConfigError(f"{source}: not valid JSON: {exc}") from None
    entries = doc.get("nodes") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise NodeConfigError(f"{source}: needs a non-empty list 'nodes'")
    specs = tuple(parse_node(e, i, storage_dir) for i, e in enumerate(entries))
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise NodeConfigError(f"node {spec.id!r}: id used twice")
        seen.add(spec.id)
    for spec in specs:
        if spec.kind == "s3":
            _credentials(spec, env)  # missing credentials stop start-up, naming the node
    return specs


def _credentials(spec: NodeSpec, env: Mapping[str, str]) -> tuple[str, str]:
    values: Mapping[str, str] = env
    key_name, secret_name = spec.access_key_env, spec.secret_key_env
    if spec.credentials_file is not None:
        try:
            text = spec.credentials_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise NodeConfigError(
                f"node {spec.id!r}: credentials_file cannot be read: {exc.strerror}"
            ) from None
        parsed: dict[str, str] = {}
        for line in text.splitlines():
            k, sep, v = line.partition("=")
            if sep:
                parsed[k.strip()] = v.strip()
        values = parsed
        key_name, secret_name = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
    access, secret = values.get(key_name, ""), values.get(secret_name, "")
    if not access or not secret:
        where = spec.credentials_file or f"${key_name} / ${secret_name}"
        raise NodeConfigError(f"node {spec.id!r}: no S3 credentials in {where}")
    return access, secret


def make_s3_client(
    endpoint: str,
    region: str,
    access_key: str,
    secret_key: str,
    *,
    addressing_style: str = "path",
    pool_size: int = 16,
    connect_timeout: float = 2.0,
    read_timeout: float = 15.0,
    max_attempts: int = 3,
) -> Any:
    """A boto3 S3 client: path-style, bounded pool, timeouts, retries of transient errors only.

    botocore's "standard" retry mode retries throttling, 5xx and connection errors (not 4xx);
    checksums are computed only where an operation requires them, so stores that predate the
    S3 flexible-checksum trailers (Ceph 16) accept every request.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=region,
        s3={"addressing_style": addressing_style},
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=pool_size,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


def build_node(spec: NodeSpec, env: Mapping[str, str] | None = None) -> NodeBackend:
    """The backend for one spec (an S3 client is made; no request is sent)."""
    if spec.kind == "local":
        assert spec.path is not None
        return LocalDirNode(spec.path, node_id=spec.id, weight=spec.weight)
    access, secret = _credentials(spec, os.environ if env is None else env)
    client = make_s3_client(
        spec.endpoint,
        spec.region,
        access,
        secret,
        addressing_style=spec.addressing_style,
        pool_size=spec.pool_size,
        connect_timeout=spec.connect_timeout,
        read_timeout=spec.read_timeout,
        max_attempts=spec.max_attempts,
    )
    if spec.create_bucket:
        ensure_bucket(client, spec.bucket)
    return S3Node(
        client,
        spec.bucket,
        spec.id,
        spec.weight,
        prefix=spec.prefix,
        pool_size=spec.pool_size,
        capacity_bytes=spec.capacity_bytes,
        checksum_sha256=spec.checksum_sha256,
        endpoint=spec.endpoint,
        conditional_put=spec.conditional_put,  # None ("auto"): probed at the first write
    )


def ensure_bucket(client: Any, bucket: str) -> None:
    """Create the bucket if it does not exist (an unreachable endpoint is left to the node)."""
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            client.create_bucket(Bucket=bucket)


def build_nodes(specs: tuple[NodeSpec, ...], local_dirs: list[Path]) -> list[NodeBackend]:
    """The configured nodes, or one LocalDirNode per directory when no nodes file is set."""
    if specs:
        return [build_node(spec) for spec in specs]
    return [LocalDirNode(path, node_id=path.name) for path in local_dirs]


def node_states(nodes: list[NodeBackend]) -> list[dict[str, Any]]:
    """Each node's id, kind and reachability (a usable directory / an answering bucket)."""
    out = []
    for node in nodes:
        try:
            ok, error = node.free_bytes() > 0, None
        except NodeError as exc:
            ok, error = False, str(exc)
        out.append(
            {
                "node_id": node.node_id,
                "kind": str(getattr(node, "kind", "local")),
                "reachable": ok,
                "error": error,
            }
        )
    return out


def has_chunk(node: NodeBackend, chunk_id: str) -> bool:
    """Presence of a replica; an unreachable node holds none (it is a failed node)."""
    try:
        return node.has_chunk(chunk_id)
    except NodeError:
        return False

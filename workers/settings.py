"""Service settings read from the environment, validated once; the only reader of the gateway's variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.nodes_config import NodeConfigError, NodeSpec, load_node_specs


class ConfigError(ValueError):
    """An environment variable has an invalid value; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name} must be {bound}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _secret_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list from NAME, or from the file named by NAME_FILE."""
    raw = env.get(name, "")
    path = env.get(f"{name}_FILE", "").strip()
    if path:
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{name}_FILE cannot be read: {exc.strerror}") from None
    return tuple(item.strip() for item in raw.replace("\n", ",").split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Every setting of the gateway (API, workers and beat read the same values)."""

    port: int = 5000
    private_port: int = 5001
    num_nodes: int = 5
    n_prime: int = 10000
    tau: int = 10
    replication_factor: int = 3
    chunk_size: int = 262144
    storage_dir: Path = Path("data/occ_storage")
    debug: bool = False
    redis_url: str = "redis://127.0.0.1:6379/0"
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_upload_size: int = 2 * 1024**3
    sketch_key_file: Path | None = None
    health_slo: float = 0.99
    scrub_budget_bytes: int = 64 * 1024**2
    sketch_interval: float = 60.0  # beat's refresh_sketches period (celeryconfig.py reads it too)
    public_base_url: str = ""
    private_base_url: str = ""
    rate_limit: str = "600/minute"
    # Paid uploads (protocol.md); the file is read by workers/payment_config.py
    payment_config_file: Path | None = None
    gateway_key_file: Path | None = None
    quote_ttl: int = 1800
    max_duration: int = 10 * 365 * 86400
    confirmations: int = 1
    price_per_gib_month: str = "1"
    min_price: str = "0.001"
    paid_grace_period: int = 86400
    registry_ttl: int = 600
    registry_allowlist: tuple[str, ...] = ()
    allow_loopback_services: bool = False
    node_specs: tuple[NodeSpec, ...] = ()  # NODES_FILE / NODES_JSON (workers/nodes_config.py)

    @property
    def write_quorum(self) -> int:
        """W = ceil((r + 1) / 2) for the default replication factor."""
        return write_quorum(self.replication_factor)

    @property
    def staging_dir(self) -> Path:
        return self.storage_dir / "staging"

    def node_dirs(self) -> list[Path]:
        return [self.storage_dir / f"node_{i:03d}" for i in range(self.num_nodes)]

    def public_config(self) -> dict[str, Any]:
        """What /status shows of the configuration (no secrets)."""
        return {
            "num_nodes": self.num_nodes,
            "n_prime": self.n_prime,
            "tau": self.tau,
            "replication_factor": self.replication_factor,
            "write_quorum": self.write_quorum,
            "chunk_size": self.chunk_size,
            "max_upload_size": self.max_upload_size,
            "health_slo": self.health_slo,
            "auth_required": bool(self.api_keys),
            "nodes": [spec.public() for spec in self.node_specs],  # empty: NUM_NODES dirs
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate; raises ConfigError naming the variable at the first bad value."""
        e = os.environ if env is None else env
        storage_dir = Path(e.get("STORAGE_DIR", "").strip() or "data/occ_storage")
        try:
            specs = load_node_specs(e, storage_dir)
        except NodeConfigError as exc:
            raise ConfigError(str(exc)) from None
        num_nodes = len(specs) if specs else _int(e, "NUM_NODES", 5, 1, 1000)
        tau = _int(e, "TAU", 10, 2, 65535)
        replication = _int(e, "REPLICATION_FACTOR", 3, 1, num_nodes)
        if replication >= tau:
            raise ConfigError(f"TAU ({tau}) must exceed REPLICATION_FACTOR ({replication})")
        key_file = e.get("SKETCH_KEY_FILE", "").strip()
        pay_file = e.get("PAYMENT_CONFIG", "").strip()
        gw_file = e.get("GATEWAY_KEY_FILE", "").strip()
        return cls(
            port=_int(e, "PORT", 5000, 1, 65535),
            private_port=_int(e, "PRIVATE_PORT", 5001, 1, 65535),
            num_nodes=num_nodes,
            n_prime=_int(e, "N_PRIME", 10000, 16, 1 << 26),
            tau=tau,
            replication_factor=replication,
            chunk_size=_int(e, "CHUNK_SIZE", 262144, 4096, 64 * 1024**2),
            storage_dir=storage_dir,
            debug=_bool(e, "DEBUG", False),
            redis_url=e.get("REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0",
            api_keys=_secret_list(e, "API_KEYS"),
            max_upload_size=_int(e, "MAX_UPLOAD_SIZE", 2 * 1024**3, 1),
            sketch_key_file=Path(key_file) if key_file else None,
            health_slo=_float(e, "HEALTH_SLO", 0.99, 0.0, 1.0),
            scrub_budget_bytes=_int(e, "SCRUB_BUDGET_BYTES", 64 * 1024**2, 0),
            sketch_interval=_float(e, "SKETCH_INTERVAL", 60.0, 1.0, 86400.0),
            public_base_url=e.get("PUBLIC_BASE_URL", "").strip().rstrip("/"),
            private_base_url=e.get("PRIVATE_BASE_URL", "").strip().rstrip("/"),
            rate_limit=e.get("RATE_LIMIT", "").strip() or "600/minute",
            payment_config_file=Path(pay_file) if pay_file else None,
            gateway_key_file=Path(gw_file) if gw_file else None,
            quote_ttl=_int(e, "QUOTE_TTL", 1800, 1),
            max_duration=_int(e, "MAX_DURATION", 10 * 365 * 86400, 1),
            confirmations=_int(e, "CONFIRMATIONS", 1, 0, 1000),
            price_per_gib_month=e.get("PRICE_PER_GIB_MONTH", "").strip() or "1",
            min_price=e.get("MIN_PRICE", "").strip() or "0.001",
            paid_grace_period=_int(e, "PAID_GRACE_PERIOD", 86400, 0),
            registry_ttl=_int(e, "REGISTRY_TTL", 600, 1),
            registry_allowlist=_secret_list(e, "REGISTRY_ALLOWLIST"),
            allow_loopback_services=_bool(e, "ALLOW_LOOPBACK_SERVICES", False),
            node_specs=specs,
        )


def write_quorum(replication_factor: int) -> int:
    """W = ceil((r + 1) / 2): a majority of the r copies (occ-storage.md §2 rule 6)."""
    return (replication_factor + 2) // 2

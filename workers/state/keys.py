"""Every Redis key the gateway writes, in one place (all under ``occ:``).

A newcomer looking for "where is X kept" reads this page: jobs and quotes, nonces, the file
index, the microservice registry, the health sketches, paid-file expiry, locks, rate limits.
"""

from __future__ import annotations

PREFIX = "occ:"

# jobs (storage jobs and paid quotes share one record shape: workers/state/jobs.py)
JOB_PREFIX = PREFIX + "job:"
JOB_PATTERN = JOB_PREFIX + "*"


def job(job_id: str) -> str:
    return JOB_PREFIX + job_id


def history(owner: str) -> str:
    """Sorted set of a wallet's quote ids by creation time (getHistory)."""
    return f"{PREFIX}history:{owner.lower()}"


def nonce(address: str) -> str:
    """The last nonce accepted for a wallet (the durable copy is the ledger on disk)."""
    return f"{PREFIX}nonce:{address.lower()}"


# the file index (a cache of the manifests on the nodes: workers/state/index.py)
INDEX_PREFIX = PREFIX + "index:"
INDEX_FILES = INDEX_PREFIX + "files"  # zset file_hash -> created_at
INDEX_CHUNK_PREFIX = INDEX_PREFIX + "chunk:"  # hash chunk_id -> {file_hash: r}
INDEX_PATTERN = INDEX_PREFIX + "*"


def index_file(file_hash: str) -> str:
    return f"{INDEX_PREFIX}file:{file_hash}"


def index_chunk(chunk_id: str) -> str:
    return INDEX_CHUNK_PREFIX + chunk_id


# the microservice registry (workers/state/registry.py)
REGISTRY_PREFIX = PREFIX + "registry:"  # live record per storage type, SET ... EX ttl
REGISTRY_INDEX = PREFIX + "registry_index"  # zset type -> expiry
REGISTRY_SEEN_PREFIX = PREFIX + "registry_seen:"  # SET NX marker per accepted signature

# replication health (workers/services/health.py)
SKETCH_MERGED = PREFIX + "sketch:merged"  # the securely aggregated sketch (bytes)
SKETCH_NODES = PREFIX + "sketch:nodes"  # exact per-node figures of the same pass (JSON)
HEALTH_LAST = PREFIX + "health:last"  # the last check_health verdict (JSON)
REPAIR_SCHEDULED = PREFIX + "health:repair_scheduled"  # set by check_health, cleared by repair_all

# paid uploads (workers/services/paid_flow.py)
PAID_EXPIRY = PREFIX + "paid:expiry"  # zset file_hash -> paid-until (unix seconds)


def paid_tx(tx_hash: str) -> str:
    """Which quote a transaction paid (a transaction pays at most one quote)."""
    return f"{PREFIX}paidtx:{tx_hash.lower()}"


def paid_redriven(quote_id: str) -> str:
    """Marker: the sweeper re-drove this quote recently."""
    return f"{PREFIX}paid:redriven:{quote_id}"


# locks (workers/state/locks.py holds the one lock idiom)
LOCK_PREFIX = PREFIX + "lock:"
SCRUB_LOCK = LOCK_PREFIX + "scrub"


def file_lock(file_hash: str) -> str:
    return f"{LOCK_PREFIX}file:{file_hash}"


def quote_lock(quote_id: str) -> str:
    return f"{LOCK_PREFIX}quote:{quote_id}"


def gateway_nonce_lock(chain_id: int, address: str) -> str:
    return f"{LOCK_PREFIX}gateway-nonce:{chain_id}:{address.lower()}"


# rate limits (flask-limiter's storage prefix, api/limits.py)
RATELIMIT_PREFIX = PREFIX + "ratelimit"

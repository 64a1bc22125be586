"""The file index in Redis (a cache: it can be rebuilt from the manifests on the nodes)."""

from __future__ import annotations

import builtins
from typing import Any

import redis

from occ_storage.index import Manifest
from workers.state import keys

# Put a manifest and its chunk references atomically.
# KEYS: manifest key, files zset; ARGV: file_hash, created_at, json, r, old chunk ids..., '|', new chunk ids...
_PUT = f"""
local fh = ARGV[1]
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], fh)
local i = 5
while ARGV[i] ~= '|' do
  redis.call('HDEL', '{keys.INDEX_CHUNK_PREFIX}' .. ARGV[i], fh)
  i = i + 1
end
i = i + 1
while i <= #ARGV do
  redis.call('HSET', '{keys.INDEX_CHUNK_PREFIX}' .. ARGV[i], fh, ARGV[4])
  i = i + 1
end
return 1
"""

_DELETE = f"""
local fh = ARGV[1]
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], fh)
for i = 2, #ARGV do
  redis.call('HDEL', '{keys.INDEX_CHUNK_PREFIX}' .. ARGV[i], fh)
end
return 1
"""


class RedisIndex:
    """FileIndex over Redis: manifest JSON per file, a zset by creation time, chunk -> {file: r}."""

    def __init__(self, client: redis.Redis) -> None:
        self.r: Any = client  # redis-py types replies as bytes | str | ...; ours are bytes
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_DELETE)

    def get(self, file_hash: str) -> Manifest | None:
        raw = self.r.get(keys.index_file(file_hash))
        return Manifest.from_json(raw) if raw else None

    def put(self, manifest: Manifest) -> None:
        old = self.get(manifest.file_hash)
        old_ids = sorted({c.id for c in old.chunks}) if old else []
        new_ids = sorted({c.id for c in manifest.chunks})
        self._put(
            keys=[keys.index_file(manifest.file_hash), keys.INDEX_FILES],
            args=[
                manifest.file_hash,
                repr(manifest.created_at),
                manifest.to_json(),
                manifest.replication_factor,
                *old_ids,
                "|",
                *new_ids,
            ],
        )

    def delete(self, file_hash: str) -> None:
        old = self.get(file_hash)
        ids = sorted({c.id for c in old.chunks}) if old else []
        self._delete(keys=[keys.index_file(file_hash), keys.INDEX_FILES], args=[file_hash, *ids])

    def list(self, offset: int, limit: int) -> builtins.list[Manifest]:
        hashes = self.r.zrevrange(keys.INDEX_FILES, offset, offset + limit - 1)
        if not hashes:
            return []
        raws = self.r.mget([keys.index_file(h.decode()) for h in hashes])
        return [Manifest.from_json(raw) for raw in raws if raw]

    def count(self) -> int:
        return int(self.r.zcard(keys.INDEX_FILES))

    def chunk_target(self, chunk_id: str) -> int:
        values = self.r.hvals(keys.index_chunk(chunk_id))
        return max((int(v) for v in values), default=0)

    def all_file_hashes(self) -> builtins.list[str]:
        return [h.decode() for h in self.r.zrange(keys.INDEX_FILES, 0, -1)]

    def clear(self) -> None:
        """Drop the whole index (before a rebuild from the nodes)."""
        for key in self.r.scan_iter(match=keys.INDEX_PATTERN, count=1000):
            self.r.delete(key)

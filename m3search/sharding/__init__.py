"""Sharded indexes in one process: N complete indexes, a stable hash of the id, fan-out and exact merge.

No Ray here: `m3search.distributed` runs the same shards and router as Ray Serve deployments.
"""
from m3search.sharding.index import ShardedIndex
from m3search.sharding.layout import is_sharded, shard_of

__all__ = ["ShardedIndex", "is_sharded", "shard_of"]

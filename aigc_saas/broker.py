"""The Redis broker transport, hardened against one kombu failure that kills a worker.

When Redis drops while a worker holds unacknowledged messages (a doorbell received, its task not yet acked),
Celery 5.7's consumer first `collect()`s the broken connection (which closes the transport and clears its
`client`) and then closes it again. The second close tries to restore the unacked messages, builds a new
Redis pool from the cleared `client` and raises AttributeError, which is not a connection error: the
consumer reports "Unrecoverable error" and the worker stops consuming for good. Seen in the chaos test that
restarts Redis under running jobs.

Here a channel whose transport is already closed raises the redis ConnectionError instead, which kombu and
Celery treat as what it is (a lost broker): the close goes on, the consumer reconnects, and the messages that
could not be restored are re-rung by the sweep, because the Job row (not the message) is the truth.

Publishing also keeps one client per channel. kombu built a new redis-py client for every message
(`conn_or_acquire`), and a client's construction (its table of ~170 response callbacks) was a third of the
0.6 ms of CPU a web process spent ringing for each submitted job. The client shares the channel's pool, as the
new ones did, and is built again when the pool is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kombu.transport import redis as kombu_redis
from redis import exceptions as redis_exceptions


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:  # the transport was closed under this channel
            raise redis_exceptions.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool  # raises ConnectionError once the transport is closed, as a new client's pool did
        kept = self.__dict__.get("_kept_client")
        if kept is None or kept.connection_pool is not pool:
            kept = self._kept_client = self._create_client()
        yield kept


class Transport(kombu_redis.Transport):
    Channel = Channel

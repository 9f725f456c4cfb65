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
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis import exceptions as redis_exceptions


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:  # the transport was closed under this channel
            raise redis_exceptions.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel

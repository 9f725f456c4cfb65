"""Redis dies while a worker holds unacknowledged doorbells: the consumer's cleanup must end in a connection
error (which Celery recovers from by reconnecting), not in the AttributeError that made kombu's stock transport
stop the worker for good. The steps are the two calls Celery 5.7's consumer makes on a lost connection."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest
from celery.worker.consumer.consumer import COLLECT_SOCKET_TIMEOUT
from kombu import Connection, Exchange, Queue
from kombu.common import ignore_errors
from kombu.transport import redis as kombu_redis

from aigc_saas import stack
from aigc_saas.broker import Transport
from aigc_saas.celery import app


def lose_broker_holding_unacked(transport: type, tmp_path: Path) -> None:
    port = stack.free_port()
    redis = stack.start_redis(port, tmp_path / "redis")
    try:
        connection = Connection(f"redis://127.0.0.1:{port}/0", transport=transport)
        queue = Queue("doorbells", Exchange("doorbells"), "doorbells")
        with connection.Producer() as producer:
            for i in range(2):
                producer.publish({"job": i}, exchange=queue.exchange, routing_key="doorbells", declare=[queue])
        channel = connection.default_channel
        held = [channel.basic_get("doorbells", no_ack=False) for _ in range(2)]
        assert all(held) and len(channel.qos._delivered) == 2  # received, not acked: a task still running
        channel.basic_consume("doorbells", False, lambda message: None, "tasks")
        # A worker has more channels on the connection (remote control, events); kombu closes the newest first,
        # and the first one that fails to close leaves the older ones, the unacked doorbells' among them, open.
        control = connection.channel()
        Queue("control", Exchange("control"), "control")(control).declare()
        control.basic_consume("control", True, lambda message: None, "control")
        with pytest.raises(socket.timeout):  # the consumer waits on BRPOP, as an idle worker does
            connection.drain_events(timeout=0.2)
        assert channel._in_poll and control._in_poll
    finally:
        redis.kill()
        redis.wait(10)
    with contextlib.suppress(Exception):  # what Consumer.on_connection_error_after_connected does
        connection.collect(socket_timeout=COLLECT_SOCKET_TIMEOUT)
    ignore_errors(connection, connection.close)


def test_our_transport_survives_the_cleanup(tmp_path: Path) -> None:
    lose_broker_holding_unacked(Transport, tmp_path)


def test_kombus_stock_transport_crashes_in_the_same_cleanup(tmp_path: Path) -> None:
    """The reason for aigc_saas.broker: when kombu fixes this, this test fails and the shim can go."""
    with pytest.raises(AttributeError, match="hostname"):
        lose_broker_holding_unacked(kombu_redis.Transport, tmp_path)


def test_the_celery_app_uses_it_for_redis_urls() -> None:
    assert app.connection_for_read().transport_cls == "aigc_saas.broker:Transport"

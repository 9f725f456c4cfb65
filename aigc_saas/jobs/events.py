"""The event channel of a job: one Redis stream per job, written by workers and services, read by the web.

Events flow one way (engine → stream → clients) and a stream is replayable from its start, so a client that
connects late first gets what it missed. The database records state changes only; nothing here polls it.

Events: `state` {"state"} (`running` adds "attempt": above 1, the job started over after its worker was lost
and the text so far is void), `progress` {"fraction", "message"}, `token` {"index", "text"} (the concatenation
of an attempt's token texts is the final `result.text`), `end` {"state"} (published after the terminal state
committed).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

from aigc_saas.web_threads import in_thread

log = logging.getLogger(__name__)

KEEP_SECONDS = 24 * 3600  # a late client can replay a job's events for a day
MAX_EVENTS = 100_000  # per job; approximate trimming keeps a runaway job from filling Redis
CANCEL_CHANNEL = "aigc:cancel"
# After a failed publish, events are dropped (the database has the state) for this long instead of each call
# waiting out the socket timeout again: a hung Redis must not slow every submission and finish.
BREAKER_SECONDS = 5
_down_until = 0.0

_sync_lock = threading.Lock()
_sync_client: redis.Redis | None = None
_async_clients: dict[int, aioredis.Redis] = {}


def stream_key(job_id: Any) -> str:
    return f"aigc:job:{job_id}:events"


def end_key(job_id: Any) -> str:
    """A second stream that gets only the job's `end`: what a long poll waits on, without reading every token."""
    return f"aigc:job:{job_id}:end"


def client() -> redis.Redis:
    """This process's Redis client for publishing, with timeouts: a hung Redis must not hang a worker."""
    global _sync_client
    with _sync_lock:
        if _sync_client is None:
            _sync_client = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_connect_timeout=settings.AIGC_REDIS_TIMEOUT,
                socket_timeout=settings.AIGC_REDIS_TIMEOUT,
                health_check_interval=30,
            )
        return _sync_client


def _async_client() -> aioredis.Redis:
    """One client per event loop (a uvicorn worker has one; tests may make several)."""
    loop = asyncio.get_running_loop()
    found = _async_clients.get(id(loop))
    if found is None:
        found = aioredis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=settings.AIGC_REDIS_TIMEOUT,
            # Reads block up to BLOCK_MS on the server; the socket waits a little longer than that.
            socket_timeout=BLOCK_MS / 1000 + settings.AIGC_REDIS_TIMEOUT,
            # Each open stream holds one connection while it blocks on XREAD: allow many (Redis takes 10,000).
            max_connections=5000,
        )
        _async_clients[id(loop)] = found
    return found


def _fields(event: str, data: dict[str, Any]) -> dict[str, str]:
    return {"event": event, "data": json.dumps(data, separators=(",", ":"))}


def recently_failed() -> bool:
    """Redis failed a publish less than BREAKER_SECONDS ago: callers with a fallback skip it instead of waiting."""
    return time.monotonic() < _down_until


def publish(job_id: Any, event: str, data: dict[str, Any]) -> str | None:
    """Append one event; returns its id, or None when Redis is unreachable (the job's state is in the database)."""
    return publish_many([(job_id, event, data)])[0]


def publish_many(events: Iterable[tuple[Any, str, dict[str, Any]]]) -> list[str | None]:
    """Append many events in one round trip (an engine step's tokens for every row)."""
    global _down_until
    events = list(events)
    if not events or time.monotonic() < _down_until:  # Redis just failed: do not wait on it again for a while
        return [None] * len(events)
    try:
        pipe = client().pipeline(transaction=False)
        positions = []  # where each event's XADD reply is among the replies
        for job_id, event, data in events:
            key = stream_key(job_id)
            positions.append(len(pipe))
            pipe.xadd(key, _fields(event, data), maxlen=MAX_EVENTS, approximate=True)
            if event in ("state", "end"):
                pipe.expire(key, KEEP_SECONDS)
            if event == "end":
                pipe.xadd(end_key(job_id), _fields(event, data), maxlen=1)
                pipe.expire(end_key(job_id), KEEP_SECONDS)
        replies = pipe.execute()
    except redis.RedisError as exc:
        _down_until = time.monotonic() + BREAKER_SECONDS
        log.warning(
            "could not publish %d job events (%s); not trying again for %d s", len(events), exc, BREAKER_SECONDS
        )
        return [None] * len(events)
    ids = [replies[i] for i in positions]
    return [i.decode() if isinstance(i, bytes) else i for i in ids]


def read(job_id: Any, after: str = "0") -> list[tuple[str, str, dict[str, Any]]]:
    """Every event after `after`, without blocking (tests and the admin)."""
    entries = client().xrange(stream_key(job_id), min=f"({after}" if after != "0" else "-")
    return [_decode(entry_id, fields) for entry_id, fields in entries]


def _decode(entry_id: Any, fields: dict[Any, Any]) -> tuple[str, str, dict[str, Any]]:
    entry_id, event, data = _raw(entry_id, fields)
    return entry_id, event, json.loads(data)


BLOCK_MS = 5000


async def follow(
    job_id: Any, *, after: str = "0", timeout: float, heartbeat: float | None = None, pace: float = 0.0
) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """Yield `(id, event, data)` from `after` on, replaying first; stop after `end` or when `timeout` passes.

    With `heartbeat`, a `("", "heartbeat", {})` tuple is yielded whenever that many seconds pass without an event,
    so a caller can keep its connection alive and re-check what it must (a revoked key). `pace`: see
    `follow_batches`.
    """
    async for batch in follow_batches(job_id, after=after, timeout=timeout, heartbeat=heartbeat, pace=pace):
        for entry_id, event, data in batch:
            yield entry_id, event, json.loads(data)


async def follow_batches(
    job_id: Any, *, after: str = "0", timeout: float, heartbeat: float | None = None, pace: float = 0.0
) -> AsyncIterator[list[tuple[str, str, str]]]:
    """`follow`, one list per read: `(id, event, data as its JSON text)` of every event one read returned.

    What a relay that writes the events on as they are uses (the jobs API's SSE): a read's events go out in one
    write, and their data is not parsed only to be serialized again. A heartbeat is a list of its own,
    `[("", "heartbeat", "{}")]`; a list that holds `end` ends with it.

    `pace` (seconds): once a `token` has been yielded, the follower is handed to its event loop's hub
    (`_Hub`), which reads every such follower's stream in one XREAD at most every `pace` seconds, so what a job
    publishes meanwhile comes in one batch. A follower of a fast job then wakes at most 1/pace times a second
    instead of at every publish (every 20 ms from a busy worker), and a web process with hundreds of open streams
    makes 1/pace reads a second, not hundreds of times that. The first token and everything before it come at
    once, from the follower's own reads.
    """
    deadline = time.monotonic() + timeout
    last = after
    reader: _Reader | None = _Reader(_async_client(), stream_key(job_id))
    hub: _Hub | None = None
    follower: _Follower | None = None
    quiet_since = time.monotonic()
    try:
        while (left := deadline - time.monotonic()) > 0:
            if follower is not None:
                entries = await follower.next()
            else:
                block_ms = max(1, int(min(left, heartbeat or left, BLOCK_MS / 1000) * 1000))
                try:
                    entries = [_raw(i, f) for i, f in await reader.read(last, block_ms)]
                except redis.RedisError as exc:  # Redis restarting: wait, and let the caller look at the database
                    log.warning("reading the events of job %s failed (%s); retrying", job_id, exc)
                    await asyncio.sleep(min(0.5, max(left, 0)))
                    entries = []
            if not entries:
                if heartbeat and time.monotonic() - quiet_since >= heartbeat:
                    quiet_since = time.monotonic()
                    yield [("", "heartbeat", "{}")]
                continue
            quiet_since = time.monotonic()
            batch = []
            for entry in entries:
                batch.append(entry)
                last = entry[0]
                if entry[1] == "end":
                    yield batch
                    return
            if pace > 0 and follower is None and any(entry[1] == "token" for entry in batch):
                await reader.close()
                reader = None
                hub = _hub(pace)
                follower = hub.join(stream_key(job_id), last)
            yield batch
    finally:
        if reader is not None:
            await reader.close()
        if follower is not None:
            hub.leave(follower)


def _order(entry_id: str) -> tuple[int, int]:
    """A stream id as the pair Redis orders ids by ("1700000000000-3" → (1700000000000, 3))."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class _Follower:
    """One follower's place in its hub: the last id it was handed and what came after it, not yet taken."""

    __slots__ = ("key", "last", "pending", "ready")

    def __init__(self, key: str, last: str) -> None:
        self.key, self.last = key, last
        self.pending: list[tuple[str, str, str]] = []
        self.ready = asyncio.Event()

    async def next(self) -> list[tuple[str, str, str]]:
        """What the hub handed over since the last call, waiting for it; [] at the hub's tick (at least every
        `_Hub.TICK_SECONDS`), so the caller can look at its clock (heartbeats, its deadline). A timer of its own
        on each wait cost a web process with 200 open streams a tenth of what it spent on them."""
        if not self.pending:
            await self.ready.wait()
        self.ready.clear()
        taken, self.pending = self.pending, []
        return taken


class _Hub:
    """One reader for all of an event loop's followers past their first token (a web process's open streams).

    Each read is one XREAD of every followed stream from the earliest id its followers were handed, on one held
    connection, at most every `pace` seconds and blocking at most that long when nothing is new; each follower is
    handed the entries after its own last id. A follower that joined while a read was in flight, or that is behind
    where that read started, is served by the next read (which starts at its id), so nothing is skipped. The hub's
    task ends, giving its connection back, after IDLE_SECONDS without a follower."""

    IDLE_SECONDS = 30.0
    TICK_SECONDS = 1.0  # every follower is woken at least this often, with or without entries

    def __init__(self, client: aioredis.Redis, pace: float) -> None:
        self.pool, self.pace = client.connection_pool, pace
        self.loop = asyncio.get_running_loop()
        self.keys: dict[str, list[_Follower]] = {}
        self.joined = asyncio.Event()
        self.task: asyncio.Task | None = None

    def join(self, key: str, last: str) -> _Follower:
        follower = _Follower(key, last)
        self.keys.setdefault(key, []).append(follower)
        self.joined.set()
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run())
        return follower

    def leave(self, follower: _Follower) -> None:
        group = self.keys.get(follower.key)
        if group is not None and follower in group:
            group.remove(follower)
            if not group:
                del self.keys[follower.key]

    async def _run(self) -> None:
        connection: Any = None
        ticked = time.monotonic()
        try:
            await asyncio.sleep(self.pace)  # its first follower just had a read of its own
            while True:
                if time.monotonic() - ticked >= self.TICK_SECONDS:
                    ticked = time.monotonic()
                    for group in self.keys.values():
                        for follower in group:
                            follower.ready.set()
                if not self.keys:
                    self.joined.clear()
                    try:
                        async with asyncio.timeout(self.IDLE_SECONDS):
                            await self.joined.wait()
                    except TimeoutError:
                        return
                    await asyncio.sleep(self.pace)
                    continue
                began = time.monotonic()
                starts = {key: min((f.last for f in group), key=_order) for key, group in self.keys.items()}
                try:
                    if connection is None:
                        connection = await self.pool.get_connection()
                    block_ms = max(1, int(self.pace * 1000))
                    await connection.send_command(
                        "XREAD", "COUNT", 500, "BLOCK", block_ms, "STREAMS", *starts, *starts.values()
                    )
                    reply = await connection.read_response()
                except Exception as exc:  # noqa: BLE001 - Redis restarting: the followers' heartbeats go on meanwhile
                    log.log(
                        logging.WARNING if isinstance(exc, redis.RedisError) else logging.ERROR,
                        "reading %d job event streams failed (%s); retrying",
                        len(starts),
                        exc,
                        exc_info=not isinstance(exc, redis.RedisError),
                    )
                    if connection is not None:
                        await connection.disconnect()
                        await self.pool.release(connection)
                        connection = None
                    await asyncio.sleep(0.5)
                    continue
                try:
                    for key, entries in _streams(reply):
                        self._hand_out(key, starts[key], entries)
                except Exception:  # a reply it cannot read must not end the reads of every follower
                    log.exception("handing out the events of %d job streams failed", len(starts))
                rest = began + self.pace - time.monotonic()
                if rest > 0:
                    await asyncio.sleep(rest)
        finally:
            if connection is not None:
                await self.pool.release(connection)
            for group in self.keys.values():  # cancelled with followers left: none waits for a tick that won't come
                for follower in group:
                    follower.ready.set()

    def _hand_out(self, key: str, start: str, entries: list[Any]) -> None:
        group = self.keys.get(key)
        if not group or not entries:
            return
        raw = [_raw(entry_id, fields) for entry_id, fields in entries]
        orders = [_order(entry[0]) for entry in raw]
        start_order = _order(start)
        ended = []
        for follower in group:
            mine = _order(follower.last)
            if mine < start_order:  # joined behind where this read started: the next read starts at its id
                continue
            handed = raw[bisect.bisect_right(orders, mine) :]
            if handed:
                follower.pending.extend(handed)
                follower.last = handed[-1][0]
                follower.ready.set()
                if handed[-1][1] == "end":
                    ended.append(follower)
        for follower in ended:
            self.leave(follower)


def _streams(reply: Any) -> list[tuple[str, list[Any]]]:
    """(key, entries) of each stream in an XREAD reply, RESP2 or RESP3."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply
    return [(key.decode() if isinstance(key, bytes) else key, entries) for key, entries in pairs]


_hubs: dict[int, _Hub] = {}


def _hub(pace: float) -> _Hub:
    """This event loop's hub (one per loop and pace)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(id(loop))
    if found is None or found.pace != pace or found.loop is not loop:
        found = _Hub(_async_client(), pace)
        _hubs[id(loop)] = found
    return found


class _Reader:
    """XREAD of one stream on one pooled connection, held from the first read to `close`.

    A follower blocks on its connection most of the time anyway; holding it spares every read the client's pool
    checkout, retry wrapper and reply conversion, which cost a web process more than the read itself (with
    hundreds of open streams, most of what it spends on them). A failed or interrupted read leaves the connection
    disconnected (redis-py's own rule), so it goes back to the pool clean and reconnects on its next use."""

    def __init__(self, client: aioredis.Redis, key: str) -> None:
        self.pool, self.key = client.connection_pool, key
        self.connection: Any = None

    async def read(self, after: str, block_ms: int) -> list[Any]:
        """Entries `(id, fields)` after `after`, waiting up to `block_ms` for one; [] when none came."""
        if self.connection is None:
            self.connection = await self.pool.get_connection()
        await self.connection.send_command("XREAD", "COUNT", 500, "BLOCK", block_ms, "STREAMS", self.key, after)
        reply = await self.connection.read_response()
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {key: entries}
            return next(iter(reply.values()))
        return reply[0][1]  # RESP2: [[key, entries]]

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            await self.pool.release(connection)


def _raw(entry_id: Any, fields: Any) -> tuple[str, str, str]:
    """(id, event, data JSON text) of one stream entry; its fields as a dict or as the wire's flat list."""
    if not isinstance(fields, dict):
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    event, data = fields.get(b"event", fields.get("event")), fields.get(b"data", fields.get("data"))
    return (
        entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        event.decode() if isinstance(event, bytes) else event,
        data.decode() if isinstance(data, bytes) else data,
    )


async def wait_until_terminal(job_id: Any, timeout: float) -> bool:
    """True once the job is terminal: already in the database, or its `end` event arrives within `timeout`."""
    if await in_thread(_is_terminal)(job_id):
        return True
    if await wait_for_end(job_id, timeout):
        return True
    return await in_thread(_is_terminal)(job_id)  # an `end` lost while Redis was down


async def wait_for_end(job_id: Any, timeout: float) -> bool:
    """True when the job's `end` event is published, or was before (its end stream replays); False after
    `timeout` or while Redis is unreachable (the caller reads the database)."""
    reader = _Reader(_async_client(), end_key(job_id))  # the XREAD without redis-py's per-call wrapping
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                if await reader.read("0", max(1, int(min(left, BLOCK_MS / 1000) * 1000))):
                    return True
            except redis.RedisError as exc:
                log.warning("waiting for the end of job %s failed (%s)", job_id, exc)
                return False
        return False
    finally:
        await reader.close()


def _is_terminal(job_id: Any) -> bool:
    from aigc_saas import rows
    from aigc_saas.jobs.models import TERMINAL_STATES, Job

    return any(state in TERMINAL_STATES for (state,) in rows.values(Job, ["state"], id=job_id))


def request_cancel(job_id: Any) -> None:
    """Tell every worker at once that a running job was cancelled (the row's flag is the durable record)."""
    try:
        client().publish(CANCEL_CHANNEL, str(job_id))
    except redis.RedisError as exc:
        log.warning("could not broadcast the cancellation of job %s (workers also check the row): %s", job_id, exc)

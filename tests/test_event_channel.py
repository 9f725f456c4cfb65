"""The event channel's reads, as the SSE and /v1 streams use them: paced batches, exact text, connections returned."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from aigc_saas.jobs import events

PACE = 0.5


def _publish_later(job_id: uuid.UUID, first_seen: threading.Event, texts: list[str]) -> threading.Thread:
    """The job's first token now; once a follower has it, the rest one every 10 ms, then `end`."""

    def run() -> None:
        events.publish(job_id, "state", {"state": "running", "attempt": 1})
        events.publish(job_id, "token", {"index": 0, "text": texts[0]})
        assert first_seen.wait(10)
        for index, text in enumerate(texts[1:], start=1):
            events.publish(job_id, "token", {"index": index, "text": text})
            time.sleep(0.01)
        events.publish(job_id, "end", {"state": "succeeded"})

    return threading.Thread(target=run)


def test_a_follower_gets_the_first_token_at_once_then_paced_batches_whose_text_is_exact() -> None:
    job_id = uuid.uuid4()
    texts = [f"w{i} " for i in range(80)]  # 80 tokens over about 0.8 s
    first_seen = threading.Event()
    publisher = _publish_later(job_id, first_seen, texts)

    async def follow() -> tuple[float, list[tuple[float, list[tuple[str, str, str]]]]]:
        batches = []
        published = time.monotonic()
        publisher.start()
        first_after = None
        async for batch in events.follow_batches(job_id, timeout=20, pace=PACE):
            batches.append((time.monotonic(), batch))
            if first_after is None and any(event == "token" for _, event, _ in batch):
                first_after = time.monotonic() - published
                first_seen.set()
        return first_after or 0.0, batches

    first_after, batches = asyncio.run(follow())
    publisher.join(10)

    assert first_after < PACE  # not held for the pace: only reads after the first token are
    entries = [entry for _, batch in batches for entry in batch]
    tokens = [events.json.loads(data) for _, event, data in entries if event == "token"]
    assert [t["index"] for t in tokens] == list(range(len(texts)))
    assert "".join(t["text"] for t in tokens) == "".join(texts)
    assert entries[-1][1] == "end"
    # Reads after the first token start at least PACE apart: the ~0.8 s of tokens came in a few batches, not 79.
    first = next(i for i, (_, batch) in enumerate(batches) if any(e == "token" for _, e, _ in batch))
    later = batches[first + 1 :]
    assert later, "the tokens after the first came in no later read"
    assert len(later) <= (later[-1][0] - batches[first][0] + 0.05) / PACE
    assert len(later) < len(texts) // 4


def test_a_follower_without_a_pace_reads_what_is_there_whenever_it_comes() -> None:
    job_id = uuid.uuid4()
    for index in range(3):
        events.publish(job_id, "token", {"index": index, "text": f"t{index}"})
    events.publish(job_id, "end", {"state": "succeeded"})

    async def follow() -> list[tuple[str, str, dict]]:
        return [entry async for entry in events.follow(job_id, timeout=10)]

    got = asyncio.run(follow())
    assert [event for _, event, _ in got] == ["token", "token", "token", "end"]
    assert [data.get("text") for _, _, data in got[:3]] == ["t0", "t1", "t2"]


def test_followers_give_their_connection_back_when_they_end_or_are_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each follower holds one pooled connection while it reads; a pool of two serves any number of them in turn,
    also after one was cancelled in the middle of a blocking read (its connection comes back disconnected)."""
    job_ids = [uuid.uuid4() for _ in range(5)]
    for job_id in job_ids:
        events.publish(job_id, "token", {"index": 0, "text": "x"})
        events.publish(job_id, "end", {"state": "succeeded"})
    quiet = uuid.uuid4()  # nothing is published here: its follower blocks until cancelled

    async def main() -> list[int]:
        small = aioredis.Redis.from_url(settings.REDIS_URL, max_connections=2)
        monkeypatch.setattr(events, "_async_client", lambda: small)
        counts = []
        for job_id in job_ids:
            counts.append(len([entry async for entry in events.follow_batches(job_id, timeout=10)]))
        blocked = asyncio.ensure_future(_drain(events.follow_batches(quiet, timeout=30)))
        await asyncio.sleep(0.3)  # in its XREAD now
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        for job_id in job_ids:  # the two connections still serve, one of them reconnected
            counts.append(len([entry async for entry in events.follow_batches(job_id, timeout=10)]))
        await small.aclose()
        return counts

    assert asyncio.run(main()) == [1] * 10  # each job's token and end came in one read


async def _drain(batches) -> None:  # noqa: ANN001
    async for _ in batches:
        pass


def test_followers_past_their_first_token_share_one_paced_read_and_each_gets_its_exact_text() -> None:
    """12 jobs, 3 followers each: once past the first token they are served by their event loop's hub, which reads
    every followed stream in one XREAD at most every pace, instead of each follower reading on its own."""
    pace = 0.1
    job_ids = [uuid.uuid4() for _ in range(12)]
    texts = {job_id: [f"{n}:{i} " for i in range(40)] for n, job_id in enumerate(job_ids)}
    all_first = threading.Event()

    def publish() -> None:
        for job_id in job_ids:
            events.publish(job_id, "token", {"index": 0, "text": texts[job_id][0]})
        assert all_first.wait(10)
        for index in range(1, 40):  # ~0.4 s of tokens, every job's at each turn
            for job_id in job_ids:
                events.publish(job_id, "token", {"index": index, "text": texts[job_id][index]})
            time.sleep(0.01)
        for job_id in job_ids:
            events.publish(job_id, "end", {"state": "succeeded"})

    async def follow(job_id: uuid.UUID, firsts: list[int]) -> str:
        got = []
        async for batch in events.follow_batches(job_id, timeout=20, pace=pace):
            got.extend(batch)
            if len(got) == len([entry for entry in got if entry[1] == "token"]) == 1:
                firsts.append(1)
                if len(firsts) == 3 * len(job_ids):
                    all_first.set()
        assert got[-1][1] == "end"
        return "".join(events.json.loads(data)["text"] for _, event, data in got if event == "token")

    async def main() -> tuple[list[str], float]:
        firsts: list[int] = []
        publisher = threading.Thread(target=publish)
        publisher.start()
        started = time.monotonic()
        followed = await asyncio.gather(*(follow(job_id, firsts) for job_id in job_ids for _ in range(3)))
        took = time.monotonic() - started
        publisher.join(10)
        return followed, took

    before = _xreads()
    followed, took = asyncio.run(main())
    reads = _xreads() - before
    assert followed == ["".join(texts[job_id]) for job_id in job_ids for _ in range(3)]
    # Each follower reads on its own up to its first token (36 reads, a few more if one came back empty); then
    # the hub makes at most one read a pace for all of them, where each on its own would make 36.
    assert reads <= 36 + 6 + took / pace + 2


def _xreads() -> int:
    """XREAD calls Redis has answered so far."""
    return int(events.client().info("commandstats").get("cmdstat_xread", {}).get("calls", 0))


def test_a_follower_that_joins_behind_the_hub_gets_every_entry_after_its_own_id_once() -> None:
    """A late follower of a stream the hub already reads from further on starts where it is, not where the hub is."""
    key = events.stream_key(uuid.uuid4())
    job_id = key.split(":")[2]

    async def main() -> tuple[list[str], list[str]]:
        ids = [events.publish(job_id, "token", {"index": i, "text": f"t{i}"}) for i in range(5)]
        hub = events._Hub(events._async_client(), 0.05)
        ahead = hub.join(key, ids[3])
        first = await ahead.next()
        behind = hub.join(key, ids[0])  # joins while the hub's reads start after ids[4]
        await asyncio.sleep(0.1)
        events.publish(job_id, "token", {"index": 5, "text": "t5"})
        events.publish(job_id, "end", {"state": "succeeded"})
        got_ahead, got_behind = first, []
        while not got_ahead or got_ahead[-1][1] != "end":
            got_ahead += await ahead.next()
        while not got_behind or got_behind[-1][1] != "end":
            got_behind += await behind.next()
        assert not hub.keys  # both left when their `end` was handed to them
        hub.task.cancel()
        return [events.json.loads(d).get("text", e) for _, e, d in got_ahead], [
            events.json.loads(d).get("text", e) for _, e, d in got_behind
        ]

    ahead, behind = asyncio.run(main())
    assert ahead == ["t4", "t5", "end"]
    assert behind == ["t1", "t2", "t3", "t4", "t5", "end"]


def test_the_hub_reconnects_when_its_connection_is_cut_and_its_followers_go_on() -> None:
    job_id = uuid.uuid4()
    key = events.stream_key(job_id)

    async def main() -> list[str]:
        hub = events._Hub(events._async_client(), 0.05)
        follower = hub.join(key, events.publish(job_id, "token", {"index": 0, "text": "a"}))
        events.publish(job_id, "token", {"index": 1, "text": "b"})
        got = await follower.next()
        # Redis drops every other connection (a restart, a proxy's idle cut): the hub's read fails.
        events.client().client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.2)
        events.publish(job_id, "token", {"index": 2, "text": "c"})
        events.publish(job_id, "end", {"state": "succeeded"})
        deadline = time.monotonic() + 5
        while got[-1][1] != "end" and time.monotonic() < deadline:
            got += await follower.next()
        hub.task.cancel()
        return [events.json.loads(data).get("text", event) for _, event, data in got]

    assert asyncio.run(main()) == ["b", "c", "end"]

"""The broker fails: Redis restarted without persistence (queued doorbells and in-flight sends lost), a broker
that accepts connections and never answers, and the web server killed mid-submission. The database is the
truth: every job still runs once, every webhook is sent, and a retried submission finds its job."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import requests
from django.conf import settings

from aigc_saas import stack
from aigc_saas.jobs.models import Job
from tests.chaos.conftest import check_outcome, client, terminal, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

TEXT = {"prompt": "Write about sourdough", "max_new_tokens": 200, "temperature": 1.0}
QUICK_SWEEPS = {"AIGC_SWEEP_SECONDS": "1", "AIGC_QUEUED_REDISPATCH_SECONDS": "2", "AIGC_WEBHOOK_RESEND_SECONDS": "2"}


def body(i: int, **extra: object) -> dict:
    return {"generator": "transformers-text", "params": {**TEXT, "seed": i}, **extra}


def test_redis_restarted_without_persistence_loses_no_job_and_no_webhook(chaos_stack, tenant_key, receiver) -> None:  # noqa: ANN001
    web, _ = chaos_stack.web(), chaos_stack.control(**QUICK_SWEEPS)
    api = client(web.url, tenant_key[1])
    early = [api.post(f"{api.base}/jobs", json=body(i, webhook_url=receiver.url)).json()["id"] for i in range(2)]

    lost_for = chaos_stack.restart_redis(down_seconds=1)  # their doorbells were in Redis: gone
    worker = chaos_stack.worker(**QUICK_SWEEPS)
    late = [api.post(f"{api.base}/jobs", json=body(i, webhook_url=receiver.url)).json()["id"] for i in (2, 3)]
    wait_for(lambda: Job.objects.filter(pk__in=late, state="running").exists(), 90, "a job running")
    # Down until a job finishes: its end event and webhook send fail, the outbox row waits for the sweep.
    again_for = chaos_stack.restart_redis(until=lambda: Job.objects.filter(pk__in=late, state="succeeded").exists())
    restarted = time.monotonic()
    finished_while_down = list(Job.objects.filter(pk__in=late, state="succeeded").values_list("pk", flat=True))

    ids = early + late
    recovery = wait_for(lambda: terminal(ids), 150, "every job terminal", interval=0.5)
    jobs = check_outcome(ids)
    wait_for(lambda: all(receiver.by_job().get(i) for i in ids), 60, "a webhook for every job")
    print(
        f"\nRedis restarted twice without persistence (down {lost_for:.1f} s, then {again_for:.1f} s with jobs "
        f"running, {len(finished_while_down)} finished meanwhile): all {len(ids)} jobs succeeded {recovery:.1f} s after the second restart, attempts "
        f"{sorted(j.attempts for j in jobs)}; webhooks {sum(map(len, receiver.by_job().values()))} for {len(ids)} jobs, "
        f"all sent {time.monotonic() - restarted:.1f} s after it"
    )
    assert {i: set(events) for i, events in receiver.by_job().items()} == {i: {"job.succeeded"} for i in ids}
    assert worker.process.poll() is None, "the worker survived both restarts"


def test_a_hung_broker_and_a_killed_web_server_lose_no_submission_and_make_no_duplicate(
    chaos_stack, tenant_key
) -> None:  # noqa: ANN001
    hung = subprocess.Popen(
        [sys.executable, "-m", "tests.durability.hung_redis"], stdout=subprocess.PIPE, cwd=settings.BASE_DIR
    )
    try:
        hung_url = f"redis://127.0.0.1:{int(hung.stdout.readline())}/0"
        stuck = chaos_stack.web(REDIS_URL=hung_url)  # its broker, events and rate limits all on the hung server
        chaos_stack.control(**QUICK_SWEEPS)
        chaos_stack.worker(**QUICK_SWEEPS)  # the workers see the real Redis
        api = client(stuck.url, tenant_key[1])

        started = time.monotonic()
        answered = api.post(f"{api.base}/jobs", json=body(0), headers={"Idempotency-Key": "hung-0"}, timeout=60)
        took = time.monotonic() - started
        assert answered.status_code == 202, answered.text

        outcomes: dict[str, object] = {}

        def submit(i: int) -> None:
            try:
                outcomes[f"k-{i}"] = api.post(
                    f"{api.base}/jobs", json=body(i), headers={"Idempotency-Key": f"k-{i}"}, timeout=60
                ).status_code
            except requests.RequestException as exc:
                outcomes[f"k-{i}"] = type(exc).__name__

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(1, 5)]
        for thread in threads:
            thread.start()
        # Kill the web server once every row is committed, while it still waits on the hung broker to answer.
        wait_for(lambda: Job.objects.filter(idempotency_key__startswith="k-").count() == 4, 60, "rows committed")
        stuck.process.kill()
        for thread in threads:
            thread.join(60)
        cut_off = [key for key, outcome in outcomes.items() if outcome != 202]

        fresh = chaos_stack.web()  # back, on the real Redis; clients retry with the same keys
        retry = client(fresh.url, tenant_key[1])
        replies = {
            f"k-{i}": retry.post(f"{retry.base}/jobs", json=body(i), headers={"Idempotency-Key": f"k-{i}"}, timeout=30)
            for i in range(1, 5)
        }
        assert {key: reply.status_code for key, reply in replies.items()} == {f"k-{i}": 202 for i in range(1, 5)}
        first_ids = dict(Job.objects.filter(idempotency_key__startswith="k-").values_list("idempotency_key", "pk"))
        assert {key: reply.json()["id"] for key, reply in replies.items()} == {k: str(v) for k, v in first_ids.items()}
        ids = [answered.json()["id"], *map(str, first_ids.values())]
        assert Job.objects.count() == 5  # no duplicate from a retry

        recovery = wait_for(lambda: terminal(ids), 120, "every job terminal (rung by the sweep)", interval=0.5)
        check_outcome(ids)
        print(
            f"\nhung broker: a submission answered 202 in {took:.1f} s; web killed with {len(cut_off)} of 4 clients "
            f"cut off after their rows were committed; retries with the same Idempotency-Key returned the same "
            f"4 jobs; all 5 jobs succeeded {recovery:.1f} s later (the sweep rang them)"
        )
        assert cut_off, "the kill came while clients still waited"
        assert took < 10
    finally:
        hung.kill()
        hung.wait(10)


def test_a_worker_and_beat_on_a_hung_broker_keep_retrying_instead_of_hanging(chaos_stack, hung_redis) -> None:  # noqa: ANN001
    env = {"REDIS_URL": hung_redis.url, "AIGC_DATA_DIR": str(chaos_stack.root), "AIGC_SWEEP_SECONDS": "1"}
    control = chaos_stack._start(stack.control_worker_command(beat=True), "control-hung", None, env)
    started = time.monotonic()
    wait_for(lambda: b"consumer: Cannot connect" in control.log_path.read_bytes(), 60, "the worker retrying")
    wait_for(lambda: b"beat: Connection error" in control.log_path.read_bytes(), 60, "beat retrying")
    print(f"\nworker and beat on a hung broker: both time out and retry within {time.monotonic() - started:.1f} s")
    assert control.process.poll() is None

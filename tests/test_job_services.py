"""Job state changes: atomic claims, duplicate deliveries, monotonic progress, all-or-nothing results, the sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from aigc_saas.errors import Conflict
from aigc_saas.jobs import runtime, services
from aigc_saas.jobs.models import Artifact, Job
from generators.base import GenerationResult, OutputFile

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(tenant) -> Job:  # noqa: ANN001
    return services.submit_job(tenant, "transformers-text", {"prompt": "hello"})


def test_a_job_is_claimed_once_and_a_second_delivery_does_nothing(job) -> None:  # noqa: ANN001
    first = services.claim_job(job.pk, "w1")
    second = services.claim_job(job.pk, "w2")
    assert first is not None and first.state == "running" and first.worker == "w1"
    assert second is None
    job.refresh_from_db()
    assert job.attempts == 1 and job.worker == "w1"


def test_executing_an_already_claimed_job_is_skipped(job) -> None:  # noqa: ANN001
    services.claim_job(job.pk, "elsewhere")
    assert runtime.execute_job(str(job.pk)) == "skipped"
    job.refresh_from_db()
    assert job.state == "running" and job.attempts == 1


def test_a_claim_takes_the_fairest_job_of_the_queue_not_the_oldest(tenant, other_tenant) -> None:  # noqa: ANN001
    backlog = [services.submit_job(tenant, "transformers-text", {"prompt": f"a{i}"}) for i in range(5)]
    services.cancel_job(backlog[0])
    (first,) = services.claim_batch("cpu", "w", preferred=backlog[1].pk)
    late = services.submit_job(other_tenant, "transformers-text", {"prompt": "b"})
    # The doorbell names another of the busy tenant's jobs, but the idle tenant's job goes first.
    (second,) = services.claim_batch("cpu", "w", preferred=backlog[2].pk)
    (third,) = services.claim_batch("cpu", "w", preferred=backlog[2].pk)
    assert (first.pk, second.pk, third.pk) == (backlog[1].pk, late.pk, backlog[2].pk)
    assert services.claim_batch("gpu", "w") == []


def test_a_batch_claim_takes_jobs_in_fair_order_each_with_its_own_attempt(tenant, other_tenant) -> None:  # noqa: ANN001
    busy = [services.submit_job(tenant, "transformers-text", {"prompt": f"a{i}"}) for i in range(5)]
    idle = [services.submit_job(other_tenant, "transformers-text", {"prompt": f"b{i}"}) for i in range(2)]
    services.claim_job(busy[4].pk, "elsewhere")  # the busy tenant runs one job already

    taken = services.claim_batch("cpu", "w", preferred=busy[1].pk, limit=4)

    # The tenants take turns, counting running and picked jobs: the idle tenant first, then the named job,
    # then each tenant's oldest.
    assert [j.pk for j in taken] == [idle[0].pk, busy[1].pk, idle[1].pk, busy[0].pk]
    assert {(j.state, j.worker, j.attempts) for j in taken} == {("running", "w", 1)}
    assert services.claim_batch("cpu", "w2", limit=10) == [
        Job.objects.get(pk=busy[2].pk),
        Job.objects.get(pk=busy[3].pk),
    ]
    assert services.claim_batch("cpu", "w3", limit=10) == []


def test_a_job_records_the_steps_its_plugin_expects(tenant) -> None:  # noqa: ANN001
    job = services.submit_job(tenant, "transformers-text", {"prompt": "a", "max_new_tokens": 48})
    default = services.submit_job(tenant, "transformers-text", {"prompt": "b"})
    assert (job.steps, default.steps) == (48, 256)
    assert Job.objects.get(pk=job.pk).steps == 48


def _submitted_at(job: Job, at: object) -> None:
    Job.objects.filter(pk=job.pk).update(created_at=at)


def test_a_full_engine_takes_the_longest_job_first_among_jobs_submitted_together(tenant) -> None:  # noqa: ANN001
    now = timezone.now()
    jobs = {
        n: services.submit_job(tenant, "transformers-text", {"prompt": "p", "max_new_tokens": n}) for n in (16, 200, 64)
    }
    for n, job in jobs.items():
        _submitted_at(job, now + timedelta(milliseconds=n // 16))  # the short one first, a few ms apart
    step = {"transformers-text": 0.01}  # the worker's measured engine step
    order = [services.claim_batch("cpu", "w", step_seconds=step)[0].steps for _ in range(3)]
    assert order == [200, 64, 16]  # each claim the job with the most work: the batch ends together


def test_without_a_measured_step_the_oldest_job_goes_first(tenant) -> None:  # noqa: ANN001
    now = timezone.now()
    short = services.submit_job(tenant, "transformers-text", {"prompt": "p", "max_new_tokens": 16})
    long = services.submit_job(tenant, "transformers-text", {"prompt": "p", "max_new_tokens": 200})
    _submitted_at(short, now)
    _submitted_at(long, now + timedelta(milliseconds=5))
    # No engine has run a step yet, or another generator's step: oldest first.
    (first,) = services.claim_batch("cpu", "w", step_seconds={"other-plugin": 1.0})
    assert first.pk == short.pk


def test_a_short_job_waits_no_longer_than_the_longer_jobs_run_time(tenant) -> None:  # noqa: ANN001
    now = timezone.now()
    short = services.submit_job(tenant, "transformers-text", {"prompt": "p", "max_new_tokens": 16})
    long = services.submit_job(tenant, "transformers-text", {"prompt": "p", "max_new_tokens": 216})
    step = {"transformers-text": 0.01}  # the long job's 200 more steps: 2 s more work
    # Submitted 2.5 s after the short one, the long job is not urgent enough to go first ...
    _submitted_at(short, now)
    _submitted_at(long, now + timedelta(seconds=2.5))
    assert services.claim_batch("cpu", "w", step_seconds=step)[0].pk == short.pk
    # ... 1.5 s after it, it is: its 2 s more work outweighs the 1.5 s the short one has waited.
    short2 = services.submit_job(tenant, "transformers-text", {"prompt": "p", "max_new_tokens": 16})
    _submitted_at(short2, now)
    _submitted_at(long, now + timedelta(seconds=1.5))
    assert services.claim_batch("cpu", "w", step_seconds=step)[0].pk == long.pk


def test_tenant_turns_come_before_the_work_each_job_has(tenant, other_tenant) -> None:  # noqa: ANN001
    busy = [services.submit_job(tenant, "transformers-text", {"prompt": "p", "max_new_tokens": 200}) for _ in range(2)]
    short = services.submit_job(other_tenant, "transformers-text", {"prompt": "p", "max_new_tokens": 16})
    services.claim_job(busy[0].pk, "elsewhere")  # the busy tenant runs one job already
    (first,) = services.claim_batch("cpu", "w", step_seconds={"transformers-text": 0.01})
    assert first.pk == short.pk


def test_each_claim_announces_its_attempt_so_a_stream_knows_a_restart(job) -> None:  # noqa: ANN001
    from aigc_saas.jobs import events

    services.claim_job(job.pk, "lost-worker")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.claim_job(job.pk, "next-worker")

    running = [data for _, event, data in events.read(job.pk) if event == "state" and data["state"] == "running"]
    assert running == [{"state": "running", "attempt": 1}, {"state": "running", "attempt": 2}]


def test_progress_only_moves_forward_and_only_while_running(job) -> None:  # noqa: ANN001
    services.report_progress(job, 0.5, "half")
    job.refresh_from_db()
    assert job.progress == 0.0  # not running yet
    claimed = services.claim_job(job.pk, "w")
    services.report_progress(claimed, 0.6, "more")
    services.report_progress(claimed, 0.3, "stale report")
    job.refresh_from_db()
    assert (job.progress, job.progress_message) == (0.6, "more")


def test_a_stale_attempt_can_write_nothing_once_its_lease_lapsed_and_another_claimed_it(job) -> None:  # noqa: ANN001
    paused = services.claim_job(job.pk, "paused-worker")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    second = services.claim_job(job.pk, "second-worker")  # a broker redelivery of a job whose lease lapsed
    assert second is not None and second.attempts == 2

    assert not services.renew_lease(paused)
    services.report_progress(paused, 0.9, "stale")
    services.fail_job(paused, "internal_error", "the paused attempt woke up")
    with pytest.raises(Conflict):
        services.finish_job(paused, GenerationResult(files=[OutputFile("x.png", "image/png", b"stale")]))
    services.finish_job(second, GenerationResult(text="fresh"))

    job.refresh_from_db()
    assert (job.state, job.result["text"], job.worker, job.progress) == ("succeeded", "fresh", "second-worker", 1.0)
    assert Artifact.objects.filter(job=job).count() == 0


def test_a_claim_paused_before_it_read_its_jobs_back_takes_none_and_says_so(job, monkeypatch, caplog) -> None:  # noqa: ANN001
    """A worker stopped between a claim's update and its read-back (SIGSTOP) wakes to find the job another
    attempt's: it returns nothing to run and logs why (the chaos test's paused worker looks for that line)."""
    read_back = services.rows.all

    def another_worker_claims_meanwhile(model, *args, **conditions):  # noqa: ANN001, ANN202
        Job.objects.filter(pk=job.pk).update(worker="second-worker", attempts=2, started_at=timezone.now())
        return read_back(model, *args, **conditions)

    monkeypatch.setattr(services.rows, "all", another_worker_claims_meanwhile)
    with caplog.at_level("WARNING", logger="aigc_saas.jobs.services"):
        assert services.claim_batch(job.queue, "paused-worker", limit=4) == []
    assert "1 of the 1 jobs this claim took were taken over by another attempt" in caplog.text
    job.refresh_from_db()
    assert (job.worker, job.attempts) == ("second-worker", 2)


def test_the_same_idempotency_key_and_body_return_the_first_job_and_another_body_is_a_conflict(tenant) -> None:  # noqa: ANN001
    first = services.submit_job(tenant, "transformers-text", {"prompt": "x"}, idempotency_key="k1")
    again = services.submit_job(tenant, "transformers-text", {"prompt": "x"}, idempotency_key="k1")
    assert again.pk == first.pk and Job.objects.filter(tenant=tenant).count() == 1
    with pytest.raises(Conflict) as reused:
        services.submit_job(tenant, "transformers-text", {"prompt": "y"}, idempotency_key="k1")
    assert reused.value.code == "idempotency_key_reused"


def test_finishing_stores_artifacts_with_size_and_sha256(job) -> None:  # noqa: ANN001
    claimed = services.claim_job(job.pk, "w")
    result = GenerationResult(text="done", files=[OutputFile("a.txt", "text/plain", b"abc", {"k": 1})])
    services.finish_job(claimed, result)
    job.refresh_from_db()
    artifact = job.artifacts.get()
    assert job.state == "succeeded" and job.result["text"] == "done"
    assert job.result["artifacts"] == [str(artifact.pk)]
    assert (artifact.size, artifact.sha256[:8], artifact.metadata) == (3, "ba7816bf", {"k": 1})
    assert artifact.file.read() == b"abc"


def test_a_result_that_cannot_be_stored_leaves_no_half_written_record(job, monkeypatch) -> None:  # noqa: ANN001
    claimed = services.claim_job(job.pk, "w")
    saved_names = []
    original = Artifact.save

    def failing_save(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        saved_names.append(self.file.name)
        if self.index == 1:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Artifact, "save", failing_save)
    files = [
        OutputFile("a.bin", "application/octet-stream", b"1"),
        OutputFile("b.bin", "application/octet-stream", b"2"),
    ]
    with pytest.raises(OSError):
        services.finish_job(claimed, GenerationResult(files=files))
    job.refresh_from_db()
    assert job.state == "running" and Artifact.objects.count() == 0
    storage = Artifact._meta.get_field("file").storage
    assert not any(storage.exists(name) for name in saved_names)


def test_cancelling_a_running_job_asks_the_worker_to_stop(job) -> None:  # noqa: ANN001
    services.claim_job(job.pk, "w")
    services.cancel_job(job)
    job.refresh_from_db()
    assert job.state == "running" and job.cancel_requested
    assert services.cancel_requested_among([job.pk]) == [job.pk]


def test_the_sweep_requeues_lapsed_leases_rerings_lost_doorbells_and_fails_orphans(tenant, settings) -> None:  # noqa: ANN001
    from aigc_saas.jobs.models import WorkerStatus

    WorkerStatus.objects.create(name="live", queues=["cpu"])
    long_ago = timezone.now() - timedelta(hours=3)
    lost = services.submit_job(tenant, "transformers-text", {"prompt": "lost"})
    Job.objects.filter(pk=lost.pk).update(created_at=long_ago, dispatched_at=None)
    stuck = services.submit_job(tenant, "transformers-text", {"prompt": "stuck"})
    services.claim_job(stuck.pk, "dead-worker")
    Job.objects.filter(pk=stuck.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    hopeless = services.submit_job(tenant, "transformers-text", {"prompt": "hopeless"})
    services.claim_job(hopeless.pk, "dead-worker")
    Job.objects.filter(pk=hopeless.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1), attempts=settings.AIGC_MAX_ATTEMPTS
    )
    orphan = Job.objects.create(tenant=tenant, generator="transformers-text", queue="nobody-consumes", params={})
    Job.objects.filter(pk=orphan.pk).update(created_at=long_ago)
    waiting = services.submit_job(tenant, "transformers-text", {"prompt": "just queued"})

    counts = services.requeue_stale_jobs()

    assert counts == {"redispatched": 1, "revived": 1, "failed": 1, "orphaned": 1}
    states = dict(Job.objects.values_list("pk", "state"))
    assert states[lost.pk] == "queued" and states[stuck.pk] == "queued" and states[hopeless.pk] == "failed"
    assert states[waiting.pk] == "queued"
    assert Job.objects.get(pk=hopeless.pk).error_code == "worker_lost"
    assert Job.objects.get(pk=orphan.pk).error_code == "no_worker_for_queue"


def test_a_webhook_to_a_private_address_is_refused_at_submission_and_at_delivery(tenant, settings) -> None:  # noqa: ANN001
    from aigc_saas.errors import InvalidInput
    from aigc_saas.webhooks import services as webhooks

    settings.AIGC_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(InvalidInput) as refused:
        services.submit_job(tenant, "transformers-text", {"prompt": "x"}, webhook_url="http://127.0.0.1:9/hook")
    assert "`webhook_url`" in refused.value.message

    settings.AIGC_WEBHOOK_ALLOW_PRIVATE = True
    job = services.submit_job(tenant, "transformers-text", {"prompt": "x"}, webhook_url="http://127.0.0.1:9/hook")
    settings.AIGC_WEBHOOK_ALLOW_PRIVATE = False
    assert webhooks.deliver_now(str(job.pk)) is None  # not sent, and no retry loop against a private host


def test_nul_characters_are_refused_in_params_and_replaced_in_model_output(job, tenant) -> None:  # noqa: ANN001
    from aigc_saas.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        services.submit_job(tenant, "transformers-text", {"prompt": "a\x00b"})
    assert refused.value.fields[0]["field"] == "params.prompt"

    claimed = services.claim_job(job.pk, "w")
    output = GenerationResult(text="noise\x00from a model", data={"odd": "a\ud9deb"}, metadata={"k": "v\x00"})
    services.finish_job(claimed, output)
    job.refresh_from_db()
    assert job.state == "succeeded"
    assert job.result["text"] == "noise\ufffdfrom a model" and job.result["metadata"] == {"k": "v\ufffd"}
    assert job.result["data"] == {"odd": "a\ufffdb"}  # an unpaired surrogate: jsonb would refuse it


def test_a_text_job_no_live_engine_could_ever_hold_is_refused_at_submission(tenant, tiny_models) -> None:  # noqa: ANN001
    from aigc_saas.errors import InvalidInput
    from aigc_saas.jobs.models import WorkerStatus
    from aigc_saas.plugins.services import effective_config, enabled_plugin

    record, info = enabled_plugin("transformers-text")
    model_id = effective_config(record, info.cls).model_id
    engine = {"generator": "transformers-text", "model_id": model_id, "kv_budget_tokens": 300}
    WorkerStatus.objects.create(name="small", queues=["cpu"], engines=[engine])

    services.submit_job(tenant, "transformers-text", {"prompt": "fits", "max_new_tokens": 200})
    with pytest.raises(InvalidInput) as refused:
        services.submit_job(tenant, "transformers-text", {"prompt": "x" * 1600, "max_new_tokens": 250})
    assert refused.value.code == "context_exceeds_kv_budget"
    assert "`params.max_new_tokens`" in refused.value.message


def test_a_claim_takes_a_lapsed_job_by_its_age_among_queued_ones(tenant) -> None:  # noqa: ANN001
    older, newer = (services.submit_job(tenant, "transformers-text", {"prompt": p}) for p in ("old", "new"))
    services.claim_job(older.pk, "dead-worker")
    Job.objects.filter(pk=older.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    live = Job.objects.create(tenant=tenant, generator="transformers-text", model_id="m", queue=older.queue)
    services.claim_job(live.pk, "busy-worker")  # running under a live lease: never a candidate
    taken = services.claim_batch(older.queue, "w2", limit=3)
    assert [j.pk for j in taken] == [older.pk, newer.pk]
    assert [j.attempts for j in taken] == [2, 1] and {j.worker for j in taken} == {"w2"}


def test_a_claim_prices_steps_at_each_generators_measured_decode_step() -> None:
    engines = [
        {"generator": "text", "steps_total": 12, "step_seconds_total": 0.5, "prefill_steps_total": 2},
        {"generator": "text", "steps_total": 0, "step_seconds_total": 0.0},  # loaded, never stepped
        {"generator": "image", "steps_total": 4, "step_seconds_total": 8.0},  # a pass engine: a pass a step
    ]
    engines[0]["prefill_step_seconds_total"] = 0.3
    assert runtime.step_seconds(engines) == pytest.approx({"text": 0.02, "image": 2.0})

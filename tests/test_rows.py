"""aigc_saas.rows reads the same rows the ORM does, converted the same way (SQLite here, PostgreSQL in CI's second run)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from aigc_saas import rows
from aigc_saas.accounts.models import ApiKey, Tenant
from aigc_saas.jobs import services
from aigc_saas.jobs.models import Artifact, Job, WorkerStatus

pytestmark = pytest.mark.django_db


def fields_of(instance) -> dict:  # noqa: ANN001
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def test_one_gives_the_instance_the_orm_gives(tenant) -> None:  # noqa: ANN001
    job = services.submit_job(tenant, "transformers-text", {"prompt": "héllo", "max_new_tokens": 5})
    Job.objects.filter(pk=job.pk).update(
        result={"text": "ünïcode", "metadata": {"n": [1, 2.5, None]}}, progress=0.5, started_at=timezone.now()
    )
    by_orm = Job.objects.get(pk=job.pk)
    by_rows = rows.one(Job, id=job.pk, tenant_id=tenant.pk)
    assert fields_of(by_rows) == fields_of(by_orm)
    assert by_rows._state.adding is False and by_rows._state.db == by_orm._state.db
    assert by_rows.started_at.tzinfo is not None and by_rows.result["metadata"]["n"] == [1, 2.5, None]
    assert fields_of(rows.one(Tenant, pk=tenant.pk)) == fields_of(Tenant.objects.get(pk=tenant.pk))


def test_one_can_leave_fields_unread_as_the_orms_defer_does(tenant) -> None:  # noqa: ANN001
    """A deferred field is not read with the row; reading it later gets the stored value, as `defer()` would."""
    job = services.submit_job(tenant, "transformers-text", {"prompt": "deferred", "max_new_tokens": 5})
    Job.objects.filter(pk=job.pk).update(result={"text": "later"})
    lean = rows.one(Job, defer=("result", "params"), id=job.pk)
    assert lean.get_deferred_fields() == {"result", "params"}
    assert lean.state == "queued" and lean.tenant_id == tenant.pk
    assert lean.result == {"text": "later"} and lean.params["prompt"] == "deferred"  # read on first access
    assert lean.get_deferred_fields() == set()


def test_one_is_none_when_nothing_matches_and_refresh_raises_for_a_gone_row(tenant) -> None:  # noqa: ANN001
    job = services.submit_job(tenant, "transformers-text", {"prompt": "x"})
    assert rows.one(Job, id=job.pk, tenant_id=Tenant.objects.create(name="B", slug="b").pk) is None
    assert rows.one(ApiKey, prefix="nothere") is None
    stale = Job.objects.get(pk=job.pk)
    Job.objects.filter(pk=job.pk).update(state="cancelled")
    rows.refresh(stale)
    assert stale.state == "cancelled"
    Job.objects.filter(pk=job.pk).delete()
    with pytest.raises(Job.DoesNotExist):
        rows.refresh(stale)


def test_all_orders_and_values_filter_by_gte(tenant) -> None:  # noqa: ANN001
    job = services.submit_job(tenant, "transformers-text", {"prompt": "x"})
    for index in (2, 0, 1):
        Artifact.objects.create(
            job=job, index=index, file=f"a/{index}.png", filename=f"{index}.png", content_type="image/png", size=index
        )
    listed = rows.all(Artifact, order_by=["index"], job_id=job.pk)
    assert [a.index for a in listed] == [0, 1, 2]
    assert [fields_of(a) for a in listed] == [fields_of(a) for a in Artifact.objects.filter(job=job).order_by("index")]
    assert [a.index for a in rows.all(Artifact, order_by=["-index"], job_id=job.pk)] == [2, 1, 0]

    now = timezone.now()
    WorkerStatus.objects.create(name="old", queues=["cpu"], engines=[])
    WorkerStatus.objects.create(name="new", queues=["gpu", "cpu"], engines=[{"generator": "g"}])
    WorkerStatus.objects.filter(name="old").update(updated_at=now - timedelta(hours=1))
    assert rows.values(WorkerStatus, ["queues", "engines"], updated_at__gte=now - timedelta(minutes=1)) == [
        (["gpu", "cpu"], [{"generator": "g"}])
    ]
    with pytest.raises(ValueError, match="unsupported condition"):
        rows.values(WorkerStatus, ["queues"], updated_at__lte=now)


def test_update_writes_what_the_orm_reads_back_and_only_where_the_conditions_hold(tenant) -> None:  # noqa: ANN001
    job = services.submit_job(tenant, "transformers-text", {"prompt": "x"})
    when = timezone.now()
    assert rows.update(Job, {"state": "succeeded", "result": {"text": "é"}}, pk=job.pk, attempts=job.attempts + 1) == 0
    assert Job.objects.get(pk=job.pk).state == "queued"  # a stale attempt writes nothing
    changed = rows.update(
        Job,
        {"state": "succeeded", "result": {"text": "é", "n": [1]}, "finished_at": when, "lease_expires_at": None},
        pk=job.pk,
        state="queued",
    )
    assert changed == 1
    stored = Job.objects.get(pk=job.pk)
    assert (stored.state, stored.result, stored.finished_at, stored.lease_expires_at) == (
        "succeeded",
        {"text": "é", "n": [1]},
        when,
        None,
    )


def test_insert_stores_what_create_stores_and_sends_the_save_signals(tenant) -> None:  # noqa: ANN001
    from django.db.models.signals import post_save

    seen = []

    def receiver(sender, instance, created, **kwargs) -> None:  # noqa: ANN001
        seen.append((instance.pk, created, instance._state.adding))

    post_save.connect(receiver, sender=Job)
    try:
        values = {"tenant": tenant, "generator": "g", "plugin_version": "1", "model_id": "m", "params": {"a": [1]}}
        made = Job(**values)
        rows.insert(made)
        by_orm = Job.objects.create(**values)
    finally:
        post_save.disconnect(receiver, sender=Job)
    stored = fields_of(Job.objects.get(pk=made.pk))
    assert stored == fields_of(made)  # auto_now_add filled on the instance as save() does
    expected = fields_of(Job.objects.get(pk=by_orm.pk))
    for name in ("id", "created_at", "updated_at"):
        stored.pop(name), expected.pop(name)
    assert stored == expected
    assert seen == [(made.pk, True, False), (by_orm.pk, True, False)]
    with pytest.raises(ValueError, match="primary key"):
        rows.insert(Tenant(id=None, name="x", slug="x"))


def test_in_conditions_take_any_number_of_values(tenant) -> None:  # noqa: ANN001
    jobs = [services.submit_job(tenant, "transformers-text", {"prompt": f"p{i}"}) for i in range(3)]
    Job.objects.filter(pk=jobs[1].pk).update(cancel_requested=True)
    ids = [j.pk for j in jobs]
    assert rows.values(Job, ["id"], id__in=ids, cancel_requested=True) == [(jobs[1].pk,)]
    assert sorted(pk for (pk,) in rows.values(Job, ["id"], id__in=ids[:2])) == sorted(ids[:2])
    assert rows.values(Job, ["id"], id__in=[]) == []
    assert rows.update(Job, {"progress": 0.5}, id__in=ids[1:]) == 2
    assert sorted(Job.objects.filter(progress=0.5).values_list("pk", flat=True)) == sorted(ids[1:])


def test_a_placement_is_written_only_for_the_attempt_that_claimed(tenant) -> None:  # noqa: ANN001
    first, second = (services.submit_job(tenant, "transformers-text", {"prompt": p}) for p in ("a", "b"))
    claimed = [services.claim_job(first.pk, "w"), services.claim_job(second.pk, "w")]
    stale = Job.objects.get(pk=second.pk)
    stale.attempts -= 1  # an older attempt of the second job
    services.record_placement([(claimed[0], "cpu", "9.9"), (stale, "cuda:0", "9.9")])
    assert Job.objects.values_list("device", "plugin_version").get(pk=first.pk) == ("cpu", "9.9")
    assert Job.objects.get(pk=second.pk).device != "cuda:0"

"""The scheduler admits waiting jobs round-robin across tenants while the KV budget and the row cap allow."""

from __future__ import annotations

from types import SimpleNamespace

from generators.engine.scheduler import Scheduler
from generators.engine.sequence import Sequence


def seq(tenant: str, cost: int = 10, name: str = "") -> Sequence:
    return Sequence(id=name or tenant, params=SimpleNamespace(), tenant=tenant, cost=cost)


def test_one_tenants_backlog_does_not_starve_another_tenant() -> None:
    scheduler = Scheduler(budget_tokens=1000, max_rows=3)
    backlog = [seq("a", name=f"a{i}") for i in range(50)]
    for s in backlog:
        scheduler.add(s)
    late = seq("b", name="b0")
    scheduler.add(late)
    joined = scheduler.plan().joining
    assert [s.id for s in joined] == ["a0", "b0", "a1"]


def test_admission_stops_at_the_kv_budget_and_resumes_when_a_job_leaves() -> None:
    scheduler = Scheduler(budget_tokens=25, max_rows=10)
    first, second, third = seq("a", 10, "1"), seq("a", 10, "2"), seq("a", 10, "3")
    for s in (first, second, third):
        scheduler.add(s)
    assert scheduler.plan().joining == [first, second]
    assert scheduler.plan().joining == []
    scheduler.finish(first)
    plan = scheduler.plan()
    assert plan.leaving == [first] and plan.joining == [third]


def test_a_job_larger_than_the_whole_budget_can_never_fit() -> None:
    scheduler = Scheduler(budget_tokens=25, max_rows=10)
    assert not scheduler.fits_ever(seq("a", 26))
    assert scheduler.fits_ever(seq("a", 25))


def test_cancelled_waiting_jobs_are_dropped_without_running() -> None:
    scheduler = Scheduler(budget_tokens=100, max_rows=1)
    keep, drop = seq("a", name="keep"), seq("b", name="drop")
    scheduler.add(keep)
    scheduler.add(drop)
    drop.cancel()
    assert scheduler.drop_waiting(lambda s: not s.cancelled) == [drop]
    assert scheduler.plan().joining == [keep]

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


def timed(tenant: str, name: str, steps: int, at: float) -> Sequence:
    return Sequence(id=name, params=SimpleNamespace(), tenant=tenant, cost=10, steps=steps, submitted_at=at)


def test_jobs_that_wait_together_join_longest_first_once_the_step_is_measured() -> None:
    measured = [0.0]
    scheduler = Scheduler(budget_tokens=1000, max_rows=1, step_seconds=lambda: measured[0])
    jobs = [timed("a", "short", 16, 100.0), timed("a", "long", 256, 100.01), timed("a", "mid", 64, 100.02)]
    for s in jobs:
        scheduler.add(s)
    assert scheduler.plan().joining == [jobs[0]]  # no step measured yet: oldest first
    measured[0] = 0.005
    scheduler.finish(jobs[0])
    assert scheduler.plan().joining == [jobs[1]]  # the most work first: the batch ends together
    scheduler.finish(jobs[1])
    assert scheduler.plan().joining == [jobs[2]]


def test_a_short_job_is_passed_over_only_by_work_longer_than_its_wait() -> None:
    scheduler = Scheduler(budget_tokens=1000, max_rows=1, step_seconds=lambda: 0.01)
    short = timed("a", "short", 16, 100.0)
    long = timed("a", "long", 216, 102.5)  # 2 s more work, submitted 2.5 s later
    scheduler.add(short)
    scheduler.add(long)
    assert scheduler.plan().joining == [short]


def test_tenants_take_turns_before_the_work_each_job_has() -> None:
    scheduler = Scheduler(budget_tokens=1000, max_rows=2, step_seconds=lambda: 0.01)
    a_long, a_longer = timed("a", "a-long", 200, 100.0), timed("a", "a-longer", 250, 100.0)
    b_short = timed("b", "b-short", 16, 100.0)
    for s in (a_long, a_longer, b_short):
        scheduler.add(s)
    assert scheduler.plan().joining == [a_longer, b_short]

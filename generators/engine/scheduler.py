"""The scheduler decides, before each step, which waiting jobs join the running batch and which leave it.

Admission is bounded by a KV-cache budget (token slots, from the hardware module) and a row cap, and is fair
across tenants: waiting jobs are taken round-robin, one tenant at a time, so one tenant's backlog cannot starve
another's job. Within a tenant's turn the job with the least laxity goes first: a job counts as submitted
`steps x the engine's step` earlier than it was (`laxity`), so jobs that wait together go longest first and a
full batch stays full until its end instead of finishing on a few long rows. Finished, cancelled and expired jobs
leave at the next step boundary.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from generators.engine.sequence import Sequence

# footprint(rows) -> KV token slots the batch may need at most if exactly these rows run together.
Footprint = Callable[[Seq[Sequence]], int]


def laxity(submitted_at: float, steps: int, step_seconds: float) -> float:
    """When a job must start to end no later than a job of no work submitted with it (least laxity first):
    jobs submitted together go longest first; a short one waits at most the longer one's run time more than it
    would oldest-first. With no measured step (0), oldest first. The worker's claim orders its queue the same way
    (aigc_saas.jobs.ordering)."""
    return submitted_at - steps * step_seconds


@dataclass
class Plan:
    """One step: who joins (prefill), who leaves (released before the step)."""

    joining: list[Sequence] = field(default_factory=list)
    leaving: list[Sequence] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        *,
        budget_tokens: int,
        max_rows: int,
        footprint: Footprint | None = None,
        step_seconds: Callable[[], float] | None = None,
    ) -> None:
        if budget_tokens <= 0 or max_rows <= 0:
            raise ValueError(f"`budget_tokens` and `max_rows` must be positive, got {budget_tokens}, {max_rows}")
        self.budget_tokens = budget_tokens
        self.max_rows = max_rows
        self.footprint: Footprint = footprint or (lambda rows: sum(r.cost for r in rows))
        self.step_seconds: Callable[[], float] = step_seconds or (lambda: 0.0)  # the engine's measured step
        self.waiting: OrderedDict[str, deque[Sequence]] = OrderedDict()  # tenant -> its queue, in turn order
        self.running: list[Sequence] = []
        self._leaving: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.setdefault(seq.tenant, deque()).append(seq)

    def fits_ever(self, seq: Sequence) -> bool:
        """Could this job run at all, alone on an empty engine?"""
        return self.footprint([seq]) <= self.budget_tokens

    def finish(self, seq: Sequence) -> None:
        """A running job is done: it leaves at the next step."""
        if seq in self.running:
            self.running.remove(seq)
            self._leaving.append(seq)

    def drop_waiting(self, keep: Callable[[Sequence], bool]) -> list[Sequence]:
        """Remove waiting jobs that must not run (cancelled, expired) and return them."""
        dropped = []
        for tenant in list(self.waiting):
            queue = self.waiting[tenant]
            for seq in [s for s in queue if not keep(s)]:
                queue.remove(seq)
                dropped.append(seq)
            if not queue:
                del self.waiting[tenant]
        return dropped

    def plan(self) -> Plan:
        """Who leaves and who joins now: round-robin over tenants while the budget and the row cap allow."""
        plan = Plan(leaving=self._leaving)
        self._leaving = []
        rows = list(self.running)
        blocked: set[str] = set()
        step = self.step_seconds() if self.waiting_count > 1 else 0.0  # one job waiting: nothing to order
        while len(rows) < self.max_rows and self.waiting:
            candidates = [t for t in self.waiting if t not in blocked]
            if not candidates:
                break
            tenant = candidates[0]
            queue = self.waiting[tenant]
            seq = min(queue, key=lambda s: laxity(s.submitted_at, s.steps, step)) if step else queue[0]
            if self.footprint([*rows, seq]) > self.budget_tokens:
                blocked.add(tenant)  # its most urgent job goes first once room frees up
                continue
            queue.remove(seq)
            # The tenant moves to the back of the turn order, so the next admission is another tenant's.
            del self.waiting[tenant]
            if queue:
                self.waiting[tenant] = queue
            rows.append(seq)
            plan.joining.append(seq)
        self.running.extend(plan.joining)
        return plan

    def next_waiting(self) -> Sequence | None:
        """The next tenant's oldest waiting job, taken out of the queue (for engines that run whole passes)."""
        if not self.waiting:
            return None
        tenant, queue = next(iter(self.waiting.items()))
        seq = queue.popleft()
        del self.waiting[tenant]
        if queue:
            self.waiting[tenant] = queue
        return seq

    @property
    def waiting_count(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting and not self._leaving

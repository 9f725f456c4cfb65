"""The order a worker claims queued jobs in (`services.claim_batch` reads the candidates and claims the pick).

Tenants take turns first: the tenant with the fewest running jobs, counting those already picked. Then the job a
doorbell names, then least laxity, the engine scheduler's own order (`generators.engine.scheduler.laxity`): a
job counts as submitted `steps x the generator's measured step` earlier than it was. Equal work: oldest first.
"""

from __future__ import annotations

from typing import Any

from generators.engine.scheduler import laxity


def fair_pick(
    candidates: list[tuple], running: dict[Any, int], preferred: Any, limit: int, step_seconds: dict[str, float]
) -> list[tuple]:
    """Up to `limit` of `candidates` (pk, tenant_id, state, attempts, created_at, generator, steps), oldest first,
    in claim order; `running`: each tenant's running jobs; `step_seconds`: each generator's measured step."""
    order = {c[0]: i for i, c in enumerate(candidates)}
    urgency = {c[0]: laxity(c[4].timestamp(), c[6], step_seconds.get(c[5], 0.0)) for c in candidates}
    counts = dict(running)
    left, picked = list(candidates), []
    while left and len(picked) < limit:
        best = min(left, key=lambda c: (counts.get(c[1], 0), str(c[0]) != str(preferred), urgency[c[0]], order[c[0]]))
        picked.append(best)
        left.remove(best)
        counts[best[1]] = counts.get(best[1], 0) + 1
    return picked

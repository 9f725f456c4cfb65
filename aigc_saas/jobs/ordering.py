"""The order a worker claims queued jobs in (`services.claim_batch` reads the candidates and claims the pick).

Tenants take turns first: the tenant with the fewest running jobs, counting those already picked. Then the job a
doorbell names, then least laxity, the engine scheduler's own order (`generators.engine.scheduler.laxity`): a
job counts as submitted `steps x the generator's measured step` earlier than it was. Equal work: oldest first.

A pick takes only jobs the claiming worker can start: with `room` (how many more jobs each engine, a generator's
loaded model, has free rows for), a job whose engine has no room left is passed over, whatever its turn, and waits
in the database's queue, where a worker with room can take it, instead of in this worker's engine. A claim reads
the oldest candidates only; where they hold all an engine has room for (`covered`), it reads again past that
engine's jobs, so one model's backlog does not hide another's (head-of-line blocking).
"""

from __future__ import annotations

from typing import Any

from generators.engine.scheduler import laxity


def fair_pick(
    candidates: list[tuple],
    running: dict[Any, int],
    preferred: Any,
    limit: int,
    step_seconds: dict[str, float],
    room: dict[tuple[str, str], int] | None = None,
    default_room: int = 1,
) -> list[tuple]:
    """Up to `limit` of `candidates` (pk, tenant_id, state, attempts, created_at, generator, steps, model_id),
    oldest first, in claim order; `running`: each tenant's running jobs; `step_seconds`: each generator's measured
    step. `room`: at most this many jobs of each (generator, model) engine (one not listed: `default_room`); None:
    only `limit` counts."""
    order = {c[0]: i for i, c in enumerate(candidates)}
    urgency = {c[0]: laxity(c[4].timestamp(), c[6], step_seconds.get(c[5], 0.0)) for c in candidates}
    counts = dict(running)
    left = list(candidates) if room is None else [c for c in candidates if room.get(engine(c), default_room) > 0]
    picked: list[tuple] = []
    taken: dict[tuple[str, str], int] = {}  # picks of each engine
    while left and len(picked) < limit:
        best = min(left, key=lambda c: (counts.get(c[1], 0), str(c[0]) != str(preferred), urgency[c[0]], order[c[0]]))
        picked.append(best)
        left.remove(best)
        counts[best[1]] = counts.get(best[1], 0) + 1
        key = engine(best)
        taken[key] = taken.get(key, 0) + 1
        if room is not None and taken[key] >= room.get(key, default_room):
            left = [c for c in left if engine(c) != key]  # its engine is full now: the rest of it waits
    return picked


def engine(candidate: tuple) -> tuple[str, str]:
    """The engine a candidate job runs on: its (generator, model), the key of a claim's `room`."""
    return candidate[5], candidate[7]


def covered(
    candidates: list[tuple], room: dict[tuple[str, str], int] | None, default_room: int
) -> list[tuple[str, str]]:
    """The engines `candidates` hold at least as many jobs of as their `room` (one not listed: `default_room`): a
    pick can take no more of them, whatever else the queue holds. Empty without `room`."""
    if room is None:
        return []
    counts: dict[tuple[str, str], int] = {}
    for c in candidates:
        counts[engine(c)] = counts.get(engine(c), 0) + 1
    return sorted(key for key, n in counts.items() if n >= room.get(key, default_room))


def left_over(
    candidates: list[tuple],
    chosen: list[tuple],
    limit: int,
    room: dict[tuple[str, str], int] | None,
    default_room: int,
    read_at_most: int,
) -> tuple[bool, bool]:
    """(held, more) of a pick: whether a candidate it left has no room (its engine is full), and whether it
    stopped at `limit` with a candidate left that fits, or more candidates than were read (`read_at_most`: how many
    the claim reads)."""
    unread = len(chosen) >= limit and len(candidates) >= read_at_most  # jobs it never read may fit
    if room is None:
        return False, len(chosen) >= limit and (len(candidates) > len(chosen) or unread)
    taken: dict[tuple[str, str], int] = {}
    for c in chosen:
        taken[engine(c)] = taken.get(engine(c), 0) + 1
    ids = {c[0] for c in chosen}
    fits = [taken.get(engine(c), 0) < room.get(engine(c), default_room) for c in candidates if c[0] not in ids]
    return not all(fits), len(chosen) >= limit and (any(fits) or unread)

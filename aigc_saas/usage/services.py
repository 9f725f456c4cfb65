"""Daily usage totals per generator (and per tenant, for operators), summed from terminal jobs' `usage`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from aigc_saas.errors import InvalidInput
from aigc_saas.jobs.models import TERMINAL_STATES, Job
from aigc_saas.usage.metering import USAGE_FIELDS

MAX_DAYS = 366
DEFAULT_DAYS = 30
COUNT_FIELDS = ("jobs", "succeeded", "failed", "cancelled")


def parse_range(since: str | None, until: str | None, today: date | None = None) -> tuple[date, date]:
    """An inclusive UTC date range from `YYYY-MM-DD` strings: default the last 30 days, at most 366."""
    today = today or datetime.now(UTC).date()
    end = _parse_date("until", until) if until else today
    start = _parse_date("since", since) if since else end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidInput(f"`since`: {start.isoformat()} is after `until` {end.isoformat()}", code="invalid_filter")
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidInput(
            f"`since`: the range {start.isoformat()}..{end.isoformat()} is over {MAX_DAYS} days; ask in pieces",
            code="invalid_filter",
        )
    return start, end


def _parse_date(name: str, raw: str) -> date:
    try:
        return date.fromisoformat(raw) if len(raw) == 10 else _bad(name, raw)
    except ValueError:
        return _bad(name, raw)


def _bad(name: str, raw: str) -> date:
    shown = raw[:40] + ("…" if len(raw) > 40 else "")
    raise InvalidInput(f"`{name}`: {shown!r} is not a date as YYYY-MM-DD", code="invalid_filter")


def _empty() -> dict[str, Any]:
    return dict.fromkeys(COUNT_FIELDS, 0) | dict.fromkeys(USAGE_FIELDS, 0)


def _add(total: dict[str, Any], state: str, usage: dict[str, Any] | None) -> None:
    total["jobs"] += 1
    total[state] += 1
    for name in USAGE_FIELDS:
        value = (usage or {}).get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            total[name] += value


def _rounded(total: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in total.items()}


def terminal_jobs(start: date, end: date, tenant_id: Any = None) -> Iterable[tuple[Any, str, str, datetime, Any]]:
    jobs = Job.objects.filter(
        state__in=TERMINAL_STATES,
        finished_at__gte=datetime.combine(start, time.min, tzinfo=UTC),
        finished_at__lt=datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
    )
    if tenant_id is not None:
        jobs = jobs.filter(tenant_id=tenant_id)
    fields = ("tenant__slug", "generator", "state", "finished_at", "usage")
    return jobs.order_by().values_list(*fields).iterator(chunk_size=2000)


def daily_totals(start: date, end: date, tenant_id: Any = None, *, per_tenant: bool = False) -> list[dict[str, Any]]:
    """One row per (day, [tenant,] generator) with jobs by end state and the summed usage, oldest first."""
    totals: dict[tuple[str, ...], dict[str, Any]] = defaultdict(_empty)
    for slug, generator, state, finished_at, usage in terminal_jobs(start, end, tenant_id):
        day = finished_at.astimezone(UTC).date().isoformat()
        key = (day, slug, generator) if per_tenant else (day, generator)
        _add(totals[key], state, usage)
    rows = []
    for key in sorted(totals):
        head = (
            {"date": key[0], "tenant": key[1], "generator": key[2]}
            if per_tenant
            else dict(zip(("date", "generator"), key, strict=True))
        )
        rows.append(head | _rounded(totals[key]))
    return rows


def generator_totals(days: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The daily rows summed per generator over the whole range."""
    totals: dict[str, dict[str, Any]] = defaultdict(_empty)
    for row in days:
        for name in (*COUNT_FIELDS, *USAGE_FIELDS):
            totals[row["generator"]][name] += row[name]
    return [{"generator": g} | _rounded(t) for g, t in sorted(totals.items())]

"""Rows by simple conditions on their columns, without the ORM's query compiler: the reads every API request makes.

Django compiles a queryset's SQL anew on each evaluation. For the lookups each request repeats (the API key, the
tenant, the job, the plugin record, the live workers, a job's artifacts) that compilation was most of the cost: on
the 2-core machine `Job.objects.filter(tenant=…, pk=…).first()` took 0.8–1.0 ms of CPU for a query SQLite answered
in 0.04 ms. Here the SQL of each lookup shape is written once, run on a plain cursor, and every value goes through
the converters the ORM would apply (UUIDs, JSON, aware datetimes; `compiler.get_converters` builds the same list),
so `one` and `all` give the instance `Model.from_db` gives the ORM. A read costs 0.1–0.2 ms.

`update` writes plain values by the same conditions, and `insert` a new row. Conditions are keyword arguments:
`name=value` (equality; a field name, an attname such as `tenant_id`, or `pk`), `name__gte=value`,
`name__lt=value` and `name__in=[values]`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import connections, models, router, transaction
from django.db.models import signals

M = TypeVar("M", bound=models.Model)

OPERATORS = {"": "=", "gte": ">=", "lt": "<", "in": "IN"}

# Per (model, vendor, shape): the SQL text and what each condition needs. Threads may build one twice: same value.
_plans: dict[tuple[Any, ...], tuple[str, list[models.Field]]] = {}
_converters: dict[tuple[Any, ...], list[tuple[int, list[Callable], Any]]] = {}


def one(model: type[M], *, defer: Sequence[str] = (), **conditions: Any) -> M | None:
    """The row of `model` that meets `conditions` (a unique lookup: at most one row comes back), or None. A value
    the field cannot take raises as the ORM would. `defer`: fields not read now (as the ORM's `defer`: the first
    access reads one from the database)."""
    found = _instances(model, conditions, limit=1, defer=tuple(defer))
    return found[0] if found else None


def all(model: type[M], order_by: Sequence[str] = (), **conditions: Any) -> list[M]:  # noqa: A001 - rows.all
    """Every row of `model` that meets `conditions`, ordered by `order_by` (field names, `-` for descending)."""
    return _instances(model, conditions, order_by=tuple(order_by))


def values(
    model: type[models.Model],
    names: Sequence[str],
    order_by: Sequence[str] = (),
    limit: int | None = None,
    **conditions: Any,
) -> list[tuple[Any, ...]]:
    """The `names` columns (converted as the ORM would) of every row that meets `conditions`, ordered by
    `order_by`, at most `limit`."""
    using = router.db_for_read(model)
    connection = connections[using]
    fields = [_field(model, name) for name in names]
    return [
        tuple(_convert(connection, model, fields, row))
        for row in _run(connection, model, [f.column for f in fields], conditions, tuple(order_by), limit)
    ]


def update(model: type[models.Model], changes: dict[str, Any], **conditions: Any) -> int:
    """`UPDATE … SET changes WHERE conditions` (plain values, no expressions): how many rows changed. The worker's
    fenced writes (a job's end, where claimed jobs run): the ORM's compiler cost more than the statement."""
    using = router.db_for_write(model)
    connection = connections[using]
    shape = _shape(conditions)
    key = ("update", model, connection.vendor, tuple(changes), shape)
    plan = _plans.get(key)
    if plan is None:
        quote = connection.ops.quote_name
        where, condition_fields = _where(connection, model, shape)
        set_fields = [_field(model, name) for name in changes]
        assignments = ", ".join(f"{quote(f.column)} = %s" for f in set_fields)
        plan = _plans[key] = (
            f"UPDATE {quote(model._meta.db_table)} SET {assignments}{where}",  # noqa: S608
            [*set_fields, *condition_fields],
        )
    sql, fields = plan
    set_fields, condition_fields = fields[: len(changes)], fields[len(changes) :]
    params = [
        field.get_db_prep_save(value, connection) for field, value in zip(set_fields, changes.values(), strict=True)
    ]
    params += _params(connection, condition_fields, conditions)
    with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def insert(instance: models.Model) -> None:
    """`instance.save()` of a new row whose primary key is already set (a UUID default): the same pre_save
    values (`auto_now_add`), database values and signals, with the INSERT written once per model. Each
    submission makes one, and the ORM's insert compiler cost more than SQLite's write."""
    model = type(instance)
    if instance.pk is None:
        raise ValueError(f"rows.insert: {model.__name__} needs its primary key set before the insert")
    using = router.db_for_write(model)
    connection = connections[using]
    fields = [f for f in model._meta.concrete_fields if not f.generated]
    key = ("insert", model, connection.vendor)
    plan = _plans.get(key)
    if plan is None:
        quote = connection.ops.quote_name
        plan = _plans[key] = (
            f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
            f"VALUES ({', '.join(['%s'] * len(fields))})",
            fields,
        )
    signals.pre_save.send(sender=model, instance=instance, raw=False, using=using, update_fields=None)
    params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
        cursor.execute(plan[0], params)
    instance._state.adding = False
    instance._state.db = using
    signals.post_save.send(sender=model, instance=instance, created=True, update_fields=None, raw=False, using=using)


def refresh(instance: models.Model) -> None:
    """`instance.refresh_from_db()` by `one`: every concrete field read again (the row must still exist)."""
    fresh = one(type(instance), pk=instance.pk)
    if fresh is None:
        raise type(instance).DoesNotExist(f"{type(instance).__name__} {instance.pk} no longer exists")
    for field in instance._meta.concrete_fields:
        setattr(instance, field.attname, getattr(fresh, field.attname))


def _instances(
    model: type[M],
    conditions: dict[str, Any],
    *,
    order_by: tuple[str, ...] = (),
    limit: int | None = None,
    defer: tuple[str, ...] = (),
) -> list[M]:
    using = router.db_for_read(model)
    connection = connections[using]
    fields = model._meta.concrete_fields
    if defer:
        fields = [f for f in fields if f.name not in defer and f.attname not in defer]
    attnames = [f.attname for f in fields]
    return [
        model.from_db(using, attnames, _convert(connection, model, fields, row))
        for row in _run(connection, model, [f.column for f in fields], conditions, order_by, limit)
    ]


def _field(model: type[models.Model], name: str) -> models.Field:
    return model._meta.pk if name == "pk" else model._meta.get_field(name)


def _run(
    connection: Any,
    model: type[models.Model],
    columns: list[str],
    conditions: dict[str, Any],
    order_by: tuple[str, ...],
    limit: int | None,
) -> list[tuple[Any, ...]]:
    shape = _shape(conditions)
    key = (model, connection.vendor, tuple(columns), shape, order_by, limit)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _plan(connection, model, columns, shape, order_by, limit)
    sql, condition_fields = plan
    params = _params(connection, condition_fields, conditions)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _plan(
    connection: Any,
    model: type[models.Model],
    columns: list[str],
    shape: tuple[tuple[str, int], ...],
    order_by: tuple[str, ...],
    limit: int | None,
) -> tuple[str, list[models.Field]]:
    quote = connection.ops.quote_name
    where, fields = _where(connection, model, shape)
    sql = f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(model._meta.db_table)}{where}"  # noqa: S608
    if order_by:
        ordering = [
            f"{quote(_field(model, name.lstrip('-')).column)} {'DESC' if name.startswith('-') else 'ASC'}"
            for name in order_by
        ]
        sql += f" ORDER BY {', '.join(ordering)}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql, fields


def _shape(conditions: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """Each condition's name, and how many values an `__in` gives (its SQL has that many placeholders)."""
    return tuple((name, len(value) if name.endswith("__in") else 0) for name, value in conditions.items())


def _params(connection: Any, fields: list[models.Field], conditions: dict[str, Any]) -> list[Any]:
    params: list[Any] = []
    for field, (name, value) in zip(fields, conditions.items(), strict=True):
        if name.endswith("__in"):
            params.extend(field.get_db_prep_value(v, connection) for v in value)
        else:
            params.append(field.get_db_prep_value(value, connection))
    return params


def _where(
    connection: Any, model: type[models.Model], shape: tuple[tuple[str, int], ...]
) -> tuple[str, list[models.Field]]:
    quote = connection.ops.quote_name
    fields, where = [], []
    for name, count in shape:
        base, _, op = name.partition("__")
        if op not in OPERATORS:
            raise ValueError(f"rows: unsupported condition {name!r} (use name=, name__gte=, name__lt= or name__in=)")
        field = _field(model, base)
        fields.append(field)
        if op == "in":
            where.append(f"{quote(field.column)} IN ({', '.join(['%s'] * count)})" if count else "1 = 0")
        else:
            where.append(f"{quote(field.column)} {OPERATORS[op]} %s")
    return (f" WHERE {' AND '.join(where)}" if where else ""), fields


def _convert(connection: Any, model: type[models.Model], fields: Sequence[models.Field], row: Sequence[Any]) -> list:
    """The row's values as the ORM's compiler would hand them to `from_db` (its `apply_converters`)."""
    key = (model, connection.alias, tuple(f.attname for f in fields))
    plan = _converters.get(key)
    if plan is None:
        plan = []
        for index, field in enumerate(fields):
            column = field.get_col(model._meta.db_table)
            found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            if found:
                plan.append((index, found, column))
        _converters[key] = plan
    values = list(row)
    for index, converters, column in plan:
        value = values[index]
        for converter in converters:
            value = converter(value, column, connection)
        values[index] = value
    return values

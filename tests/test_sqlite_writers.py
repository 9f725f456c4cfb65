"""The embedded SQLite's writers queue on a lock file (aigc_saas/db/sqlite3): a writer that comes while another
holds the database waits for it there, and never reaches SQLite's busy handler, which sleeps up to 100 ms at a
time however soon the database is free. These databases run with SQLite's busy timeout at 0, so a writer that
reached SQLite while the database was locked would fail at once with "database is locked"."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import OperationalError, connections, transaction

ALIAS = "writers"


@pytest.fixture
def database(tmp_path: Path, django_db_blocker) -> Iterator[str]:  # noqa: ANN001
    connections.settings[ALIAS] = {
        **connections.settings["default"],
        "ENGINE": "aigc_saas.db.sqlite3",
        "NAME": str(tmp_path / "writers.sqlite3"),
        "OPTIONS": {"timeout": 0, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
        "TEST": {},
    }
    with django_db_blocker.unblock():
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT)")
        yield ALIAS
        connections[ALIAS].close()
    del connections[ALIAS]  # this thread's wrapper, with this test's settings
    del connections.settings[ALIAS]


def _in_thread(target, *args) -> tuple[threading.Thread, list[BaseException]]:  # noqa: ANN001
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections[ALIAS].close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def _hold(alias: str, holding: threading.Event, release: threading.Event, fail: bool = False) -> None:
    with transaction.atomic(using=alias):
        with connections[alias].cursor() as cursor:
            cursor.execute("INSERT INTO note (text) VALUES ('first')")
        holding.set()
        release.wait(10)
        if fail:
            raise RuntimeError("the transaction fails")


def _write_in_transaction(alias: str, text: str) -> None:
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        cursor.execute("INSERT INTO note (text) VALUES (%s)", [text])


def _write_alone(alias: str, text: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("INSERT INTO note (text) VALUES (%s)", [text])


def _texts(alias: str) -> list[str]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT text FROM note ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.parametrize("write", [_write_in_transaction, _write_alone], ids=["transaction", "single statement"])
def test_a_writer_waits_for_the_one_holding_the_database_instead_of_failing(database: str, write) -> None:  # noqa: ANN001
    holding, release = threading.Event(), threading.Event()
    holder, holder_errors = _in_thread(_hold, database, holding, release)
    assert holding.wait(10)
    writer, writer_errors = _in_thread(write, database, "second")
    writer.join(0.3)
    assert writer.is_alive()  # waiting for the lock, not failed on SQLite's
    release.set()
    holder.join(10)
    writer.join(10)
    assert holder_errors == [] and writer_errors == []
    assert _texts(database) == ["first", "second"]


def test_a_failed_transaction_lets_the_next_writer_in(database: str) -> None:
    holding, release, stay = threading.Event(), threading.Event(), threading.Event()

    def fail_then_stay() -> None:
        with pytest.raises(RuntimeError):
            _hold(database, holding, release, fail=True)
        stay.wait(10)  # its connection stays open: only the rollback can have let the lock go

    holder, holder_errors = _in_thread(fail_then_stay)
    assert holding.wait(10)
    writer, writer_errors = _in_thread(_write_alone, database, "after the failure")
    release.set()
    writer.join(10)
    assert not writer.is_alive() and writer_errors == []
    stay.set()
    holder.join(10)
    assert holder_errors == []
    assert _texts(database) == ["after the failure"]


def test_a_connection_closed_inside_its_transaction_lets_the_next_writer_in(database: str) -> None:
    with transaction.atomic(using=database):  # a transaction open when its connection goes
        _write_alone(database, "never committed")
        connections[database].close()
    writer, errors = _in_thread(_write_alone, database, "next")
    writer.join(10)
    assert errors == []
    assert _texts(database) == ["next"]


def test_without_the_lock_file_the_same_writer_fails_on_sqlite(database: str) -> None:
    """The control: SQLite's own backend on the same database, busy timeout 0, fails where the writer above waits."""
    connections.settings["plain"] = {**connections.settings[database], "ENGINE": "django.db.backends.sqlite3"}
    holding, release = threading.Event(), threading.Event()
    holder, _ = _in_thread(_hold, database, holding, release)
    try:
        assert holding.wait(10)
        with pytest.raises(OperationalError, match="locked"):
            _write_alone("plain", "second")
    finally:
        release.set()
        holder.join(10)
        connections["plain"].close()
        del connections["plain"]
        del connections.settings["plain"]

"""agentvine.postgresql: the health check polls the socket instead of sending
SELECT 1, and still tells a connection the server ended from a live one."""

import time

import psycopg
import pytest
from django.db import connection

from tests.conftest import _database_url

pytestmark = pytest.mark.django_db(transaction=True)


def _last_query(watcher, pid):
    return watcher.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]


@pytest.fixture
def watcher():
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        yield conn


def _backend_pid():
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid() /* health-check test */")
        return cursor.fetchone()[0]


def test_a_live_connection_is_usable_without_a_statement(watcher):
    assert connection.vendor == "postgresql"
    pid = _backend_pid()
    assert connection.is_usable()
    # The server saw nothing after the test's own statement.
    assert "health-check test" in _last_query(watcher, pid)


def test_a_connection_the_server_ended_is_not_usable_and_the_next_query_reconnects(watcher):
    pid = _backend_pid()
    assert watcher.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
    for _ in range(100):
        if not watcher.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            break
        time.sleep(0.02)
    assert not connection.is_usable()
    # What a slot does before each task: the dead connection is dropped...
    connection.health_check_done = False
    connection.close_if_health_check_failed()
    # ...and the task's first statement runs on a new one.
    assert _backend_pid() != pid


def test_a_notice_that_arrives_unasked_leaves_the_connection_usable(watcher):
    pid = _backend_pid()
    with connection.cursor() as cursor:
        cursor.execute("LISTEN agentvine_health_check_test")
    watcher.execute("NOTIFY agentvine_health_check_test")
    time.sleep(0.2)
    # Something is waiting on the socket: the check asks the server, which answers.
    assert connection.is_usable()
    assert _last_query(watcher, pid) == "SELECT 1"
    with connection.cursor() as cursor:
        cursor.execute("UNLISTEN *")


def _plans_of_a_lookup_run_20_times():
    """(custom, generic) plans PostgreSQL made for one prepared lookup run 20 times."""
    import uuid

    from tasks_app.models import Task

    for _ in range(20):
        list(Task.objects.filter(pk=uuid.uuid4()).values_list("title"))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT custom_plans, generic_plans FROM pg_prepared_statements WHERE statement LIKE %s",
            ['SELECT "tasks_app_task"."title"% FROM "tasks_app_task" WHERE "tasks_app_task"."id" = $1 %'],
        )
        return cursor.fetchone()


@pytest.fixture
def slot_settings():
    from django.db import connections

    options = connections.settings["default"]["OPTIONS"]
    saved = options["options"]
    connection.close()
    yield
    options["options"] = saved
    connection.close()


def test_pages_plan_every_run_of_a_prepared_statement_with_its_parameters():
    # Prepared (parsed once) but never run on a generic plan, which for a
    # range or a text search can be hundreds of times slower than a custom one.
    custom, generic = _plans_of_a_lookup_run_20_times()
    assert generic == 0
    assert custom >= 10


def test_agent_slots_keep_the_generic_plan_of_their_key_lookups(slot_settings):
    from workers_app.slots import use_generic_plans

    use_generic_plans()
    custom, generic = _plans_of_a_lookup_run_20_times()
    assert generic >= 5
    assert custom <= 5

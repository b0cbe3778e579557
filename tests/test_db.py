"""The hand-built statements of agentvine.db send what the ORM would: same
rows matched, same values stored, rows read back as the ORM reads them."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from psycopg import sql as psycopg_sql

from agentvine import db
from queue_app.models import WorkOrder, WorkOrderStatus
from tasks_app.models import Task, TaskStatus
from tests.factories import make_task
from workers_app.models import AgentSession, SessionStatus

pytestmark = pytest.mark.django_db


def _orders(count):
    tasks = [make_task() for _ in range(count)]
    return [WorkOrder.objects.get(task=task) for task in tasks]


def test_update_returning_changes_only_matching_rows_and_returns_them_as_stored():
    first, second, third = _orders(3)
    now = timezone.now()

    rows = db.update_returning(
        WorkOrder, {"pk__in": [first.pk, second.pk], "status": WorkOrderStatus.QUEUED}, last_error="x", updated_at=now
    )

    assert sorted(row.pk for row in rows) == sorted([first.pk, second.pk])
    assert all(row.last_error == "x" and row.updated_at == now for row in rows)
    assert all(isinstance(row, WorkOrder) and row.task_id for row in rows)
    assert [o.last_error for o in WorkOrder.objects.filter(pk__in=[first.pk, second.pk])] == ["x", "x"]
    assert WorkOrder.objects.get(pk=third.pk).last_error == ""


def test_a_lost_compare_and_set_returns_nothing_and_writes_nothing():
    (order,) = _orders(1)

    rows = db.update_returning(WorkOrder, {"pk": order.pk, "status": WorkOrderStatus.RUNNING}, last_error="x")

    assert rows == []
    assert WorkOrder.objects.get(pk=order.pk).last_error == ""


@pytest.mark.parametrize(
    ("not_before", "claimable"),
    [(None, True), (timedelta(seconds=-5), True), (timedelta(seconds=0), True), (timedelta(seconds=5), False)],
)
def test_isnull_or_lte_is_the_not_before_rule(not_before, claimable):
    (order,) = _orders(1)
    now = timezone.now()
    WorkOrder.objects.filter(pk=order.pk).update(not_before=None if not_before is None else now + not_before)

    rows = db.update_returning(WorkOrder, {"pk": order.pk, "not_before__isnull_or_lte": now}, last_error="claimed")

    assert bool(rows) is claimable


def test_none_and_isnull_conditions_and_an_empty_in_list():
    (order,) = _orders(1)

    assert db.update_returning(WorkOrder, {"pk": order.pk, "worker_id": None}, last_error="a")
    assert db.update_returning(WorkOrder, {"pk": order.pk, "worker_id__isnull": False}, last_error="b") == []
    assert db.update_returning(WorkOrder, {"pk__in": []}, last_error="c") == []
    assert WorkOrder.objects.get(pk=order.pk).last_error == "a"


def test_update_sql_is_sent_later_by_the_caller():
    task = make_task()
    sql, params = db.update_sql(Task, {"pk": task.pk}, status=TaskStatus.CANCELLED)

    assert Task.objects.get(pk=task.pk).status == TaskStatus.QUEUED
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    assert Task.objects.get(pk=task.pk).status == TaskStatus.CANCELLED


def test_insert_sql_fills_defaults_and_auto_timestamps_like_save():
    task = make_task()
    session = AgentSession(session_id="conversation-1", task=task)
    before = timezone.now()
    sql, params = db.insert_sql(session)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)

    stored = AgentSession.objects.get(pk=session.pk)
    assert stored.task_id == task.pk and stored.status == SessionStatus.ACTIVE
    assert stored.created_at == session.created_at and stored.created_at >= before
    assert not session._state.adding


def test_expressions_are_refused_rather_than_sent_as_text():
    from django.db.models import F

    (order,) = _orders(1)
    with pytest.raises(TypeError, match="retry_count"):
        db.update_sql(WorkOrder, {"pk": order.pk}, retry_count=F("retry_count") + 1)


def test_a_statement_sent_again_and_again_is_planned_once_per_connection():
    (order,) = _orders(1)
    for attempt in range(8):
        db.update_returning(WorkOrder, {"pk": order.pk, "status": WorkOrderStatus.QUEUED}, last_error=str(attempt))

    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any(statement.startswith('UPDATE "queue_app_workorder" SET "last_error"') for statement in prepared)


def test_a_guarded_publish_writes_nothing_when_its_guard_matches_no_row():
    from agentvine import events
    from agentvine.models import LiveEvent

    (order,) = _orders(1)
    task_change = db.update_sql(Task, {"pk": order.task_id}, status=TaskStatus.CANCELLED)
    before = LiveEvent.objects.count()
    missed = db.update_sql(WorkOrder, {"pk": order.pk, "status": WorkOrderStatus.RUNNING}, last_error="x")

    assert (
        events.publish_guarded([("test.event", {}, ["g"])], guard=(WorkOrder, *missed), changes=[task_change]) is None
    )
    assert LiveEvent.objects.count() == before
    assert Task.objects.get(pk=order.task_id).status == TaskStatus.QUEUED

    hit = db.update_sql(WorkOrder, {"pk": order.pk, "status": WorkOrderStatus.QUEUED}, last_error="x")
    rows = events.publish_guarded([("test.event", {"n": 1}, ["g"])], guard=(WorkOrder, *hit), changes=[task_change])
    assert [row.last_error for row in rows] == ["x"]
    assert LiveEvent.objects.filter(type="test.event").get().payload == {"n": 1}
    assert Task.objects.get(pk=order.task_id).status == TaskStatus.CANCELLED


def test_a_statement_pinned_to_one_row_reaches_it_by_its_key_in_any_plan(worker):
    # A worker that ran many work orders, in tables without statistics yet: a
    # generic plan (what a prepared statement gets after a few runs) must not
    # find the row through the worker's index, reading its whole history.
    orders = _orders(40)
    WorkOrder.objects.filter(pk__in=[o.pk for o in orders]).update(worker=worker, status=WorkOrderStatus.COMPLETED)
    WorkOrder.objects.filter(pk=orders[0].pk).update(status=WorkOrderStatus.RUNNING)
    where = {
        "pk": orders[0].pk,
        "status__in": [WorkOrderStatus.RUNNING, WorkOrderStatus.WAITING],
        "worker_id": worker.id,
        "retry_count": 0,
    }
    sql, params = db.update_sql(WorkOrder, where, last_error="done")
    numbered = sql
    for n in range(1, len(params) + 1):
        numbered = numbered.replace("%s", f"${n}", 1)
    raw = connection.connection
    arguments = ", ".join(psycopg_sql.Literal(param).as_string(raw) for param in params)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE pinned AS {numbered}")
        cursor.execute(f"EXPLAIN EXECUTE pinned({arguments})")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE pinned")
    assert "queue_app_workorder_pkey" in plan, plan
    assert "worker_id" not in plan.split("Filter")[0], plan
    # And the statement does what it says: only that row, only while it matches.
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.rowcount == 1
    assert list(WorkOrder.objects.filter(last_error="done").values_list("pk", flat=True)) == [orders[0].pk]

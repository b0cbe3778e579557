"""The guardians' decisions, against real PostgreSQL and Redis."""

import importlib
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from queue_app.lifecycle import work_order_claim, work_order_set_waiting, work_order_start
from queue_app.models import ExecutionStatus, WorkOrder, WorkOrderStatus
from tasks_app.models import Priority
from tasks_app.services import task_create
from workers_app import guardians
from workers_app.models import AgentSession, SessionStatus, Worker, WorkerStatus
from workers_app.services import worker_heartbeat, worker_register
from workers_app.workspaces import workspace_prepare

pytestmark = pytest.mark.django_db


def _running(worker, *, title="work", priority=Priority.NORMAL, max_retries=None):
    task = task_create(title=title, priority=priority, max_retries=max_retries)
    work_order = work_order_claim(worker=worker, work_order_id=task.work_orders.get().pk)
    work_order, execution = work_order_start(work_order=work_order, worker=worker)
    return work_order, execution


def _silence(worker, seconds):
    Worker.objects.filter(pk=worker.pk).update(last_heartbeat_at=timezone.now() - timedelta(seconds=seconds))


def test_stalled_worker_goes_offline_and_its_work_is_requeued_as_lost_without_a_retry_spent(
    worker, other_worker, settings
):
    settings.AGENTVINE_STALLED_WORKER_SECONDS = 5
    lost, lost_execution = _running(worker, title="lost")
    kept, _ = _running(other_worker, title="kept")
    _silence(worker, 6)

    offline, requeued = guardians.guard_stalled_workers()

    assert offline == [worker]
    assert Worker.objects.get(pk=worker.pk).status == WorkerStatus.OFFLINE
    assert [w.pk for w in requeued] == [lost.pk]
    lost.refresh_from_db()
    assert (lost.status, lost.retry_count, lost.lost_count, lost.worker_id) == (WorkOrderStatus.QUEUED, 0, 1, None)
    assert lost.last_error == f"worker {worker.name} stopped heartbeating while running this work order"
    lost_execution.refresh_from_db()
    assert lost_execution.status == ExecutionStatus.FAILED
    assert lost_execution.error == lost.last_error
    assert WorkOrder.objects.get(pk=kept.pk).status == WorkOrderStatus.RUNNING
    # Idempotent: a second run finds nothing left to do.
    assert guardians.guard_stalled_workers() == ([], [])


def test_stalled_work_lost_too_often_ends_dead_whatever_its_retries(worker, settings):
    settings.AGENTVINE_STALLED_WORKER_SECONDS = 5
    settings.AGENTVINE_MAX_LOST_ATTEMPTS = 1
    work_order, _ = _running(worker, max_retries=5)
    _silence(worker, 60)

    guardians.guard_stalled_workers()

    work_order.refresh_from_db()
    assert (work_order.status, work_order.retry_count) == (WorkOrderStatus.DEAD, 0)
    assert work_order.last_error.endswith("; gave up after 1 attempts lost with their workers")


def test_a_worker_that_comes_back_re_registers_idle(worker, settings):
    settings.AGENTVINE_STALLED_WORKER_SECONDS = 5
    _silence(worker, 60)
    guardians.guard_stalled_workers()

    assert worker_heartbeat(worker=worker) is True
    back = Worker.objects.get(pk=worker.pk)
    assert back.status == WorkerStatus.IDLE
    assert timezone.now() - back.last_heartbeat_at < timedelta(seconds=5)
    assert guardians.guard_stalled_workers() == ([], [])


def test_a_new_process_taking_over_a_slot_requeues_what_its_predecessor_ran(worker):
    work_order, _ = _running(worker)

    worker_register(name=worker.name, hostname="test", pid=4242, new_process=True)

    work_order.refresh_from_db()
    assert (work_order.status, work_order.retry_count, work_order.lost_count) == (WorkOrderStatus.QUEUED, 0, 1)
    assert work_order.last_error == f"worker process of slot {worker.name} died while running this work order"


def _session(task=None, *, idle_for=0, age=0):
    session = AgentSession.objects.create(session_id=uuid.uuid4().hex, task=task)
    now = timezone.now()
    AgentSession.objects.filter(pk=session.pk).update(
        last_activity_at=now - timedelta(seconds=idle_for), created_at=now - timedelta(seconds=max(age, idle_for))
    )
    session.refresh_from_db()
    return session


def test_idle_and_over_age_sessions_are_terminated_waiting_ones_are_not(worker, settings):
    settings.AGENTVINE_SESSION_IDLE_SECONDS = 60
    settings.AGENTVINE_SESSION_MAX_AGE_SECONDS = 600
    idle_task = task_create(title="idle")
    workspace = workspace_prepare(task=idle_task)
    (workspace / "notes.txt").write_text("scratch")
    idle = _session(idle_task, idle_for=120)
    old = _session(task_create(title="old"), age=700)
    fresh = _session(task_create(title="fresh"), idle_for=10)
    waiting_order, _ = _running(worker, title="asks a human")
    work_order_set_waiting(work_order=waiting_order, worker=worker, waiting=True)
    waiting = _session(waiting_order.task, idle_for=3000, age=3000)

    terminated = guardians.guard_idle_sessions()

    assert {s.pk for s in terminated} == {idle.pk, old.pk}
    idle.refresh_from_db()
    old.refresh_from_db()
    assert (idle.status, idle.termination_reason) == (SessionStatus.TERMINATED, "idle for more than 1 minutes")
    assert idle.terminated_at is not None
    assert (old.status, old.termination_reason) == (SessionStatus.TERMINATED, "older than 10 minutes")
    for session in (fresh, waiting):
        session.refresh_from_db()
        assert session.status == SessionStatus.ACTIVE
    assert guardians.guard_idle_sessions() == []


def test_terminating_a_session_removes_its_workspace(django_capture_on_commit_callbacks, settings):
    settings.AGENTVINE_SESSION_IDLE_SECONDS = 60
    task = task_create(title="done long ago")
    workspace = workspace_prepare(task=task)
    (workspace / "file.txt").write_text("x")
    _session(task, idle_for=120)

    with django_capture_on_commit_callbacks(execute=True):
        guardians.guard_idle_sessions()

    assert not workspace.exists()


def _queued(*, title="queued", dispatched_ago=60, priority=Priority.NORMAL):
    task = task_create(title=title, priority=priority)
    work_order = task.work_orders.get()
    WorkOrder.objects.filter(pk=work_order.pk).update(dispatched_at=timezone.now() - timedelta(seconds=dispatched_ago))
    return work_order


def test_lost_dispatches_ring_again_when_the_broker_lost_the_doorbells(
    clean_broker, django_capture_on_commit_callbacks, settings
):
    settings.AGENTVINE_LOST_DISPATCH_SECONDS = 30
    clean_broker.set(guardians.BROKER_SENTINEL_KEY, "up")  # the broker did not come back empty
    lost = _queued(title="lost")
    recent = _queued(title="recent", dispatched_ago=5)
    backing_off = _queued(title="backing off")
    WorkOrder.objects.filter(pk=backing_off.pk).update(not_before=timezone.now() + timedelta(seconds=60))

    with django_capture_on_commit_callbacks(execute=True):
        rung = guardians.guard_lost_dispatches()

    assert rung == [lost.pk]
    assert clean_broker.llen("default") == 1
    lost.refresh_from_db()
    assert timezone.now() - lost.dispatched_at < timedelta(seconds=5)
    # The doorbell is in the queue now: nothing is lost any more.
    with django_capture_on_commit_callbacks(execute=True):
        assert guardians.guard_lost_dispatches() == []
    assert recent.pk not in rung


def test_a_broker_that_came_back_empty_gets_every_queued_doorbell_at_once(
    clean_broker, django_capture_on_commit_callbacks, settings
):
    settings.AGENTVINE_LOST_DISPATCH_SECONDS = 120
    clean_broker.set(guardians.BROKER_SENTINEL_KEY, "up")
    just_queued = _queued(title="just queued", dispatched_ago=1)
    backing_off = _queued(title="backing off", dispatched_ago=1)
    WorkOrder.objects.filter(pk=backing_off.pk).update(not_before=timezone.now() + timedelta(seconds=60))
    assert guardians.guard_broker_reset() == []  # the broker kept its doorbells
    assert guardians.guard_lost_dispatches() == []  # and the 120 s rule waits

    clean_broker.flushdb()  # Redis restarted empty: the doorbells are gone
    rung = guardians.guard_broker_reset()

    assert sorted(rung) == sorted([just_queued.pk, backing_off.pk])
    # Both doorbells are back; the backing-off one carries the rest of its wait.
    assert clean_broker.llen("default") == 2 and clean_broker.exists(guardians.BROKER_SENTINEL_KEY)
    # Noticed once: a second guardian, or the next run, finds nothing to do.
    assert guardians.guard_broker_reset() == []


def test_a_backlog_still_in_the_broker_is_not_rung_twice(clean_broker, django_capture_on_commit_callbacks, settings):
    settings.AGENTVINE_LOST_DISPATCH_SECONDS = 30
    clean_broker.set(guardians.BROKER_SENTINEL_KEY, "up")
    waiting = _queued(title="behind a backlog")
    from queue_app.dispatch import work_order_dispatch

    work_order_dispatch(work_order_id=waiting.pk)  # its doorbell waits in "default"
    WorkOrder.objects.filter(pk=waiting.pk).update(dispatched_at=timezone.now() - timedelta(seconds=60))

    with django_capture_on_commit_callbacks(execute=True):
        assert guardians.guard_lost_dispatches() == []
    assert clean_broker.llen("default") == 1


def test_high_work_on_a_full_fleet_preempts_the_lowest_priority_latest_start(worker, other_worker, settings):
    settings.AGENTVINE_PREEMPT_MAX = 2
    normal, _ = _running(worker, title="normal", priority=Priority.NORMAL)
    low, _ = _running(other_worker, title="low", priority=Priority.LOW)
    assert guardians.guard_priority_preemption() == []  # nothing high is waiting

    task_create(title="urgent", priority=Priority.HIGH)
    victims = guardians.guard_priority_preemption()

    assert [v.pk for v in victims] == [low.pk]
    low.refresh_from_db()
    assert low.preempt_requested_at is not None
    assert WorkOrder.objects.get(pk=normal.pk).preempt_requested_at is None
    # The request already under way covers the waiting high work.
    assert guardians.guard_priority_preemption() == []


def test_preemption_spares_work_preempted_too_often_and_can_be_turned_off(worker, other_worker, settings):
    settings.AGENTVINE_PREEMPT_MAX = 1
    low, _ = _running(worker, title="low", priority=Priority.LOW)
    WorkOrder.objects.filter(pk=low.pk).update(preempt_count=1)
    normal, _ = _running(other_worker, title="normal")
    task_create(title="urgent", priority=Priority.HIGH)

    settings.AGENTVINE_PREEMPTION_ENABLED = False
    assert guardians.guard_priority_preemption() == []
    settings.AGENTVINE_PREEMPTION_ENABLED = True
    assert [v.pk for v in guardians.guard_priority_preemption()] == [normal.pk]


def test_no_preemption_while_a_slot_is_idle(worker, other_worker):
    _running(worker, title="low", priority=Priority.LOW)
    task_create(title="urgent", priority=Priority.HIGH)

    assert guardians.guard_priority_preemption() == []


def test_the_beat_schedule_holds_every_guardian():
    # What the migrations write (run again here: a transactional test run
    # before this one in the same process flushes the rows they wrote).
    from django.apps import apps

    for name in ("0003_guardian_schedule", "0004_broker_reset_guardian"):
        importlib.import_module(f"workers_app.migrations.{name}").create_schedule(apps, None)
    tasks = dict(PeriodicTask.objects.filter(task__startswith="workers_app.guard_").values_list("task", "queue"))
    assert tasks == {
        "workers_app.guard_stalled_workers": "guardians",
        "workers_app.guard_idle_sessions": "guardians",
        "workers_app.guard_lost_dispatches": "guardians",
        "workers_app.guard_priority_preemption": "guardians",
        "workers_app.guard_broker_reset": "guardians",
    }

"""A provider's rate limit pauses its key until the reset, then the work
resumes by itself: a real Celery worker, PostgreSQL, Redis and the stand-in
claude CLI (tests/agents/claude_replay.py) speaking stream-json."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from queue_app import rate_limits
from queue_app.models import ConcurrencyKeyPause, ExecutionStatus, WorkOrder, WorkOrderStatus
from tasks_app.models import Task, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_create
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RESET_SECONDS = 5


def _status(task):
    return Task.objects.values_list("status", flat=True).get(pk=task.pk)


def test_a_rejected_rate_limit_pauses_the_key_and_its_work_resumes_in_its_session_after_the_reset(
    celery_worker_factory, operator
):
    celery_worker_factory(concurrency=2)
    refused = task_create(
        title=f"Refactor scenario:ratelimitonce reset:{RESET_SECONDS}", executor="claude-replay", created_by=operator
    )
    order = wait_for(
        lambda: WorkOrder.objects.filter(task=refused, status=WorkOrderStatus.QUEUED, not_before__isnull=False).first(),
        timeout=20,
        message="the refused run back in line until the reset",
    )
    paused_at = time.monotonic()
    reset = ConcurrencyKeyPause.objects.get(key="claude-replay").paused_until
    # The same profile's new work waits for the reset too; other work runs meanwhile.
    waiting = task_create(title="Next change", executor="claude-replay", created_by=operator)
    other = task_create(title="Other work", executor="noop", created_by=operator)
    wait_for(lambda: _status(other) == TaskStatus.COMPLETED, timeout=RESET_SECONDS, message="other work meanwhile")
    assert timezone.now() < reset
    assert _status(waiting) == TaskStatus.QUEUED
    assert not waiting.executions.exists()

    for task in (refused, waiting):
        wait_for(lambda t=task: _status(t) == TaskStatus.COMPLETED, timeout=40, message=f"{task.title} after the reset")
    resumed_after = time.monotonic() - paused_at

    order.refresh_from_db()
    assert order.retry_count == 0  # no retry spent on the limit
    first, second = order.executions.order_by("attempt")
    assert first.status == ExecutionStatus.INTERRUPTED
    assert second.status == ExecutionStatus.COMPLETED
    assert second.started_at >= reset
    # The second run resumed the refused one's session (claude --resume).
    assert first.session_id is not None and second.session_id == first.session_id
    assert f"Resumed session {first.session.session_id}" in execution_output(execution=second)
    # Oldest first: the refused work, queued earlier, started again before the waiting work.
    assert second.started_at <= waiting.executions.get().started_at
    assert resumed_after >= RESET_SECONDS - 1.5, resumed_after


@pytest.mark.django_db
def test_a_missing_or_absurd_reset_time_falls_back_to_a_capped_doubling_backoff(settings):
    settings.AGENTVINE_RATE_LIMIT_BACKOFF_SECONDS = 60
    settings.AGENTVINE_RATE_LIMIT_BACKOFF_MAX_SECONDS = 200
    now = timezone.now()
    waits = []
    for resets_at in (None, now.timestamp() - 10, now.timestamp() + 10 * 86400, None):
        until = rate_limits.key_pause(key="codex", resets_at=resets_at, reason="usage limit", now=now)
        waits.append(round((until - now).total_seconds()))
        now = until  # refused again as soon as it resumes
    assert waits == [60, 120, 200, 200]
    # A believable reset is used as is, and the backoff starts over after it.
    reset = now + timedelta(seconds=30)
    until = rate_limits.key_pause(key="codex", resets_at=reset.timestamp(), reason="5h", now=now)
    assert abs((until - reset).total_seconds()) < 0.001
    assert ConcurrencyKeyPause.objects.get(key="codex").strikes == 0

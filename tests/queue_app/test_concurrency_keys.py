"""Concurrency keys: a full key's work waits in line while other work passes it."""

import pytest

from queue_app import lifecycle
from queue_app.models import WorkOrderStatus
from tasks_app.models import Priority
from tests.factories import make_task
from workers_app.services import worker_register

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


@pytest.fixture
def ticker_limit_one(settings):
    settings.AGENTVINE_CONCURRENCY_LIMITS = {"ticker": 1}
    settings.AGENTVINE_PREEMPTION_ENABLED = False


def _slot(name):
    return worker_register(name=name, hostname="test")


def test_full_key_is_passed_by_other_work_and_frees_on_completion(ticker_limit_one):
    first = make_task(title="ticker 1", executor="ticker")
    second = make_task(title="ticker 1", executor="ticker", priority=Priority.HIGH)
    other = make_task(title="other", executor="noop", priority=Priority.LOW)
    a, b, c = _slot("slot-a"), _slot("slot-b"), _slot("slot-c")

    # The high ticker comes first in line; the second ticker waits for it
    # although it is older, and the low noop passes it.
    taken = lifecycle.work_order_claim_start(worker=a, work_order_id=None)
    assert taken[0].task_id == second.id
    passed = lifecycle.work_order_claim(worker=b)
    assert passed.task_id == other.id
    assert lifecycle.work_order_claim(worker=c) is None
    assert first.work_orders.get().status == WorkOrderStatus.QUEUED

    lifecycle.work_order_complete(work_order=taken[0], worker=a, execution=taken[1])
    freed = lifecycle.work_order_claim(worker=c)
    assert freed.task_id == first.id


def test_requeued_and_cancelled_runs_give_their_seat_back(ticker_limit_one):
    first = make_task(title="ticker 1", executor="ticker")
    second = make_task(title="ticker 1", executor="ticker")
    a, b = _slot("slot-a"), _slot("slot-b")

    order = lifecycle.work_order_claim(worker=a)
    assert order.task_id == first.id
    assert lifecycle.work_order_claim(worker=b) is None
    lifecycle.work_order_requeue(work_order=order, reason="worker lost", lost=True)
    again = lifecycle.work_order_claim(worker=b)
    assert again.task_id == first.id  # kept its place in line
    lifecycle.work_order_cancel(work_order=again)
    assert lifecycle.work_order_claim(worker=a).task_id == second.id


def test_unlimited_profiles_are_not_counted(settings):
    settings.AGENTVINE_CONCURRENCY_LIMITS = {}
    settings.AGENTVINE_PREEMPTION_ENABLED = False
    for _ in range(3):
        make_task(title="ticker 1", executor="ticker")
    claimed = [lifecycle.work_order_claim(worker=_slot(f"slot-{i}")) for i in range(3)]
    assert all(order is not None for order in claimed)


@pytest.mark.parametrize(
    "limits, spec",
    [
        ({"ticker": 1}, {"executor": "ticker"}),
        (
            {"repo:https://git.example.com/a.git": 1},
            {"executor": "noop", "repository_url": "https://git.example.com/a.git"},
        ),
    ],
    ids=["profile", "repository"],
)
def test_a_limited_run_ending_rings_the_next_of_its_key(settings, limits, spec, django_capture_on_commit_callbacks):
    settings.AGENTVINE_CONCURRENCY_LIMITS = limits
    settings.AGENTVINE_PREEMPTION_ENABLED = False
    make_task(title="ticker 1", **spec)
    waiting = make_task(title="ticker 1", **spec)
    slot = _slot("slot-a")
    order, execution, _, _ = lifecycle.work_order_claim_start(worker=slot, work_order_id=None)
    waiting_order = waiting.work_orders.get()
    assert waiting_order.dispatched_at is None

    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.work_order_complete(work_order=order, worker=slot, execution=execution)

    waiting_order.refresh_from_db()
    assert waiting_order.dispatched_at is not None


def test_a_repository_limit_holds_its_repositorys_work_whatever_the_profile(settings):
    settings.AGENTVINE_CONCURRENCY_LIMITS = {"repo:*": 1}
    settings.AGENTVINE_PREEMPTION_ENABLED = False
    repo_a, repo_b = "https://git.example.com/a.git", "https://git.example.com/b.git"
    first = make_task(title="a 1", executor="noop", repository_url=repo_a)
    second = make_task(title="a 2", executor="ticker", repository_url=repo_a)
    other = make_task(title="b 1", executor="noop", repository_url=repo_b)
    assert first.work_orders.get().scope_key == f"repo:{repo_a}"
    a, b, c = _slot("slot-a"), _slot("slot-b"), _slot("slot-c")

    taken = lifecycle.work_order_claim_start(worker=a, work_order_id=None)
    assert taken[0].task_id == first.id
    # The second task of repository a waits, though its profile is another; b's runs.
    assert lifecycle.work_order_claim(worker=b).task_id == other.id
    assert lifecycle.work_order_claim(worker=c) is None
    assert second.work_orders.get().status == WorkOrderStatus.QUEUED
    lifecycle.work_order_complete(work_order=taken[0], worker=a, execution=taken[1])
    assert lifecycle.work_order_claim(worker=c).task_id == second.id


def test_a_key_the_task_names_counts_with_its_profiles(settings):
    settings.AGENTVINE_CONCURRENCY_LIMITS = {"deploys": 1, "ticker": 1}
    settings.AGENTVINE_PREEMPTION_ENABLED = False
    deploy = make_task(title="deploy 1", executor="noop", concurrency_key="deploys")
    second_deploy = make_task(title="deploy 2", executor="noop", concurrency_key="deploys")
    ticker = make_task(title="ticker 1", executor="ticker")
    ticker_deploy = make_task(title="ticker 1", executor="ticker", concurrency_key="deploys")
    a, b, c = _slot("slot-a"), _slot("slot-b"), _slot("slot-c")

    held = lifecycle.work_order_claim(worker=a)
    assert held.task_id == deploy.id
    # deploy 2 waits on its named key; ticker runs; the ticker deploy waits on both keys.
    assert lifecycle.work_order_claim(worker=b).task_id == ticker.id
    assert lifecycle.work_order_claim(worker=c) is None
    lifecycle.work_order_cancel(work_order=held)
    assert lifecycle.work_order_claim(worker=c).task_id == second_deploy.id
    assert ticker_deploy.work_orders.get().status == WorkOrderStatus.QUEUED

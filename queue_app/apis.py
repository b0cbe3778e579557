"""Queue API: operators enqueue and watch; workers claim and report.

A worker acts only on work orders it holds: one held by another worker is a
403, one in the wrong state (not claimed yet, already finished) is a 409 from
the state machine's compare-and-set.
"""

from datetime import timedelta

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response

from agentvine.api import PlatformAPIView, query_params
from agentvine.errors import ExecutionFenced, IllegalTransition, NotFound, PermissionDenied, ValidationFailed
from chat_app.services import agent_next_turn_on_commit
from queue_app import budgets, lifecycle, selectors
from queue_app.models import Execution, ExecutionStatus, WorkOrder
from queue_app.outputs import execution_output_append_next, execution_record_usage
from queue_app.serializers import (
    ClaimInput,
    ClaimOutput,
    CompleteInput,
    EnqueueInput,
    ExecutionOutput,
    FailInput,
    InterruptedInput,
    OutputAcceptedOutput,
    OutputInput,
    QueueStatusOutput,
    SpendOutput,
    SpendParams,
    StartOutput,
    UsageInput,
    UsageOutput,
    WorkOrderOutput,
)
from tasks_app.models import Task, TaskStatus
from tasks_app.selectors import spend_overview
from workers_app.authentication import IsOperator, IsOperatorOrWorker, IsWorker, request_worker
from workers_app.runner import pull_run_start, run_budget, task_prompt
from workers_app.services import worker_release

ERR_TASK_NOT_FOUND = "task not found"
ERR_NO_RUNNING_EXECUTION = "work order has no running execution on this worker"
ERR_EXECUTION_NOT_FOUND = "no execution of this work order on this worker has that id"


def _work_order_for(request, work_order_id):
    """The work order, if the caller is an operator or the worker holding it."""
    work_order = get_object_or_404(WorkOrder.objects.select_related("task"), pk=work_order_id)
    me = request_worker(request)
    if me is not None and work_order.worker_id is not None and work_order.worker_id != me.pk:
        raise PermissionDenied(lifecycle.ERR_NOT_YOURS)
    return work_order


def _run_write_target(request, work_order_id, data):
    """The work order and the run (execution) a worker's write is for: the
    one it names (``execution``, popped from ``data``), else its running one.

    A named run of this worker's that is no longer live (its work was
    requeued under it: cut off, back again) is a 409 ``fenced`` whoever holds
    the work order now, so the worker stops that agent. The services check
    it again under their locks."""
    worker = request_worker(request)
    execution_id = data.pop("execution", None)
    if execution_id is None or worker is None:
        work_order = _work_order_for(request, work_order_id)
        return work_order, _running_execution(work_order, worker)
    execution = Execution.objects.filter(pk=execution_id, work_order_id=work_order_id, worker=worker).first()
    if execution is None:
        raise NotFound(ERR_EXECUTION_NOT_FOUND)
    if execution.status != ExecutionStatus.RUNNING:
        raise ExecutionFenced(lifecycle.ERR_FENCED.format(execution=execution.pk))
    return _work_order_for(request, work_order_id), execution


def _running_execution(work_order, worker):
    return (
        Execution.objects.filter(work_order=work_order, worker=worker, status=ExecutionStatus.RUNNING)
        .order_by("-attempt")
        .first()
    )


class QueueStatusApi(PlatformAPIView):
    permission_classes = [IsOperator]

    @extend_schema(responses=QueueStatusOutput, operation_id="queue_status", tags=["queue"])
    def get(self, request):
        return Response(QueueStatusOutput(selectors.queue_stats()).data)


class SpendApi(PlatformAPIView):
    """What agents spent over the last ``days`` days (today included), per
    day, operator, executor profile or repository, with the daily budgets
    and what today spent against them (queue_app.budgets)."""

    permission_classes = [IsOperator]

    @extend_schema(parameters=[SpendParams], responses=SpendOutput, operation_id="spend", tags=["queue"])
    def get(self, request):
        params = query_params(SpendParams, request)
        group, days = params["group"], params["days"]
        paused = Task.objects.filter(status=TaskStatus.PAUSED_BUDGET).count()
        # The Overview's read: every group from one read of the spend rows.
        spend = spend_overview(paused=paused, days=days)
        rows = spend["by"][group]
        body = {
            "group": group,
            "since": budgets.day_start() - timedelta(days=days - 1),
            "total_usd": sum((row["cost_usd"] for row in rows), budgets.ZERO),
            "rows": rows,
            "budgets": {
                "daily_usd": spend["daily_budget"],
                "operator_daily_usd": spend["operator_daily_budget"],
                "spent_today_usd": spend["today"],
                "paused_tasks": paused,
            },
        }
        return Response(SpendOutput(body).data)


class WorkOrderEnqueueApi(PlatformAPIView):
    permission_classes = [IsOperator]

    @extend_schema(request=EnqueueInput, responses={201: WorkOrderOutput}, operation_id="queue_enqueue", tags=["queue"])
    def post(self, request):
        data = EnqueueInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        task = Task.objects.filter(pk=values["task"]).first()
        if task is None:
            raise ValidationFailed(ERR_TASK_NOT_FOUND, field="task")
        work_order = lifecycle.work_order_enqueue(
            task=task, kind=values["kind"], priority=values.get("priority"), max_retries=values.get("max_retries")
        )
        return Response(WorkOrderOutput(work_order).data, status=status.HTTP_201_CREATED)


class WorkOrderDetailApi(PlatformAPIView):
    permission_classes = [IsOperatorOrWorker]

    @extend_schema(
        responses=WorkOrderOutput,
        operation_id="queue_work_order_get",
        tags=["queue"],
        description="A remote worker's runner polls its work order while its agent runs: "
        "the poll also renews its run's lease.",
    )
    def get(self, request, work_order_id):
        work_order = _work_order_for(request, work_order_id)
        worker = request_worker(request)
        if worker is not None and work_order.worker_id == worker.pk:
            lifecycle.execution_leases_renew(worker=worker, work_order=work_order)
        return Response(WorkOrderOutput(work_order).data)


class WorkOrderClaimApi(PlatformAPIView):
    permission_classes = [IsWorker]

    @extend_schema(
        request=ClaimInput,
        responses={200: ClaimOutput, 204: OpenApiResponse(description="Nothing to claim.")},
        operation_id="queue_claim",
        tags=["queue"],
        description="Claim the highest-priority, oldest ready work order (or the given one) for this worker.",
    )
    def post(self, request):
        data = ClaimInput(data=request.data)
        data.is_valid(raise_exception=True)
        work_order = lifecycle.work_order_claim(
            worker=request_worker(request), work_order_id=data.validated_data.get("work_order")
        )
        if work_order is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        task = work_order.task
        body = {"work_order": work_order, "task": task, "prompt": task_prompt(task)}
        return Response(ClaimOutput(body).data)


class WorkOrderStartApi(PlatformAPIView):
    permission_classes = [IsWorker]
    idempotency_redacted_fields = ("agent_token",)

    @extend_schema(request=None, responses=StartOutput, operation_id="queue_start", tags=["queue"])
    def post(self, request, work_order_id):
        work_order = _work_order_for(request, work_order_id)
        work_order, execution, session, resume, prompt = pull_run_start(
            work_order=work_order, worker=request_worker(request)
        )
        # The agent asks humans through the chat API with its own per-run
        # token, issued with the start and revoked when the run ends.
        agent_token = execution.agent_token
        return Response(
            StartOutput(
                {
                    "work_order": work_order,
                    "execution": execution.pk,
                    "attempt": execution.attempt,
                    "agent_token": agent_token,
                    "session": session.pk if session else None,
                    "session_id": session.session_id if session else None,
                    "resume": resume,
                    "prompt": prompt,
                    "lease_expires_at": execution.lease_expires_at,
                    "fence_seconds": settings.AGENTVINE_FENCE_SECONDS,
                    "budget_usd": run_budget(work_order.task),
                }
            ).data
        )


class WorkOrderCompleteApi(PlatformAPIView):
    permission_classes = [IsWorker]

    @extend_schema(request=CompleteInput, responses=WorkOrderOutput, operation_id="queue_complete", tags=["queue"])
    def post(self, request, work_order_id):
        data = CompleteInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        work_order, execution = _run_write_target(request, work_order_id, values)
        task = work_order.task
        work_order = lifecycle.work_order_complete(
            work_order=work_order, worker=request_worker(request), execution=execution, exit_code=values["exit_code"]
        )
        # As after a slot's run: messages that came in too late for it get the agent's next turn.
        agent_next_turn_on_commit(task)
        return Response(WorkOrderOutput(work_order).data)


class WorkOrderFailApi(PlatformAPIView):
    permission_classes = [IsWorker]

    @extend_schema(request=FailInput, responses=WorkOrderOutput, operation_id="queue_fail", tags=["queue"])
    def post(self, request, work_order_id):
        data = FailInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        work_order, execution = _run_write_target(request, work_order_id, values)
        task = work_order.task
        worker = request_worker(request)
        rate_limited, resets_at = values.pop("rate_limited"), values.pop("resets_at")
        refused = budgets.refusal(task) if values["retryable"] else None
        if rate_limited:
            # Back in line with no retry spent, its key paused until the reset (queue_app.rate_limits).
            lifecycle.work_order_assert_owner(work_order=work_order, worker=worker)
            work_order = lifecycle.work_order_rate_limited(
                work_order=work_order, reason=values["error"], resets_at=resets_at
            )
            worker_release(worker=worker)
        elif refused is not None:
            # Spent: paused (or waiting for the next day) rather than retried (queue_app.budgets).
            lifecycle.work_order_assert_owner(work_order=work_order, worker=worker)
            work_order = lifecycle.work_order_over_budget(
                work_order=work_order, refusal=refused, worker=worker, execution=execution
            )
            worker_release(worker=worker)
        else:
            work_order = lifecycle.work_order_fail(work_order=work_order, worker=worker, execution=execution, **values)
        agent_next_turn_on_commit(task)
        return Response(WorkOrderOutput(work_order).data)


class WorkOrderInterruptedApi(PlatformAPIView):
    permission_classes = [IsWorker]

    @extend_schema(
        request=InterruptedInput,
        responses=ExecutionOutput,
        operation_id="queue_interrupted",
        tags=["queue"],
        description="The work order moved on (cancelled, requeued) and this worker stopped its agent: "
        "its running attempt ends interrupted and the worker is free.",
    )
    def post(self, request, work_order_id):
        data = InterruptedInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        work_order, execution = _run_write_target(request, work_order_id, values)
        execution = lifecycle.work_order_interrupted(
            work_order=work_order,
            worker=request_worker(request),
            reason=values["reason"],
            execution=execution if "execution" in data.validated_data else None,
        )
        return Response(ExecutionOutput(execution).data)


class WorkOrderUsageApi(PlatformAPIView):
    permission_classes = [IsWorker]

    @extend_schema(
        request=UsageInput,
        responses=UsageOutput,
        operation_id="queue_usage",
        tags=["queue"],
        description="Add tokens and cost the agent reported to the running attempt; answers the totals, "
        "and whether a budget is now spent.",
    )
    def post(self, request, work_order_id):
        data = UsageInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        work_order, execution = _run_write_target(request, work_order_id, values)
        if execution is None:
            raise IllegalTransition(ERR_NO_RUNNING_EXECUTION)
        execution_record_usage(execution=execution, **values)
        execution.refresh_from_db()
        refused = budgets.refusal(work_order.task)
        execution.over_budget = refused.reason if refused else ""
        return Response(UsageOutput(execution).data)


class WorkOrderOutputApi(PlatformAPIView):
    permission_classes = [IsWorker]

    @extend_schema(
        request=OutputInput, responses=OutputAcceptedOutput, operation_id="queue_output_append", tags=["queue"]
    )
    def post(self, request, work_order_id):
        data = OutputInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        work_order, execution = _run_write_target(request, work_order_id, values)
        if execution is None:
            raise IllegalTransition(ERR_NO_RUNNING_EXECUTION)
        next_seq = execution_output_append_next(execution=execution, **values)
        current = WorkOrder.objects.filter(pk=work_order.pk).values_list("status", flat=True).first()
        return Response({"next_seq": next_seq, "work_order_status": current})

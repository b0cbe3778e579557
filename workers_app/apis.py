"""Workers, agent sessions and API tokens over HTTP.

Operators see and manage everything; a worker (worker token) sees only
itself, heartbeats only itself, and touches only sessions of its own work.
"""

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response

from agentvine.api import Pagination, PlatformAPIView, paginated, query_params
from agentvine.errors import PermissionDenied, ValidationFailed
from queue_app import pull_polls
from queue_app.models import ACTIVE_STATUSES, Execution, WorkOrder
from tasks_app.models import Task
from workers_app import services
from workers_app.authentication import IsOperator, IsOperatorOrWorker, IsWorker, request_worker
from workers_app.models import AgentSession, Worker, WorkerStatus
from workers_app.serializers import (
    ApiTokenCreateInput,
    ApiTokenOutput,
    HeartbeatOutput,
    SessionActivityInput,
    SessionCreateInput,
    SessionListParams,
    SessionOutput,
    SessionTerminateInput,
    WorkerListParams,
    WorkerOutput,
    WorkerRegisteredOutput,
    WorkerRegisterInput,
)


def heartbeat_body(beat):
    """The heartbeat's answer (``HeartbeatOutput``) for what :func:`pull_polls.worker_heartbeat_record` found."""
    return {
        "ok": beat.status is not None,
        "status": beat.status or WorkerStatus.OFFLINE,
        "leases": beat.leases,
        "fence_seconds": settings.AGENTVINE_FENCE_SECONDS,
    }


ERR_NOT_THIS_WORKER = "a worker may only act on itself"
ERR_NOT_YOUR_SESSION = "session belongs to another worker"
ERR_TASK_NOT_YOURS = "a worker may only open sessions for tasks it is running"
ERR_TASK_NOT_FOUND = "task not found"
ERR_WORKER_NOT_FOUND = "worker not found"


def _worker_for(request, worker_id):
    """The Worker at ``worker_id``, if the caller may act on it."""
    worker = get_object_or_404(Worker, pk=worker_id)
    me = request_worker(request)
    if me is not None and me.pk != worker.pk:
        raise PermissionDenied(ERR_NOT_THIS_WORKER)
    return worker


def _session_for(request, session_id):
    session = get_object_or_404(AgentSession, pk=session_id)
    me = request_worker(request)
    if me is not None and session.worker_id != me.pk:
        raise PermissionDenied(ERR_NOT_YOUR_SESSION)
    return session


class WorkerListRegisterApi(PlatformAPIView):
    permission_classes = [IsOperator]
    idempotency_redacted_fields = ("token",)

    @extend_schema(
        parameters=[WorkerListParams], responses=paginated(WorkerOutput), operation_id="workers_list", tags=["workers"]
    )
    def get(self, request):
        params = query_params(WorkerListParams, request)
        workers = Worker.objects.order_by("name")
        if params.get("status"):
            workers = workers.filter(status=params["status"])
        paginator = Pagination()
        page = paginator.paginate_queryset(workers, request, view=self)
        return paginator.get_paginated_response(WorkerOutput(page, many=True).data)

    @extend_schema(
        request=WorkerRegisterInput,
        responses={201: WorkerRegisteredOutput},
        operation_id="workers_register",
        tags=["workers"],
        description="Register a remote worker (or re-register one by name). The token in the answer is shown once; "
        "earlier tokens of that worker stop working.",
    )
    def post(self, request):
        data = WorkerRegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        worker, key = services.worker_register_with_token(**data.validated_data)
        return Response(WorkerRegisteredOutput(worker, context={"token": key}).data, status=status.HTTP_201_CREATED)


class WorkerDetailApi(PlatformAPIView):
    permission_classes = [IsOperatorOrWorker]

    @extend_schema(responses=WorkerOutput, operation_id="workers_get", tags=["workers"])
    def get(self, request, worker_id):
        return Response(WorkerOutput(_worker_for(request, worker_id)).data)

    @extend_schema(request=None, responses={200: WorkerOutput}, operation_id="workers_deregister", tags=["workers"])
    def delete(self, request, worker_id):
        worker = services.worker_deregister(worker=_worker_for(request, worker_id))
        return Response(WorkerOutput(worker).data)


class WorkerHeartbeatApi(PlatformAPIView):
    permission_classes = [IsWorker]

    @extend_schema(
        request=None,
        responses=HeartbeatOutput,
        operation_id="workers_heartbeat",
        tags=["workers"],
        description="Record a heartbeat of this worker and renew the leases of its running executions; the answer "
        "lists its runs that are still live (a run missing there was requeued: stop its agent). Safe to repeat: "
        "send it without an Idempotency-Key, so a repeat answers the leases as they are now.",
    )
    def post(self, request, worker_id):
        worker = request_worker(request)
        if worker.pk != worker_id:
            _worker_for(request, worker_id)  # 404 or 403
        # A remote worker drives its agent in its own process: its heartbeat
        # also renews its runs' leases (so does its runner's poll) and tells
        # it which of its runs are still live: one not listed was requeued
        # under it, and its agent must stop. One statement (queue_app.pull_polls).
        beat = pull_polls.worker_heartbeat_record(worker_id=worker.pk)
        if beat.status is None and services.worker_heartbeat(worker=worker):
            # It was offline: back idle (its old work was requeued), renewed again.
            beat = pull_polls.worker_heartbeat_record(worker_id=worker.pk)
        body = heartbeat_body(beat)
        return Response(HeartbeatOutput(body).data)


class SessionListCreateApi(PlatformAPIView):
    permission_classes = [IsOperatorOrWorker]

    @extend_schema(
        parameters=[SessionListParams],
        responses=paginated(SessionOutput),
        operation_id="sessions_list",
        tags=["sessions"],
    )
    def get(self, request):
        params = query_params(SessionListParams, request)
        sessions = AgentSession.objects.order_by("-created_at", "-id")
        me = request_worker(request)
        if me is not None:
            sessions = sessions.filter(worker=me)
        if params.get("status"):
            sessions = sessions.filter(status=params["status"])
        if params.get("task"):
            sessions = sessions.filter(task_id=params["task"])
        paginator = Pagination()
        page = paginator.paginate_queryset(sessions, request, view=self)
        return paginator.get_paginated_response(SessionOutput(page, many=True).data)

    @extend_schema(
        request=SessionCreateInput, responses={201: SessionOutput}, operation_id="sessions_create", tags=["sessions"]
    )
    def post(self, request):
        data = SessionCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        task = None
        if values.get("task"):
            task = Task.objects.filter(pk=values["task"]).first()
            if task is None:
                raise ValidationFailed(ERR_TASK_NOT_FOUND, field="task")
        me = request_worker(request)
        if me is not None:
            running = WorkOrder.objects.filter(worker=me, status__in=ACTIVE_STATUSES)
            if task is None or not running.filter(task=task).exists():
                raise PermissionDenied(ERR_TASK_NOT_YOURS)
            worker = me
        else:
            worker = None
            if values.get("worker"):
                worker = Worker.objects.filter(pk=values["worker"]).first()
                if worker is None:
                    raise ValidationFailed(ERR_WORKER_NOT_FOUND, field="worker")
        session = services.agent_session_create(session_id=values["session_id"], task=task, worker=worker)
        return Response(SessionOutput(session).data, status=status.HTTP_201_CREATED)


class SessionDetailApi(PlatformAPIView):
    permission_classes = [IsOperatorOrWorker]

    @extend_schema(responses=SessionOutput, operation_id="sessions_get", tags=["sessions"])
    def get(self, request, session_pk):
        return Response(SessionOutput(_session_for(request, session_pk)).data)


class SessionActivityApi(PlatformAPIView):
    permission_classes = [IsOperatorOrWorker]

    @extend_schema(
        request=SessionActivityInput, responses=SessionOutput, operation_id="sessions_activity", tags=["sessions"]
    )
    def post(self, request, session_pk):
        session = _session_for(request, session_pk)
        data = SessionActivityInput(data=request.data)
        data.is_valid(raise_exception=True)
        execution = None
        if data.validated_data.get("execution"):
            execution = get_object_or_404(Execution, pk=data.validated_data["execution"], session_id=session.pk)
        session = services.agent_session_touch(
            session=session, agent_session_id=data.validated_data.get("session_id"), execution=execution
        )
        return Response(SessionOutput(session).data)


class SessionTerminateApi(PlatformAPIView):
    permission_classes = [IsOperatorOrWorker]

    @extend_schema(
        request=SessionTerminateInput, responses=SessionOutput, operation_id="sessions_terminate", tags=["sessions"]
    )
    def post(self, request, session_pk):
        session = _session_for(request, session_pk)
        data = SessionTerminateInput(data=request.data)
        data.is_valid(raise_exception=True)
        session = services.agent_session_terminate(session=session, reason=data.validated_data["reason"])
        return Response(SessionOutput(session).data)


class ApiTokenCreateApi(PlatformAPIView):
    permission_classes = [IsOperator]
    idempotency_redacted_fields = ("token",)

    @extend_schema(
        request=ApiTokenCreateInput,
        responses={201: ApiTokenOutput},
        operation_id="tokens_create",
        tags=["auth"],
        description="Create a personal API token for the signed-in operator. The token is shown once.",
    )
    def post(self, request):
        data = ApiTokenCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        token, key = services.api_token_create(user=request.user, name=data.validated_data["name"])
        body = {
            "id": token.id,
            "name": token.name,
            "prefix": token.prefix,
            "created_at": token.created_at,
            "token": key,
        }
        return Response(ApiTokenOutput(body).data, status=status.HTTP_201_CREATED)

"""Tasks API (operators only): create, list, get, update, cancel, retry; results
of executions (bundle upload by the worker that ran one, its diff for operators)."""

import json
import tempfile
from pathlib import Path

from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from agentvine.api import Pagination, PlatformAPIView, paginated, query_params
from agentvine.errors import PermissionDenied
from chat_app.authentication import AgentPrincipal, AgentTokenAuthentication
from queue_app.models import Execution
from tasks_app import graph, graph_selectors, results, review, selectors, services
from tasks_app.models import Task
from tasks_app.serializers import (
    BundleFetchParams,
    BundleParams,
    DependenciesAddInput,
    DependenciesOutput,
    ExecutionResultOutput,
    ReviewInput,
    ReviewOutput,
    ReviewRefusedOutput,
    TaskBatchCreateInput,
    TaskCreateInput,
    TaskListParams,
    TaskOutput,
    TaskUpdateInput,
    TreeOutput,
)
from workers_app.authentication import TokenAuthentication, request_worker

ERR_NOT_YOUR_EXECUTION = "results may only be sent for the caller's own execution"


class IsWorkerOrAgent(BasePermission):
    def has_permission(self, request, view):
        return request_worker(request) is not None or isinstance(request.user, AgentPrincipal)


class TaskListCreateApi(PlatformAPIView):
    @extend_schema(
        parameters=[TaskListParams], responses=paginated(TaskOutput), operation_id="tasks_list", tags=["tasks"]
    )
    def get(self, request):
        params = query_params(TaskListParams, request)
        tasks = selectors.task_list(
            status=params.get("status"),
            task_type=params.get("type"),
            priority=params.get("priority"),
            q=params.get("search"),
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(tasks, request, view=self)
        return paginator.get_paginated_response(TaskOutput(page, many=True).data)

    @extend_schema(request=TaskCreateInput, responses={201: TaskOutput}, operation_id="tasks_create", tags=["tasks"])
    def post(self, request):
        data = TaskCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        task = services.task_create(created_by=request.user, **data.validated_data)
        return Response(TaskOutput(task).data, status=status.HTTP_201_CREATED)


class TaskBatchCreateApi(PlatformAPIView):
    """Up to 100 tasks in one request, all or none (a bad one names its index)."""

    @extend_schema(
        request=TaskBatchCreateInput,
        responses={201: TaskOutput(many=True)},
        operation_id="tasks_create_batch",
        tags=["tasks"],
    )
    def post(self, request):
        data = TaskBatchCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        tasks = services.tasks_create(specs=data.validated_data["tasks"], created_by=request.user)
        return Response(TaskOutput(tasks, many=True).data, status=status.HTTP_201_CREATED)


class TaskDetailApi(PlatformAPIView):
    @extend_schema(responses=TaskOutput, operation_id="tasks_get", tags=["tasks"])
    def get(self, request, task_id):
        return Response(TaskOutput(get_object_or_404(Task, pk=task_id)).data)

    @extend_schema(request=TaskUpdateInput, responses=TaskOutput, operation_id="tasks_update", tags=["tasks"])
    def patch(self, request, task_id):
        task = get_object_or_404(Task, pk=task_id)
        data = TaskUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        task = services.task_update(task=task, **data.validated_data)
        return Response(TaskOutput(task).data)


class TaskCancelApi(PlatformAPIView):
    @extend_schema(request=None, responses=TaskOutput, operation_id="tasks_cancel", tags=["tasks"])
    def post(self, request, task_id):
        task = services.task_cancel(task=get_object_or_404(Task, pk=task_id))
        return Response(TaskOutput(task).data)


class TaskRetryApi(PlatformAPIView):
    @extend_schema(request=None, responses=TaskOutput, operation_id="tasks_retry", tags=["tasks"])
    def post(self, request, task_id):
        task = services.task_retry(task=get_object_or_404(Task, pk=task_id))
        return Response(TaskOutput(task).data)


class TaskReviewApi(PlatformAPIView):
    """Decide on a task's results: ``approve`` (merge its branch into its
    base, pushed to the origin when configured), ``request_changes`` (the
    comment becomes a message that starts the agent's next turn), ``rebase``
    (hand a conflicting merge back to the agent) or ``open_pull_request``.
    A conflicting merge answers 409 with code ``merge_conflict`` and the
    files; the task then shows them."""

    @extend_schema(
        request=ReviewInput,
        responses={200: ReviewOutput, 409: ReviewRefusedOutput},
        operation_id="tasks_review",
        tags=["tasks"],
    )
    def post(self, request, task_id):
        task = get_object_or_404(Task, pk=task_id)
        data = ReviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        action, comment, into = (data.validated_data[k] for k in ("action", "comment", "into"))
        if action == "approve":
            task, decision = review.review_approve(task=task, user=request.user, into=into)
        elif action == "request_changes":
            task, decision = review.review_request_changes(task=task, user=request.user, comment=comment)
        elif action == "rebase":
            task, decision = review.review_rebase(task=task, user=request.user)
        else:
            task, decision = review.review_open_pull_request(task=task, user=request.user, into=into)
        decision.task = task
        body = ReviewOutput(decision).data
        if decision.outcome == "conflict":
            body = {
                "detail": review.ERR_CONFLICT.format(
                    branch=results.task_branch(task), base=decision.base_branch, files=", ".join(decision.conflicts)
                ),
                "code": "merge_conflict",
                "conflicts": decision.conflicts,
                "review": body,
            }
            return Response(body, status=status.HTTP_409_CONFLICT)
        return Response(body)


def _dependencies(task):
    return {"parents": graph_selectors.task_parents(task=task), "children": graph_selectors.task_children(task=task)}


class TaskDependenciesApi(PlatformAPIView):
    """A task's parents and children; more parents for a blocked task (a
    cycle is refused with a 400 naming it)."""

    @extend_schema(responses=DependenciesOutput, operation_id="tasks_dependencies", tags=["tasks"])
    def get(self, request, task_id):
        task = get_object_or_404(Task, pk=task_id)
        return Response(DependenciesOutput(_dependencies(task)).data)

    @extend_schema(
        request=DependenciesAddInput,
        responses={201: DependenciesOutput},
        operation_id="tasks_dependencies_add",
        tags=["tasks"],
    )
    def post(self, request, task_id):
        task = get_object_or_404(Task, pk=task_id)
        data = DependenciesAddInput(data=request.data)
        data.is_valid(raise_exception=True)
        task = graph.task_dependencies_add(task=task, depends_on=data.validated_data["depends_on"])
        return Response(DependenciesOutput(_dependencies(task)).data, status=status.HTTP_201_CREATED)


class TaskDependencySkipApi(PlatformAPIView):
    """Let a blocked task go on without one parent (its edge is skipped)."""

    @extend_schema(request=None, responses=TaskOutput, operation_id="tasks_dependency_skip", tags=["tasks"])
    def post(self, request, task_id, parent_id):
        task = graph.task_dependency_skip(task=get_object_or_404(Task, pk=task_id), parent_id=parent_id)
        return Response(TaskOutput(task).data)


class TaskTreeApi(PlatformAPIView):
    """The graph below one task: its dependants and subtasks, level by level."""

    @extend_schema(responses=TreeOutput, operation_id="tasks_tree", tags=["tasks"])
    def get(self, request, task_id):
        tree = graph_selectors.task_tree(root=get_object_or_404(Task, pk=task_id))
        return Response(TreeOutput(tree).data)


class _BundleParser(BaseParser):
    """The upload is read as a stream by the view, never parsed into memory."""

    media_type = "application/octet-stream"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream


class ExecutionBundleApi(APIView):
    """A run's new commits, as a git bundle of its task's branch: sent by the
    worker that ran it (worker token) or by its slot with the run's own
    token, for that execution only."""

    authentication_classes = [TokenAuthentication, AgentTokenAuthentication]
    permission_classes = [IsWorkerOrAgent]
    parser_classes = [_BundleParser]

    @extend_schema(
        request={"application/octet-stream": OpenApiTypes.BINARY},
        parameters=[BundleParams],
        responses={201: ExecutionResultOutput},
        operation_id="executions_bundle_upload",
        tags=["results"],
    )
    def post(self, request, execution_id):
        execution = get_object_or_404(Execution.objects.select_related("task"), pk=execution_id)
        if not _may_send_results(request, execution):
            raise PermissionDenied(ERR_NOT_YOUR_EXECUTION)
        params = query_params(BundleParams, request)
        results.results_bundle_receive(execution=execution, stream=request.stream, base_commit=params["base"])
        execution.refresh_from_db()
        return Response(ExecutionResultOutput(execution).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[BundleFetchParams],
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            204: OpenApiResponse(description="the server has no newer commits of the branch than the haves"),
        },
        operation_id="executions_bundle_fetch",
        tags=["results"],
    )
    def get(self, request, execution_id):
        """The task's branch as the server has it, for a run that starts on a
        host without it (a follow-up elsewhere): a bundle without the commits
        the worker says it has. ``X-AgentVine-Head`` names the branch's head."""
        execution = get_object_or_404(Execution.objects.select_related("task"), pk=execution_id)
        if not _may_send_results(request, execution):
            raise PermissionDenied(ERR_NOT_YOUR_EXECUTION)
        haves = query_params(BundleFetchParams, request).get("have", [])
        scratch = tempfile.TemporaryDirectory(prefix="fetch-", dir=results.results_root_made())
        bundle = Path(scratch.name) / "branch.bundle"
        head = results.results_bundle_for(task=execution.task, haves=haves, destination=bundle)
        if head is None or not bundle.exists():
            scratch.cleanup()
            response = HttpResponse(status=status.HTTP_204_NO_CONTENT)
        else:
            handle = open(bundle, "rb")
            # The directory goes once the response has been read.
            handle.close = _closing(handle.close, scratch.cleanup)
            response = FileResponse(handle, content_type="application/octet-stream")
        if head is not None:
            response["X-AgentVine-Head"] = head
        return response


def _closing(close, cleanup):
    def both():
        close()
        cleanup()

    return both


def _may_send_results(request, execution):
    worker = request_worker(request)
    if worker is not None:
        return execution.worker_id == worker.pk
    agent = request.user if isinstance(request.user, AgentPrincipal) else None
    return agent is not None and agent.execution is not None and agent.execution.pk == execution.pk


class _DiffRenderer(BaseRenderer):
    media_type = "text/x-diff"
    format = "diff"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data.encode() if isinstance(data, str) else json.dumps(data).encode()


class ExecutionDiffApi(APIView):
    """An attempt's changes from the server's repository: the file list with
    +/- counts as JSON, or the unified diff as ``text/x-diff`` (``Accept``
    header or ``?format=diff``)."""

    renderer_classes = [JSONRenderer, _DiffRenderer]

    @extend_schema(
        responses={(200, "application/json"): ExecutionResultOutput, (200, "text/x-diff"): OpenApiTypes.STR},
        operation_id="executions_diff",
        tags=["results"],
    )
    def get(self, request, execution_id):
        execution = get_object_or_404(Execution.objects.select_related("task"), pk=execution_id)
        if request.accepted_renderer.media_type == _DiffRenderer.media_type:
            patch = results.execution_patch(execution=execution)
            response = Response(patch, content_type="text/x-diff; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="{execution.pk}.diff"'
            return response
        return Response(ExecutionResultOutput(execution).data)

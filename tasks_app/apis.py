"""Tasks API (operators only): create, list, get, update, cancel, retry."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response

from agentvine.api import Pagination, PlatformAPIView, paginated, query_params
from tasks_app import graph, graph_selectors, selectors, services
from tasks_app.models import Task
from tasks_app.serializers import (
    DependenciesAddInput,
    DependenciesOutput,
    TaskBatchCreateInput,
    TaskCreateInput,
    TaskListParams,
    TaskOutput,
    TaskUpdateInput,
    TreeOutput,
)


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

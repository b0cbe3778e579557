"""Tasks API (operators only): create, list, get, update, cancel, retry."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response

from agentvine.api import Pagination, PlatformAPIView, paginated, query_params
from tasks_app import selectors, services
from tasks_app.models import Task
from tasks_app.serializers import (
    TaskBatchCreateInput,
    TaskCreateInput,
    TaskListParams,
    TaskOutput,
    TaskUpdateInput,
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

"""Schedules API (operators only): list, create, get, change, delete recurring tasks."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from agentvine.api import Pagination, PlatformAPIView, paginated
from agentvine.serializers import ModelOutputSerializer
from tasks_app import schedules
from tasks_app.models import Priority, ScheduleOverlap, TaskSchedule, TaskType
from tasks_app.serializers import RepositoryUrlField


class ScheduleInput(serializers.Serializer):
    name = serializers.CharField(max_length=150)
    enabled = serializers.BooleanField(default=True)
    cron = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default="", help_text='Five fields, e.g. "0 2 * * *".'
    )
    interval_seconds = serializers.IntegerField(min_value=1, max_value=366 * 86400, required=False, allow_null=True)
    overlap = serializers.ChoiceField(choices=ScheduleOverlap.choices, default=ScheduleOverlap.SKIP)
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="At most AGENTVINE_MAX_PROMPT_CHARS with the title."
    )
    task_type = serializers.ChoiceField(choices=TaskType.choices, default=TaskType.FEATURE)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    repository_url = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    branch_name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    executor = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")


class ScheduleOutput(ModelOutputSerializer):
    repository_url = RepositoryUrlField(read_only=True)

    class Meta:
        model = TaskSchedule
        fields = [
            "id",
            "name",
            "enabled",
            "cron",
            "interval_seconds",
            "overlap",
            "title",
            "description",
            "task_type",
            "priority",
            "repository_url",
            "branch_name",
            "executor",
            "last_task",
            "last_tick_at",
            "run_pending",
            "runs_created",
            "ticks_skipped",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


def _save(request, schedule=None):
    data = ScheduleInput(data=request.data)
    data.is_valid(raise_exception=True)
    values = dict(data.validated_data)
    enabled = values.pop("enabled")
    saved = schedules.schedule_save(schedule=schedule, created_by=request.user, **values)
    return schedules.schedule_set_enabled(schedule=saved, enabled=enabled)


class ScheduleListCreateApi(PlatformAPIView):
    @extend_schema(responses=paginated(ScheduleOutput), operation_id="schedules_list", tags=["schedules"])
    def get(self, request):
        paginator = Pagination()
        page = paginator.paginate_queryset(TaskSchedule.objects.order_by("name"), request, view=self)
        return paginator.get_paginated_response(ScheduleOutput(page, many=True).data)

    @extend_schema(
        request=ScheduleInput, responses={201: ScheduleOutput}, operation_id="schedules_create", tags=["schedules"]
    )
    def post(self, request):
        return Response(ScheduleOutput(_save(request)).data, status=status.HTTP_201_CREATED)


class ScheduleDetailApi(PlatformAPIView):
    @extend_schema(responses=ScheduleOutput, operation_id="schedules_get", tags=["schedules"])
    def get(self, request, schedule_id):
        return Response(ScheduleOutput(get_object_or_404(TaskSchedule, pk=schedule_id)).data)

    @extend_schema(
        request=ScheduleInput, responses=ScheduleOutput, operation_id="schedules_replace", tags=["schedules"]
    )
    def put(self, request, schedule_id):
        schedule = get_object_or_404(TaskSchedule, pk=schedule_id)
        return Response(ScheduleOutput(_save(request, schedule)).data)

    @extend_schema(request=None, responses={204: None}, operation_id="schedules_delete", tags=["schedules"])
    def delete(self, request, schedule_id):
        schedules.schedule_delete(schedule=get_object_or_404(TaskSchedule, pk=schedule_id))
        return Response(status=status.HTTP_204_NO_CONTENT)

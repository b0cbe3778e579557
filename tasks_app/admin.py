from django import forms
from django.contrib import admin
from django.db.models import Exists, OuterRef

from agentvine.admin_tools import FastAdmin, ProtectActiveMixin, service_action
from agentvine.errors import ValidationFailed
from queue_app.models import ACTIVE_STATUSES, Execution, WorkOrder, WorkOrderStatus
from tasks_app import schedule_admin, services  # noqa: F401  (schedule_admin registers the schedules)
from tasks_app.models import Task, TaskReview
from tasks_app.repositories import repository_url_check

READ_ONLY_STATE = ("status", "created_at", "updated_at", "completed_at")


class WorkOrderInline(admin.TabularInline):
    model = WorkOrder
    fields = ("kind", "status", "priority", "worker", "retry_count", "max_retries", "enqueued_at", "last_error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


class ExecutionInline(admin.TabularInline):
    model = Execution
    fields = ("attempt", "status", "worker", "started_at", "completed_at", "exit_code", "cost_usd")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-started_at",)

    def has_add_permission(self, request, obj=None):
        return False


class TaskAdminForm(forms.ModelForm):
    class Meta:
        model = Task
        fields = ("title", "description", "task_type", "executor", "repository_url", "branch_name")

    def clean_repository_url(self):
        # The same policy as task creation (tasks_app/repositories.py).
        url = self.cleaned_data["repository_url"]
        try:
            repository_url_check(url)
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.message) from None
        return url


@admin.register(Task)
class TaskAdmin(ProtectActiveMixin, FastAdmin):
    form = TaskAdminForm
    active_filter = Exists(
        WorkOrder.objects.filter(task=OuterRef("pk"), status__in=[WorkOrderStatus.QUEUED, *ACTIVE_STATUSES])
    )
    list_display = ("title", "task_type", "status", "priority", "executor", "created_by", "created_at")
    list_filter = ("status", "review_status", "task_type", "priority")
    search_fields = ("search_text__title", "search_text__description", "search_text__repository_url")
    list_select_related = ("created_by",)
    # The budget is set through the service (the task page or the API), which resumes a paused task.
    readonly_fields = READ_ONLY_STATE + ("priority", "created_by", "budget_usd", "concurrency_key")
    fields = (
        "title",
        "description",
        "task_type",
        "priority",
        "executor",
        "repository_url",
        "branch_name",
        "created_by",
        "budget_usd",
        "concurrency_key",
    ) + READ_ONLY_STATE
    inlines = [WorkOrderInline, ExecutionInline]
    date_hierarchy = None
    actions = [
        service_action("Cancel tasks", lambda task, request: services.task_cancel(task=task), "tasks cancelled"),
        service_action("Retry tasks", lambda task, request: services.task_retry(task=task), "tasks queued again"),
        service_action(
            "Raise to high priority",
            lambda task, request: services.task_set_priority(task=task, priority="high"),
            "tasks raised",
        ),
        service_action(
            "Lower to low priority",
            lambda task, request: services.task_set_priority(task=task, priority="low"),
            "tasks lowered",
        ),
    ]

    def has_add_permission(self, request):
        # Tasks are created through task_create (the console form or the API)
        # so their first work order is always enqueued and dispatched.
        return False

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        services.task_search_text_save(task=obj)


@admin.register(TaskReview)
class TaskReviewAdmin(FastAdmin):
    """The review log: decisions are made on the task page or through the API."""

    list_display = ("task", "action", "outcome", "by", "base_branch", "created_at")
    list_filter = ("action", "outcome")
    list_select_related = ("task", "by")
    readonly_fields = (
        "task", "action", "comment", "by", "head_commit", "outcome", "base_branch",
        "result_commit", "conflicts", "pushed", "pull_request_url", "created_at",
    )  # fmt: skip
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

from django.contrib import admin
from django.db.models import Q

from agentvine.admin_tools import FastAdmin, ProtectActiveMixin, ReadOnlyAdmin, service_action
from queue_app import lifecycle, rate_limits
from queue_app.models import (
    ACTIVE_STATUSES,
    AgentToken,
    ConcurrencyKeyPause,
    ConcurrencyLimit,
    Execution,
    SpendDay,
    WorkOrder,
    WorkOrderStatus,
)


@admin.register(WorkOrder)
class WorkOrderAdmin(ProtectActiveMixin, FastAdmin):
    active_filter = Q(status__in=[WorkOrderStatus.QUEUED, *ACTIVE_STATUSES])
    list_display = ("id", "task", "kind", "status", "priority", "worker", "retry_count", "enqueued_at", "updated_at")
    list_filter = ("status", "priority", "kind")
    search_fields = ("=id", "task__title")
    list_select_related = ("task", "worker")
    ordering = ("-enqueued_at",)
    readonly_fields = [f.name for f in WorkOrder._meta.fields]
    actions = [
        service_action(
            "Cancel work orders",
            lambda wo, request: lifecycle.work_order_cancel(work_order=wo),
            "work orders cancelled",
        ),
        service_action(
            "Requeue active work orders",
            lambda wo, request: lifecycle.work_order_requeue(
                work_order=wo, reason=f"requeued by {request.user.username}"
            ),
            "work orders requeued",
        ),
        service_action(
            "Retry failed work orders",
            lambda wo, request: lifecycle.work_order_retry(work_order=wo),
            "work orders queued again",
        ),
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Execution)
class ExecutionAdmin(FastAdmin):
    list_display = ("task", "attempt", "status", "worker", "started_at", "completed_at", "exit_code", "cost_usd")
    list_filter = ("status",)
    search_fields = ("task__search_text__title",)
    list_select_related = ("task", "worker")
    readonly_fields = [f.name for f in Execution._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AgentToken)
class AgentTokenAdmin(admin.ModelAdmin):
    # The token itself is never stored; the hash is useless to an attacker.
    list_display = ("work_order", "created_at", "revoked_at")
    readonly_fields = ("token_hash",)
    raw_id_fields = ("work_order", "execution")


@admin.register(ConcurrencyKeyPause)
class ConcurrencyKeyPauseAdmin(ReadOnlyAdmin):
    """Keys paused by a provider's rate limit (queue_app.rate_limits)."""

    list_display = ("key", "paused_until", "reason", "strikes", "updated_at")
    ordering = ("-paused_until",)
    actions = [
        service_action(
            "Lift the pause now",
            lambda pause, request: rate_limits.key_pause_lift(key=pause.key, by=request.user.username),
            "keys resumed",
        )
    ]


@admin.register(ConcurrencyLimit)
class ConcurrencyLimitAdmin(ReadOnlyAdmin):
    """Keys with a limit and their seats taken (queue_app.concurrency); limits come from the settings."""

    list_display = ("key", "running", "max_running")
    ordering = ("key",)


@admin.register(SpendDay)
class SpendDayAdmin(ReadOnlyAdmin):
    """Spend per day, operator, executor and repository (queue_app.budgets)."""

    list_display = ("day", "operator_id", "executor", "repository", "cost_usd", "runs")
    list_filter = ("day",)
    ordering = ("-day", "-cost_usd")

from django.contrib import admin
from django.db.models import Q

from agentvine.admin_tools import FastAdmin, ProtectActiveMixin, service_action
from queue_app import services
from queue_app.models import ACTIVE_STATUSES, WorkOrder, WorkOrderStatus


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
            "Cancel work orders", lambda wo, request: services.work_order_cancel(work_order=wo), "work orders cancelled"
        ),
        service_action(
            "Requeue active work orders",
            lambda wo, request: services.work_order_requeue(
                work_order=wo, reason=f"requeued by {request.user.username}", spend_retry=False
            ),
            "work orders requeued",
        ),
        service_action(
            "Retry failed work orders",
            lambda wo, request: services.work_order_retry(work_order=wo),
            "work orders queued again",
        ),
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

from django.contrib import admin

from agentvine.admin_tools import FastAdmin, service_action
from workers_app import services
from workers_app.models import AgentSession, Worker


@admin.register(Worker)
class WorkerAdmin(FastAdmin):
    list_display = ("name", "hostname", "status", "last_heartbeat_at", "current_work_order", "updated_at")
    list_filter = ("status",)
    search_fields = ("name", "hostname")
    list_select_related = ("current_work_order",)
    readonly_fields = (
        "name",
        "hostname",
        "pid",
        "status",
        "last_heartbeat_at",
        "current_work_order",
        "created_at",
        "updated_at",
    )
    actions = [
        service_action(
            "Mark workers offline",
            lambda worker, request: services.worker_mark_offline(
                worker=worker, reason=f"marked offline by {request.user.username}"
            ),
            "workers marked offline",
        ),
    ]

    def has_add_permission(self, request):
        return False


@admin.register(AgentSession)
class AgentSessionAdmin(FastAdmin):
    list_display = ("session_id", "task", "worker", "status", "last_activity_at", "created_at")
    list_filter = ("status",)
    search_fields = ("session_id", "task__title")
    list_select_related = ("task", "worker")
    readonly_fields = (
        "session_id",
        "task",
        "worker",
        "status",
        "last_activity_at",
        "created_at",
        "terminated_at",
        "termination_reason",
    )

    def has_add_permission(self, request):
        return False


# Operators' and workers' tokens (registered there).
from workers_app import token_admin  # noqa: E402,F401

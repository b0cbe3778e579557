from django.contrib import admin

from workers_app.models import AgentSession, Worker


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("name", "hostname", "status", "last_heartbeat_at", "current_work_order")
    list_filter = ("status",)
    search_fields = ("name", "hostname")
    readonly_fields = ("status", "last_heartbeat_at", "created_at", "updated_at")


@admin.register(AgentSession)
class AgentSessionAdmin(admin.ModelAdmin):
    list_display = ("session_id", "task", "worker", "status", "last_activity_at", "created_at")
    list_filter = ("status",)
    search_fields = ("session_id",)
    readonly_fields = ("status", "created_at", "terminated_at", "termination_reason")

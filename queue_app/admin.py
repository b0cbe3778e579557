from django.contrib import admin

from queue_app.models import WorkOrder


@admin.register(WorkOrder)
class WorkOrderAdmin(admin.ModelAdmin):
    list_display = ("id", "task", "kind", "status", "priority", "worker", "retry_count", "enqueued_at")
    list_filter = ("status", "priority", "kind")
    readonly_fields = [f.name for f in WorkOrder._meta.fields]

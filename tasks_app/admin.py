from django.contrib import admin

from tasks_app.models import Execution, Task


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("title", "task_type", "status", "priority", "created_at")
    list_filter = ("status", "task_type", "priority")
    search_fields = ("title", "description")
    readonly_fields = ("status", "created_at", "updated_at", "completed_at")


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ("task", "attempt", "status", "worker", "started_at", "completed_at", "exit_code")
    list_filter = ("status",)
    readonly_fields = [f.name for f in Execution._meta.fields]

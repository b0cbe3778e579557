"""Admin building blocks: fast changelists on big tables and service-backed actions."""

from django.contrib import admin, messages

from agentvine.errors import DomainError
from agentvine.pagination import BigTablePaginator


class FastAdmin(admin.ModelAdmin):
    paginator = BigTablePaginator
    show_full_result_count = False
    list_per_page = 50


def service_action(description, call, success):
    """An admin action that applies a service to each selected row.

    Rows whose state forbids the change are reported, never forced.
    """

    def action(modeladmin, request, queryset):
        done, refused = 0, []
        for obj in queryset:
            try:
                call(obj, request)
                done += 1
            except DomainError as exc:
                refused.append(f"{obj}: {exc.message}")
        if done:
            modeladmin.message_user(request, f"{done} {success}.", messages.SUCCESS)
        for line in refused[:20]:
            modeladmin.message_user(request, line, messages.WARNING)

    action.short_description = description
    action.__name__ = description.lower().replace(" ", "_")
    return action

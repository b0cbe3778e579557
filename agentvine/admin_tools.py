"""Admin building blocks: fast changelists on big tables and service-backed actions."""

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection
from django.utils.functional import cached_property

from agentvine.errors import DomainError


class EstimatedCountPaginator(Paginator):
    """Unfiltered changelists of big tables use Postgres' row estimate.

    ``SELECT COUNT(*)`` over millions of rows costs seconds on every page
    view; the planner's estimate is free and close enough for a pager.
    """

    ESTIMATE_ABOVE = 20_000

    @cached_property
    def count(self):
        query = self.object_list.query
        if connection.vendor == "postgresql" and not query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [self.object_list.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] > self.ESTIMATE_ABOVE:
                return int(row[0])
        return super().count


class FastAdmin(admin.ModelAdmin):
    paginator = EstimatedCountPaginator
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

"""Admin building blocks: fast changelists on big tables and service-backed actions."""

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.shortcuts import redirect
from django.urls import reverse

from agentvine.errors import DomainError
from agentvine.pagination import BigTablePaginator


class FastAdmin(admin.ModelAdmin):
    paginator = BigTablePaginator
    show_full_result_count = False
    list_per_page = 50


class ReadOnlyAdmin(FastAdmin):
    """A changelist to read: rows are written by the platform (services,
    triggers), never by hand in the admin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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


ERR_DELETE_ACTIVE = "{obj} is still queued or running: cancel it first, then delete it"


class ProtectActiveMixin:
    """Refuses to delete rows that are still live (``active_filter``, a Q or
    expression for ``filter()``): a worker running their work would crash on
    the missing row and its slot would stay busy. The admin says to cancel
    first, in the delete view and in the "delete selected" action alike.
    """

    active_filter = None

    def _active(self, queryset):
        return queryset.filter(self.active_filter)

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and self._active(self.model._default_manager.filter(pk=obj.pk)).exists():
            self.message_user(request, ERR_DELETE_ACTIVE.format(obj=obj), messages.ERROR)
            opts = self.model._meta
            return redirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            delete_selected, name, description = actions["delete_selected"]

            def delete_inactive(modeladmin, request, queryset):
                active = list(self._active(queryset)[:20])
                for obj in active:
                    modeladmin.message_user(request, ERR_DELETE_ACTIVE.format(obj=obj), messages.ERROR)
                rest = queryset.exclude(pk__in=[obj.pk for obj in active])
                if active and not rest.exists():
                    return None
                return delete_selected(modeladmin, request, rest)

            actions["delete_selected"] = (delete_inactive, name, description)
        return actions

    def delete_queryset(self, request, queryset):
        # Checked again at the moment of deleting: the confirmation page may be old.
        super().delete_queryset(request, queryset.exclude(pk__in=self._active(queryset).values("pk")))

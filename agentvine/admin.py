from django.contrib import admin

from agentvine.admin_tools import FastAdmin
from agentvine.models import LiveEvent


@admin.register(LiveEvent)
class LiveEventAdmin(FastAdmin):
    ordering = ("-id",)
    list_display = ("id", "type", "groups", "created_at")
    search_fields = ("type", "groups")

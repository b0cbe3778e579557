from django.contrib import admin

from agentvine.admin_tools import FastAdmin
from chat_app.models import AgentToken, ChatMessage, Conversation, LiveEvent, SenderProfile


@admin.register(ChatMessage)
class ChatMessageAdmin(FastAdmin):
    ordering = ("-created_at",)
    list_display = ("created_at", "conversation_id", "kind", "sender", "recipient", "status", "inbox_position")
    list_filter = ("kind", "status", "sender__kind")
    search_fields = ("text", "sender__display_name", "sender__discord_username", "conversation__id")
    list_select_related = ("sender", "recipient")
    raw_id_fields = ("conversation", "sender", "recipient", "task", "work_order", "execution", "parent_message")
    readonly_fields = ("created_at", "queued_at", "delivered_at", "failed_at", "answered_at")


@admin.register(SenderProfile)
class SenderProfileAdmin(FastAdmin):
    list_display = ("display_name", "kind", "key", "discord_username", "discord_user_id")
    list_filter = ("kind",)
    search_fields = ("display_name", "key", "discord_username", "discord_user_id")
    raw_id_fields = ("user", "task")


@admin.register(Conversation)
class ConversationAdmin(FastAdmin):
    list_display = ("id", "title", "unread_count", "last_message_at")
    search_fields = ("id", "title")
    raw_id_fields = ("task",)


@admin.register(LiveEvent)
class LiveEventAdmin(FastAdmin):
    ordering = ("-id",)
    list_display = ("id", "type", "groups", "created_at")
    search_fields = ("type", "groups")


@admin.register(AgentToken)
class AgentTokenAdmin(admin.ModelAdmin):
    # The token itself is never stored; the hash is useless to an attacker.
    list_display = ("work_order", "created_at", "revoked_at")
    readonly_fields = ("token_hash",)
    raw_id_fields = ("work_order", "execution")

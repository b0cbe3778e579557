from django.contrib import admin

from chat_app.models import ChatMessage


@admin.register(ChatMessage)
class ChatMessageAdmin(admin.ModelAdmin):
    list_display = ("conversation_id", "sender_type", "sender_id", "message_type", "created_at")
    list_filter = ("sender_type", "message_type")
    search_fields = ("message", "sender_id", "conversation_id")
    readonly_fields = ("created_at",)

from django import forms
from django.contrib import admin
from django.db.models import Q
from django.utils.text import smart_split, unescape_string_literal

from agentvine.admin_tools import FastAdmin
from chat_app import notifications
from chat_app.models import (
    ChatMessage,
    Conversation,
    NotificationChannel,
    NotificationDelivery,
    NotificationEvent,
    SenderProfile,
)


@admin.register(ChatMessage)
class ChatMessageAdmin(FastAdmin):
    ordering = ("-created_at",)
    list_display = ("created_at", "conversation_id", "kind", "sender", "recipient", "status", "inbox_position")
    list_filter = ("kind", "status", "sender__kind")
    search_fields = ("text", "sender__display_name", "sender__discord_username", "=conversation__id")
    search_help_text = "Words of the text, a sender's name or Discord username, or a conversation id."
    list_select_related = ("sender", "recipient")
    raw_id_fields = ("conversation", "sender", "recipient", "task", "work_order", "execution", "parent_message")
    readonly_fields = ("created_at", "queued_at", "delivered_at", "failed_at", "answered_at")
    # Senders matched per word; a word matching more names than this is a
    # text search only.
    MAX_SENDERS_PER_WORD = 500

    def get_search_results(self, request, queryset, search_term):
        """Each word must match the text, a sender or the conversation id.

        Django's default joins the sender table into one OR, which no index
        can answer, so a search reads every message. Here the senders a word
        names are looked up first and the message condition stays on its own
        table: the text trigram index, the sender and the conversation indexes
        combine in one bitmap scan.
        """
        for word in smart_split(search_term):
            if word[0] in "\"'" and word[0] == word[-1]:
                word = unescape_string_literal(word)
            senders = list(
                SenderProfile.objects.filter(
                    Q(display_name__icontains=word) | Q(discord_username__icontains=word)
                ).values_list("pk", flat=True)[: self.MAX_SENDERS_PER_WORD + 1]
            )
            match = Q(text__icontains=word) | Q(conversation_id=word)
            if 0 < len(senders) <= self.MAX_SENDERS_PER_WORD:
                match |= Q(sender_id__in=senders)
            queryset = queryset.filter(match)
        return queryset, False


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


class NotificationChannelForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=NotificationEvent.choices, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = NotificationChannel
        fields = ("owner", "name", "kind", "target", "events", "enabled")


@admin.register(NotificationChannel)
class NotificationChannelAdmin(FastAdmin):
    form = NotificationChannelForm
    list_display = ("name", "owner", "kind", "target", "events", "enabled", "created_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "target", "owner__username")
    raw_id_fields = ("owner",)
    readonly_fields = ("secret",)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        notifications.subscriptions_changed()


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(FastAdmin):
    """The delivery log: every attempt with its response code or error."""

    list_display = ("created_at", "channel", "event", "status", "attempts", "last_status_code", "last_error")
    list_filter = ("status", "event", "channel__kind")
    list_select_related = ("channel",)
    readonly_fields = [field.name for field in NotificationDelivery._meta.fields] + ["log"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

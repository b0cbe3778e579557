"""Operators' and workers' API tokens in the admin: listed by prefix, owner
and dates, revocable; the secret itself was shown once when it was made and
only its hash is stored, so the admin has nothing to show. Tokens are made
through the API or ``manage.py api_token_create``, never here."""

from django.contrib import admin
from django.utils import timezone

from agentvine.admin_tools import ReadOnlyAdmin, service_action
from workers_app import services
from workers_app.models import ApiToken, WorkerToken


def worker_token_revoke(*, token):
    """Revoke one worker token (compare-and-set: an already revoked one keeps its date)."""
    WorkerToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


class TokenAdmin(ReadOnlyAdmin):
    # Revoked, not deleted: the row says who had access and until when.
    exclude = ("key_hash",)
    ordering = ("-created_at",)


@admin.register(ApiToken)
class ApiTokenAdmin(TokenAdmin):
    list_display = ("prefix", "user", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "user__username")
    list_select_related = ("user",)
    actions = [
        service_action("Revoke tokens", lambda token, request: services.api_token_revoke(token=token), "tokens revoked")
    ]


@admin.register(WorkerToken)
class WorkerTokenAdmin(TokenAdmin):
    # A worker token's last use is its worker's last heartbeat.
    list_display = ("prefix", "worker", "created_at", "worker_last_heartbeat", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "worker__name")
    list_select_related = ("worker",)
    actions = [
        service_action("Revoke tokens", lambda token, request: worker_token_revoke(token=token), "tokens revoked")
    ]

    @admin.display(description="last used (heartbeat)")
    def worker_last_heartbeat(self, token):
        return token.worker.last_heartbeat_at

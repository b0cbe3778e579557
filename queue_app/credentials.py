"""Per-run agent tokens: what lets one running attempt's agent call the API.

A token is issued with the run's start (its INSERT rides in the start's
statement), names its execution, and stops working when that execution ends:
revocation is by execution, never by work order, so a stale run of a work
order (its worker cut off, the work requeued and running elsewhere) can never
revoke the token of the run that replaced it. Only a SHA-256 of the token is
stored; the token itself lives in the agent's environment for one run.
"""

import hashlib
import secrets

from django.utils import timezone

from agentvine.db import insert_sql, update_sql
from queue_app.models import ACTIVE_STATUSES, AgentToken, ExecutionStatus


def _token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def agent_token_new(*, work_order, execution):
    """A fresh secret for the run ``execution`` of ``work_order`` and the
    INSERT of its hash (a change for ``events.publish``, written with the
    run's start)."""
    token = secrets.token_urlsafe(32)
    row = AgentToken(work_order=work_order, execution=execution, token_hash=_token_hash(token))
    return token, insert_sql(row)


def agent_token_issue(*, work_order, execution):
    """A fresh secret for the run ``execution``; only its hash is stored."""
    token = secrets.token_urlsafe(32)
    AgentToken.objects.create(work_order=work_order, execution=execution, token_hash=_token_hash(token))
    return token


def agent_token_revoke_sql(*, execution_id, now):
    """Revoking the tokens of the run ``execution_id``, as a change written with its end."""
    return update_sql(AgentToken, {"execution_id": execution_id, "revoked_at__isnull": True}, revoked_at=now)


def agent_token_revoke(*, execution):
    """The run ``execution`` is over: its tokens stop working."""
    AgentToken.objects.filter(execution_id=execution.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def agent_token_resolve(*, token):
    """The live token row for ``token``, or None: its work order is still
    active and the run it was issued to is still running (a requeued order's
    next run does not inherit it)."""
    if not token:
        return None
    row = (
        AgentToken.objects.select_related("work_order", "work_order__task", "execution")
        .filter(token_hash=_token_hash(token), revoked_at__isnull=True)
        .first()
    )
    if row is None or row.work_order.status not in ACTIVE_STATUSES:
        return None
    if row.execution is not None and row.execution.status != ExecutionStatus.RUNNING:
        return None
    return row

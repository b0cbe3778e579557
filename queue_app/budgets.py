"""Budgets: what agents may spend, per task, per operator per day, and in all per day.

Spend is what runs report (``Execution.cost_usd``, increments of each
agent's usage), counted on the day a run started (``TIME_ZONE``'s days).

- **A task's budget** (``Task.budget_usd``; a new task gets its type's
  default, ``AGENTVINE_TASK_BUDGET_USD``): once its runs have spent it, no run
  of it starts, and a run that crosses it is interrupted cooperatively (its
  output and changes kept, no retry spent). The task is then
  ``paused_budget`` with the reason on its work order, or fails when
  ``AGENTVINE_BUDGET_EXCEEDED`` is ``fail``. Raising the budget above what
  was spent puts the paused work back in the queue in its old place, and it
  resumes in its agent's session. Claude runs also get ``--max-budget-usd``
  for what is left, so the CLI itself stops at the line between two turns.
- **Per operator per day** (``AGENTVINE_OPERATOR_DAILY_BUDGET_USD``, the
  task's creator) and **for everyone per day**
  (``AGENTVINE_DAILY_BUDGET_USD``): work that would pass one waits queued,
  in its place, until the next day starts (``not_before``); a run that
  crosses one is interrupted the same way and waits too.

The checks are made when a run is claimed (before its agent starts) and
each time a run reports usage; with no budget set anywhere they cost nothing
(no query). A task budget reads the sum of the task's runs; the daily budgets
read today's rows of :class:`~queue_app.models.SpendDay`, the spend per day,
operator, executor and repository that every usage report adds to
(``queue_app.outputs``), as do the spend pages.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from agentvine.errors import ValidationFailed
from queue_app.models import Execution, SpendDay
from tasks_app.models import TaskType

ERR_BAD_DEFAULTS = (
    "AGENTVINE_TASK_BUDGET_USD must be a dollar figure or type=figure pairs (feature=5,docs=1,default=2), not {value!r}"
)
ERR_BAD_BUDGET = "a budget is a dollar figure of at least 0 (or null for none)"

# The groups of :func:`spend_by_every_group`.
SPEND_GROUPS = ("day", "operator", "executor", "repository")
ZERO = Decimal("0")


@dataclass(frozen=True)
class Refusal:
    """Why a run may not go on: ``scope`` is ``task``, ``operator`` or
    ``global``; a daily budget's ``until`` is when the next day starts."""

    scope: str
    reason: str
    until: datetime | None = None


@cache
def _defaults(text):
    text = (text or "").strip()
    if not text:
        return {}
    try:
        if "=" not in text:
            return {"default": _dollars(text)}
        pairs = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in (*TaskType.values, "default"):
                raise ValueError(name)
            pairs[name] = _dollars(value)
        return pairs
    except (ValueError, InvalidOperation) as exc:
        raise ValueError(ERR_BAD_DEFAULTS.format(value=text)) from exc


def _dollars(text):
    value = Decimal(str(text).strip())
    if not value.is_finite() or value < 0:
        raise ValueError(text)
    return value


def task_budget_default_check(text):
    """ValueError, naming the setting, unless ``text`` is a valid
    AGENTVINE_TASK_BUDGET_USD."""
    _defaults(text)


def task_budget_default(task_type):
    """A new task's budget when none is given: its type's, or None."""
    defaults = _defaults(settings.AGENTVINE_TASK_BUDGET_USD)
    return defaults.get(task_type, defaults.get("default"))


def budget_clean(value):
    """A budget as given over the API or the CLI: a Decimal, or None for none.
    Raises ValidationFailed for anything else."""
    if value is None or value == "":
        return None
    try:
        budget = _dollars(value)
    except (ValueError, InvalidOperation, TypeError) as exc:
        raise ValidationFailed(ERR_BAD_BUDGET, field="budget_usd") from exc
    if budget >= Decimal("1e8"):
        raise ValidationFailed(ERR_BAD_BUDGET, field="budget_usd")
    return budget.quantize(Decimal("0.0001"))


def day_start(now=None):
    """When the day of ``now`` began (TIME_ZONE's midnight)."""
    local = timezone.localtime(now or timezone.now())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def next_day(now=None):
    return day_start(day_start(now) + timedelta(days=1, hours=3))


def _limits(task):
    operator = settings.AGENTVINE_OPERATOR_DAILY_BUDGET_USD if task.created_by_id else None
    everyone = settings.AGENTVINE_DAILY_BUDGET_USD
    return task.budget_usd, operator, everyone


def applies(task):
    """Whether any budget bounds ``task``'s runs (no query)."""
    return any(limit is not None for limit in _limits(task))


def dollars_read(value):
    """A sum of ``cost_usd`` as a raw query returns it (SQLite: a float)."""
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


def spent(task, *, now=None, task_spent=None):
    """``(task's spend, its operator's today, everyone's today)``; a figure
    no budget asks for is None. One read per kind of budget: the task's runs
    (none when the caller read them just now: ``task_spent``, as the claim
    does), and today's spend rows (:class:`~queue_app.models.SpendDay`)."""
    budget, operator, everyone = _limits(task)
    operator_spent = everyone_spent = None
    if budget is None:
        task_spent = None
    elif task_spent is None:
        task_spent = Execution.objects.filter(task_id=task.pk).aggregate(spent=Coalesce(Sum("cost_usd"), ZERO))["spent"]
    if operator is not None or everyone is not None:
        today = SpendDay.objects.filter(day=day_start(now).date()).aggregate(
            operator=Coalesce(Sum("cost_usd", filter=Q(operator_id=task.created_by_id or 0)), ZERO),
            everyone=Coalesce(Sum("cost_usd"), ZERO),
        )
        operator_spent, everyone_spent = today["operator"], today["everyone"]
    return task_spent, operator_spent, everyone_spent


def refusal(task, *, now=None, task_spent=None):
    """Why no run of ``task`` may go on now (a :class:`Refusal`), or None.
    ``task_spent``: what its runs spent, when the caller has just read it."""
    if not applies(task):
        return None
    now = now or timezone.now()
    budget, operator, everyone = _limits(task)
    task_spent, operator_spent, everyone_spent = spent(task, now=now, task_spent=task_spent)
    if budget is not None and task_spent >= budget:
        return Refusal("task", f"budget ${budget:.2f} spent (${task_spent:.4f})")
    if operator is not None and operator_spent >= Decimal(str(operator)):
        return Refusal(
            "operator",
            f"operator's daily budget ${operator:.2f} spent (${operator_spent:.4f}); waits for the next day",
            next_day(now),
        )
    if everyone is not None and everyone_spent >= Decimal(str(everyone)):
        return Refusal(
            "global",
            f"daily budget ${everyone:.2f} spent (${everyone_spent:.4f}); waits for the next day",
            next_day(now),
        )
    return None


def remaining(task, *, now=None, task_spent=None):
    """What ``task``'s next run may spend before some budget stops it, or None
    without a budget (``--max-budget-usd`` for claude)."""
    if not applies(task):
        return None
    left = []
    for limit, used in zip(_limits(task), spent(task, now=now, task_spent=task_spent), strict=True):
        if limit is not None:
            left.append(max(Decimal(str(limit)) - used, ZERO))
    return min(left)


def spend_by_every_group(*, days=7, now=None):
    """What runs that started in the last ``days`` days (today included)
    spent, per group of :data:`SPEND_GROUPS`: ``{group: [{key, cost_usd,
    runs, input_tokens, output_tokens}]}``, the most expensive first (by
    day: the newest first). From the spend rows of those days (a row per
    day, operator, executor and repository: a few hundred for a busy week,
    whatever the number of runs)."""
    since = day_start(now).date() - timedelta(days=days - 1)
    rows = list(SpendDay.objects.filter(day__gte=since))
    usernames = dict(
        get_user_model().objects.filter(pk__in={row.operator_id for row in rows}).values_list("pk", "username")
    )
    default_executor = settings.AGENTVINE_DEFAULT_EXECUTOR
    merged = {group: {} for group in SPEND_GROUPS}
    for row in rows:
        keys = {
            "day": row.day.isoformat(),
            "operator": usernames.get(row.operator_id, ""),
            "executor": row.executor or default_executor,  # no profile named: the default one ran
            "repository": row.repository,
        }
        for group, key in keys.items():
            into = merged[group].setdefault(
                key, {"key": key, "cost_usd": ZERO, "runs": 0, "input_tokens": 0, "output_tokens": 0}
            )
            into["cost_usd"] += row.cost_usd
            into["runs"] += row.runs
            into["input_tokens"] += row.input_tokens
            into["output_tokens"] += row.output_tokens
    result = {}
    for group, keyed in merged.items():
        if group == "day":
            result[group] = sorted(keyed.values(), key=lambda row: row["key"], reverse=True)
        else:
            result[group] = sorted(keyed.values(), key=lambda row: (-row["cost_usd"], row["key"]))
    return result


def spent_today(*, now=None):
    """What every run that started today spent."""
    return SpendDay.objects.filter(day=day_start(now).date()).aggregate(spent=Coalesce(Sum("cost_usd"), ZERO))["spent"]

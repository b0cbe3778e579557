from django.apps import AppConfig


class Config(AppConfig):
    name = "queue_app"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # A malformed AGENTVINE_TASK_BUDGET_USD stops every process at start,
        # not the first task creation.
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        from queue_app import budgets

        try:
            budgets.task_budget_default_check(settings.AGENTVINE_TASK_BUDGET_USD)
        except ValueError as exc:
            raise ImproperlyConfigured(str(exc)) from None

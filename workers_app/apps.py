from django.apps import AppConfig


class Config(AppConfig):
    name = "workers_app"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Celery worker signals must be connected before the pool forks.
        from workers_app import slots  # noqa: F401

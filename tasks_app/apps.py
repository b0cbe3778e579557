from django.apps import AppConfig


class Config(AppConfig):
    name = "tasks_app"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here, not at the top: models are not loaded when the app
        # registry imports this module.
        from queue_app.lifecycle import run_task_finished
        from tasks_app.graph import dependants_on_run_finished
        from tasks_app.schedules import schedules_on_run_finished

        run_task_finished.connect(dependants_on_run_finished, dispatch_uid="tasks_app.dependants")
        run_task_finished.connect(schedules_on_run_finished, dispatch_uid="tasks_app.schedules")

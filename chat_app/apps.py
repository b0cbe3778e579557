from django.apps import AppConfig


class Config(AppConfig):
    name = "chat_app"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here, not at the top: models are not loaded when the app
        # registry imports this module.
        from chat_app import notifications
        from chat_app.services import questions_close_on_run_end, turn_messages_on_attempt_failed
        from chat_app.subtasks import subtasks_on_run_finished
        from queue_app.lifecycle import attempt_failed, run_ended, run_task_finished, work_order_completed

        attempt_failed.connect(turn_messages_on_attempt_failed, dispatch_uid="chat_app.turn_messages")
        run_ended.connect(questions_close_on_run_end, dispatch_uid="chat_app.questions_close")
        run_task_finished.connect(subtasks_on_run_finished, dispatch_uid="chat_app.subtasks_resume")
        attempt_failed.connect(notifications.on_attempt_failed, dispatch_uid="chat_app.notify_failed")
        work_order_completed.connect(notifications.on_work_order_completed, dispatch_uid="chat_app.notify_completed")

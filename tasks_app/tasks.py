"""Beat entry point of task schedules (routed to the ``guardians`` queue):
thin, the logic lives in tasks_app/schedules.py."""

from celery import shared_task

from tasks_app import schedules


@shared_task(name=schedules.TICK_TASK, ignore_result=True)
def schedule_tick(schedule_id):
    task = schedules.schedule_tick(schedule_id=schedule_id)
    return {"created": str(task.pk) if task else None}

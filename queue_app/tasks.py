from celery import shared_task

from workers_app.runner import work_order_run


@shared_task(name="queue_app.execute_work_order", ignore_result=True)
def execute_work_order(work_order_id):
    """Doorbell for one work order: safe to deliver twice, late, or never."""
    return work_order_run(work_order_id=work_order_id)

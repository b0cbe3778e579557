import os

from celery import Celery, signals

from agentvine.security import process_protect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentvine.settings")

app = Celery("agentvine")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.beat_init.connect
def _protect_worker(**kwargs):
    # Before the pool forks: every slot inherits it, and the agents they
    # start cannot read the worker's environment or memory (agentvine/security.py).
    process_protect()


@signals.celeryd_after_setup.connect
def _declare_rabbitmq_queues(**kwargs):
    # On RabbitMQ every configured queue and its topic exchange exist before
    # the consumer starts: Celery binds all of them, consumed here or not (a
    # worker on high,default,low also binds "guardians"), to its delayed-delivery
    # exchanges for a retry's backoff (agentvine/brokers.py).
    from agentvine.brokers import broker_is_amqp

    if not broker_is_amqp(app.conf.broker_url):
        return
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.amqp.queues.values():
            queue(channel).declare()


# --- Logs (agentvine/logging.py): Celery sets up its own handlers; ours
# only change their format and demote the guardians' routine ticks. --------
@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _configure_log_handlers(logger=None, **kwargs):
    from django.conf import settings

    from agentvine.logging import configure_handlers

    configure_handlers(logger.handlers, json_format=settings.AGENTVINE_LOG_FORMAT == "json")


@signals.task_prerun.connect
def _bind_task_log_context(task_id=None, task=None, args=None, kwargs=None, **extra):
    from agentvine.logging import task_context_enter

    task_context_enter(task_id=task_id, task=task, args=args or (), kwargs=kwargs or {})


@signals.task_postrun.connect
def _unbind_task_log_context(task_id=None, **extra):
    from agentvine.logging import task_context_leave

    task_context_leave(task_id=task_id)


# --- Metrics (agentvine/metrics.py): what a guardian found is recorded
# nowhere else. --------------------------------------------------------------
@signals.task_postrun.connect
def _count_guardian_findings(task=None, retval=None, state=None, **extra):
    name = getattr(task, "name", "")
    if state == "SUCCESS" and name.startswith("workers_app.guard_"):
        from agentvine.metrics import count_guardian_findings

        count_guardian_findings(task_name=name, result=retval)


@signals.worker_ready.connect
def _serve_worker_metrics(**extra):
    # In the main process once the pool is up: the server thread is not
    # forked into the slots.
    from agentvine.metrics import worker_metrics_serve

    worker_metrics_serve()


# --- Traces (agentvine/tracing.py): off unless OTEL_EXPORTER_OTLP_ENDPOINT is set;
# a doorbell carries its dispatch's context to the slot that runs it. ----------
@signals.before_task_publish.connect
def _trace_doorbell_publishing(sender=None, headers=None, body=None, **extra):
    from agentvine import tracing

    tracing.doorbell_publishing(task_name=sender, headers=headers, body=body)


@signals.after_task_publish.connect
def _trace_doorbell_published(headers=None, **extra):
    from agentvine import tracing

    tracing.doorbell_published(headers=headers)


@signals.task_prerun.connect
def _trace_doorbell_received(task_id=None, task=None, args=None, kwargs=None, **extra):
    from agentvine import tracing

    tracing.doorbell_received(task_id=task_id, task=task, args=args or (), kwargs=kwargs or {})


@signals.task_postrun.connect
def _trace_doorbell_done(task_id=None, task=None, args=None, kwargs=None, state=None, **extra):
    from agentvine import tracing

    tracing.doorbell_done(task_id=task_id, task=task, args=args or (), kwargs=kwargs or {}, state=state)


# --- Beat's liveness (agentvine/health.py, manage.py beat_ping) -----------------
@signals.beat_init.connect
def _note_beat_started(**extra):
    from agentvine import health

    health.beat_started()


@signals.after_task_publish.connect
def _note_beat_sent(**extra):
    from agentvine import health

    health.beat_sent()

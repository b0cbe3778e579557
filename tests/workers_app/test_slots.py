"""A Celery pool process registering its slot (workers_app.slots)."""

import pytest
from django.db import connection, connections

from workers_app import slots
from workers_app.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fresh_slot_state():
    saved = dict(slots._state)
    # A slot's init switches this process's connections to generic plans
    # (slots.use_generic_plans): the pytest process must get its own back.
    options = {alias: dict(connections.settings[alias].get("OPTIONS", {})) for alias in connections}
    slots._state.update(nodename="probe@test", agent_slots=True, worker=None, stop=None)
    yield slots._state
    if slots._state["stop"] is not None:
        slots._state["stop"].set()
    slots._state.clear()
    slots._state.update(saved)
    for alias, saved_options in options.items():
        connections.settings[alias]["OPTIONS"] = saved_options
    connection.close()


def test_process_init_registers_the_slot_and_leaves_no_connection_for_celery_to_cut(fresh_slot_state):
    """Celery's Django fix-up closes this thread's open connection by descriptor number after
    our handler; the heartbeat and live-event threads' sockets may have that number by then."""
    slots._on_process_init()

    assert connection.connection is None
    worker = fresh_slot_state["worker"]
    assert Worker.objects.get(pk=worker.pk).status == WorkerStatus.IDLE

"""The engine's end-to-end core through PgBouncer in transaction mode: the
same tests as against PostgreSQL directly, imported from their modules."""

import pytest

from tests.queue_app.test_engine_e2e import (  # noqa: F401
    test_created_task_runs_demo_agent_to_completion,
    test_failing_command_is_retried_per_policy_then_ends_failed,
)
from tests.workers_app.test_interrupts_e2e import test_cancelling_a_running_agent_stops_it_within_5_seconds  # noqa: F401
from tests.workers_app.test_recovery_e2e import (  # noqa: F401
    test_kill_9_of_a_worker_mid_run_requeues_and_completes_once_elsewhere,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

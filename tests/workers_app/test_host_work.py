"""Per-host work: a terminated session's workspace is removed by the worker
host that holds it (its own queue, ``host.<node>``), not where the session
was terminated; a host that is away when asked does it when it is back.
Real Celery worker, real Redis broker, real PostgreSQL."""

import socket
import uuid

import pytest

from tasks_app.services import task_create
from tests.conftest import wait_for
from workers_app.models import HostCleanup
from workers_app.services import agent_session_create, agent_session_terminate, worker_register

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_workspace_is_removed_on_its_host_when_the_host_is_back(celery_worker_factory, tmp_path):
    name = f"host-{uuid.uuid4().hex[:6]}"
    node = f"{name}@{socket.gethostname()}"
    # The session ran on a slot of that host, which is down now.
    slot = worker_register(name=f"{node}:1", hostname=socket.gethostname())
    task = task_create(title="cleanup", executor="ticker")
    session = agent_session_create(session_id=str(uuid.uuid4()), task=task, worker=slot)
    root = tmp_path / "host-workspaces"
    workspace = root / str(task.id)
    workspace.mkdir(parents=True)
    (workspace / "work.txt").write_text("the agent's files")

    agent_session_terminate(session=session, reason="operator")
    pending = HostCleanup.objects.get(host=node, task_id=task.id)
    assert pending.done_at is None and workspace.exists()

    celery_worker_factory(name=name, extra_env={"AGENTVINE_WORKSPACE_ROOT": str(root)})
    wait_for(lambda: not workspace.exists(), timeout=20, message="the host removing the workspace")
    pending.refresh_from_db()
    assert pending.done_at is not None


def test_a_host_does_not_do_another_hosts_cleanup(celery_worker_factory, tmp_path):
    """A worker serves its own host queue only: another host's job stays pending."""
    root = tmp_path / "host-workspaces"
    away = f"away-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    slot = worker_register(name=f"{away}:1", hostname=socket.gethostname())
    task = task_create(title="elsewhere", executor="ticker")
    session = agent_session_create(session_id=str(uuid.uuid4()), task=task, worker=slot)
    (root / str(task.id)).mkdir(parents=True)
    agent_session_terminate(session=session, reason="operator")
    here = celery_worker_factory(extra_env={"AGENTVINE_WORKSPACE_ROOT": str(root)})
    wait_for(lambda: "ready." in here.output(), message="worker ready")
    assert f"host.{here.name}@" in here.output()
    assert (root / str(task.id)).exists()
    assert HostCleanup.objects.get(host=away).done_at is None

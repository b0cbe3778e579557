"""A hostile agent through a real Celery worker, daphne, PostgreSQL and Redis.

The worker holds the platform's secrets in its environment and runs as it
should be deployed (README, "Threat model"): as an unprivileged user. When the
suite runs as root, the worker is started as ``nobody`` (in a mount namespace
where the root-only home holding the interpreter is readable). The agent
(tests/agents/hostile.py) dumps its environment and tries every way it has to
reach them, or to use its per-run token beyond its own run; every attempt
must fail. The secret its profile names is masked in what it printed.
"""

import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from agentvine.models import LiveEvent
from agentvine.security import process_protect
from tasks_app.models import Task, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_create
from tests.chat_app.conftest import DaphneServer
from tests.conftest import ROOT, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NAMED_SECRET = "HOSTILE_NAMED_SECRET"
UNPRIVILEGED_UID = 65534  # nobody
AS_NOBODY = (
    'mount --bind "$1" "$2" && mount -t tmpfs -o mode=755 tmpfs /root && mkdir -p "$1" && mount --move "$2" "$1"'
    f' && shift 2 && exec setpriv --reuid={UNPRIVILEGED_UID} --regid={UNPRIVILEGED_UID} --clear-groups "$@"'
)
# Everything an agent may see of its environment (README, "Executors").
AGENT_ENVIRONMENT = {
    # passed through from the worker when set
    *("PATH", "LANG", "LANGUAGE", "TERM", "COLORTERM", "NO_COLOR", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL"),
    *("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"),
    *("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"),
    # its own
    *(
        "HOME",
        "PYTHONUNBUFFERED",
        "AGENTVINE_API_URL",
        "AGENTVINE_TOKEN",
        "AGENTVINE_WORK_ORDER_ID",
        "AGENTVINE_TASK_ID",
        "AGENTVINE_ASK_CONNECT_SECONDS",
        "AGENTVINE_ASK_REPORT",
        "AGENTVINE_RUN_MARKER",
        "AGENTVINE_PROMPT_FILE",
    ),
    # what its profile names
    NAMED_SECRET,
    # bwrap's --chdir sets it: the workspace
    "PWD",
}
# Every attempt the agent must have made (and failed), so a run that skipped
# one (a crash half way) cannot pass.
EXPECTED_ATTEMPTS = (
    "platform variables in my environment",
    "/environ (ancestor)",
    "/mem (ancestor's heap)",
    "connect to PostgreSQL",
    "connect to Redis",
    "GET /api/v1/tasks/ with my token as Token",
    "POST /api/v1/tasks/ with my token as Agent",
    "/cancel/ with my token as Bearer",
    "POST /api/v1/queue/claim/ with my token as Agent",
    "POST /api/v1/workers/ with my token as Token",
    "POST /api/v1/auth/tokens/ with my token as Agent",
    "GET /admin/ (console) with my token",
)


@pytest.fixture
def worker_as_deployed(tmp_path):
    """(wrapper, workspace root) to start the worker as an unprivileged user."""
    root = Path(tempfile.mkdtemp(prefix="agentvine-isolation-"))
    if os.geteuid() != 0:
        # Already unprivileged, and the worker's parent is this test process,
        # standing where a service manager would: made non-dumpable like the
        # worker, so the test database URL in its environment is not taken for
        # something the worker leaked.
        process_protect()
        yield None, root
    else:
        os.chown(root, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        interpreter = Path(os.path.realpath(sys.executable)).parents[1]
        mountpoint = tempfile.mkdtemp(prefix="agentvine-interpreter-")
        yield (
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                AS_NOBODY,
                "sh",
                str(interpreter),
                mountpoint,
            ],
            root,
        )
        os.rmdir(mountpoint)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def api_server(transactional_db, tmp_path):
    server = DaphneServer(tmp_path / "daphne.log")
    yield server
    server.stop()


def _line(output, prefix):
    return json.loads(next(line for line in output.splitlines() if line.startswith(prefix))[len(prefix) :])


# In the sandbox (network off but for the API) it also tries other tasks'
# files and the platform's, and the host's services without credentials.
SANDBOX_ATTEMPTS = (
    "open a TCP connection to PostgreSQL on the host",
    "open a TCP connection to Redis on the host",
    "list the workspace root",
    "list the repository cache",
    "list the platform's var/",
    "read another task's workspace",
    "read the platform's settings",
)


@pytest.mark.parametrize("profile", ["hostile", "hostile-bwrap"])
def test_hostile_agent_reaches_no_platform_secret_and_its_token_only_its_own_run(
    celery_worker_factory, api_server, operator, worker_as_deployed, profile, client
):
    platform_secrets = {
        "SECRET_KEY": "django-insecure-" + secrets.token_hex(16),
        "AGENTVINE_WORKER_TOKEN": "avw_" + secrets.token_hex(16),
        "ANTHROPIC_API_KEY": "sk-ant-" + secrets.token_hex(16),
        "OPENAI_API_KEY": "sk-" + secrets.token_hex(16),
    }
    named_value = "named-" + secrets.token_hex(12)
    wrapper, workspace_root = worker_as_deployed
    other = task_create(title="someone else's task", executor="noop", created_by=operator)
    celery_worker_factory(
        concurrency=1,
        wrapper=wrapper,
        extra_env={
            **platform_secrets,
            NAMED_SECRET: named_value,
            "AGENTVINE_API_URL": api_server.url,
            "AGENTVINE_WORKSPACE_ROOT": str(workspace_root),
        },
    )
    orders = f"other-task: {other.id}\nprint-secret: {NAMED_SECRET}"
    sandboxed = profile == "hostile-bwrap"
    if sandboxed:
        # Another task's work and the repository cache, where a worker keeps them.
        plan = workspace_root / str(other.id) / "SECRET_PLAN.md"
        plan.parent.mkdir(exist_ok=True)
        plan.write_text("another task's work")
        (workspace_root / "_repos").mkdir(exist_ok=True)
        orders += f"\nother-workspace: {plan.parent}\nplatform: {ROOT}\nnetwork: off"
    task = task_create(title="Refactor the parser", description=orders, executor=profile, created_by=operator)

    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, timeout=60, message="hostile run")

    execution = task.executions.get()
    output = execution_output(execution=execution)
    environment = _line(output, "HOSTILE-ENV ")
    report = _line(output, "HOSTILE-REPORT ")
    print("\n".join(f"{'LEAKED' if a['succeeded'] else 'failed'}: {a['attempt']}: {a['detail']}" for a in report))

    # Its environment is the allowlist and what the platform and its profile give.
    unexpected = {name for name in environment if name not in AGENT_ENVIRONMENT and not name.startswith("LC_")}
    assert unexpected == set()
    assert Path(environment["HOME"]) == workspace_root / "_homes" / str(task.id)
    # Every attempt was made, and none succeeded.
    tried = " | ".join(a["attempt"] for a in report)
    for expected in EXPECTED_ATTEMPTS + (SANDBOX_ATTEMPTS if sandboxed else ()):
        assert expected in tried
    assert [a for a in report if a["succeeded"]] == []
    # No value of the worker's secrets shows up anywhere in what it printed.
    for value in [*platform_secrets.values(), os.environ["DATABASE_URL"], os.environ["REDIS_URL"]]:
        assert value not in output
    # Its token works for its own run (reporting progress)...
    assert "HOSTILE-CONTROL 201" in output
    # ...and the API answered everything else (through the relay when its network is off) with a refusal.
    assert {a["detail"] for a in report if "with my token as Agent" in a["attempt"]} == {"401"}
    # Its token did not create a task or a worker.
    assert not Task.objects.filter(title="planted by an agent").exists()

    # The secret its profile names reached it, and was masked before it was stored or published.
    assert f"my secret is [secret {NAMED_SECRET}], once more: [secret {NAMED_SECRET}]" in output
    assert named_value not in output
    assert named_value not in execution.output_tail
    published = [json.dumps(event.payload) for event in LiveEvent.objects.filter(type="execution.output")]
    assert any("[secret HOSTILE_NAMED_SECRET]" in payload for payload in published)
    assert not any(named_value in payload for payload in published)
    client.force_login(operator)
    page = client.get(f"/tasks/{task.id}/").content.decode()
    assert f"[secret {NAMED_SECRET}]" in page and named_value not in page

"""Remote pull workers over the HTTP API, side by side with a real Celery worker."""

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from queue_app.models import Execution, ExecutionStatus, WorkOrder, WorkOrderStatus
from tasks_app.models import Task, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_create
from tests.conftest import ROOT, _database_url, child_environ, wait_for
from workers_app.models import Worker, WorkerStatus
from workers_app.services import api_token_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class RemoteWorkerProcess:
    def __init__(self, server, token, name, log_path, *extra, env=None):
        self.name = name
        self.server_url = server
        self.log_path = log_path
        env = {
            **child_environ(),
            "DJANGO_SETTINGS_MODULE": "agentvine.settings_test",
            # Only so the settings module loads; the remote worker never connects.
            "DATABASE_URL": _database_url(),
            "PYTHONPATH": str(ROOT),
            # From the environment, not the command line (visible in ps).
            "AGENTVINE_OPERATOR_TOKEN": token,
            **(env or {}),
        }
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers_app.remote", "--server", server, "--name", name] + list(extra),
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self):
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def wait(self, timeout):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"remote worker {self.name} did not exit:\n{self.output()[-3000:]}") from None
        finally:
            self.log.close()


@pytest.fixture
def remote_factory(live_server, operator, tmp_path):
    key = api_token_create(user=operator, name="remote workers")[1]
    started = []

    def start(name, *extra, env=None):
        proc = RemoteWorkerProcess(live_server.url, key, name, tmp_path / f"{name}.log", *extra, env=env)
        started.append(proc)
        return proc

    start.key = key
    yield start
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()


def test_remote_worker_runs_the_demo_agent_end_to_end(remote_factory, operator):
    task = task_create(title="Remote greeting", description="Say hello from afar", created_by=operator)

    remote = remote_factory(
        "remote-e2e",
        *("--max-orders", "1", "--poll", "0.2", "--heartbeat", "0.3"),
        env={"AGENTVINE_OUTPUT_FLUSH_SECONDS": "0.05"},
    )
    assert remote.wait(timeout=60) == 0, remote.output()

    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED
    execution = task.executions.get()
    assert execution.status == ExecutionStatus.COMPLETED and execution.exit_code == 0
    output = execution_output(execution=execution)
    assert "demo agent: starting on task: Remote greeting" in output
    assert output.rstrip().endswith("wrote AGENTVINE_RESULT.md; done")
    assert execution.output_chunks > 1, "output should arrive in several batches while the agent runs"
    worker = Worker.objects.get(name="remote-e2e")
    assert execution.worker == worker
    # It heartbeated while working and deregistered on its way out.
    assert worker.last_heartbeat_at > execution.started_at
    assert worker.status == WorkerStatus.OFFLINE
    result = Path(settings.AGENTVINE_WORKSPACE_ROOT) / str(task.pk) / "AGENTVINE_RESULT.md"
    assert "Task: Remote greeting" in result.read_text()


def test_remote_workers_agent_gets_the_allowlist_not_the_remote_workers_tokens(remote_factory, operator):
    task = task_create(title="Show me", executor="printenv", created_by=operator)
    operator_key = remote_factory.key

    remote = remote_factory("remote-env", "--max-orders", "1", "--poll", "0.2", env={"PROVIDER_KEY": "sk-unnamed"})
    assert remote.wait(timeout=60) == 0, remote.output()

    output = execution_output(execution=Task.objects.get(pk=task.pk).executions.get())
    names = {line.split("=", 1)[0] for line in output.splitlines() if "=" in line}
    assert {"PATH", "HOME", "AGENTVINE_TOKEN", "AGENTVINE_API_URL"} <= names
    for leaked in ("AGENTVINE_OPERATOR_TOKEN", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "PROVIDER_KEY"):
        assert leaked not in names
    assert operator_key not in output and "sk-unnamed" not in output


def test_remote_worker_agent_asks_a_human_and_uses_the_answer(remote_factory, operator):
    from chat_app import selectors, services

    task = task_create(title="Pick a port", description="Serve it.\nASK: Which port should it listen on?")
    remote = remote_factory("remote-ask", "--max-orders", "1", "--poll", "0.2", "--heartbeat", "0.3")

    question = wait_for(
        lambda: selectors.pending_questions().filter(task=task).first(), timeout=60, message="the question"
    )
    assert question.text == "Which port should it listen on?"
    work_order = task.work_orders.get()
    wait_for(lambda: WorkOrder.objects.get(pk=work_order.pk).status == WorkOrderStatus.WAITING, message="waiting")
    services.question_answer(
        question=question, answer_text="8443", answered_by=services.operator_profile(user=operator)
    )
    assert remote.wait(timeout=60) == 0, remote.output()

    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED
    output = execution_output(execution=task.executions.get())
    assert "demo agent: asking a human: Which port should it listen on?" in output
    assert "demo agent: answer: 8443" in output
    assert task.executions.get().worker.name == "remote-ask"


def test_remote_and_celery_workers_drain_500_orders_exactly_once_high_first(
    remote_factory, celery_worker_factory, operator
):
    rng = random.Random(7)
    priorities = ["high"] * 150 + ["normal"] * 200 + ["low"] * 150
    rng.shuffle(priorities)
    for index, priority in enumerate(priorities):
        task_create(title=f"drain {index}", priority=priority, executor="noop", created_by=operator)

    celery = celery_worker_factory(concurrency=1, wait=False)
    remotes = [remote_factory(f"remote-{n}", "--idle-exit", "2", "--poll", "0.2") for n in range(3)]
    wait_for(
        lambda: not WorkOrder.objects.exclude(status=WorkOrderStatus.COMPLETED).exists(),
        timeout=240,
        interval=0.5,
        message="every work order completed",
    )
    for remote in remotes:
        assert remote.wait(timeout=60) == 0, remote.output()[-3000:]

    assert Task.objects.filter(status=TaskStatus.COMPLETED).count() == 500
    # Exactly once: one attempt per work order, all of them successful.
    assert Execution.objects.count() == 500
    assert Execution.objects.filter(status=ExecutionStatus.COMPLETED).count() == 500
    assert set(Execution.objects.values_list("work_order_id", flat=True)) == set(
        WorkOrder.objects.values_list("pk", flat=True)
    )
    names = set(Execution.objects.values_list("worker__name", flat=True))
    assert {f"remote-{n}" for n in range(3)} <= names
    assert any(name.startswith(f"{celery.name}@") for name in names), names
    # High first: every high-priority order was claimed before any low one.
    claimed = dict(
        (priority, list(WorkOrder.objects.filter(priority=priority).values_list("claimed_at", flat=True)))
        for priority in ("high", "low")
    )
    assert max(claimed["high"]) < min(claimed["low"])


def test_remote_worker_reports_the_agents_usage_and_cost(remote_factory, operator):
    task = task_create(title="Fix it remotely", executor="claude-replay", created_by=operator)

    remote = remote_factory("remote-usage", "--max-orders", "1", "--poll", "0.2", "--heartbeat", "0.3")
    assert remote.wait(timeout=60) == 0, remote.output()

    execution = Task.objects.get(pk=task.pk).executions.get()
    assert execution.status == ExecutionStatus.COMPLETED
    # The same numbers a Celery slot records for this agent (test_agents_e2e).
    assert (execution.input_tokens, execution.output_tokens) == (150, 50)
    assert str(execution.cost_usd) == "0.012300"


def test_cancelling_a_remote_run_ends_its_attempt_interrupted_and_frees_the_worker(remote_factory, operator):
    from tasks_app.services import task_cancel

    task = task_create(title="ticker 30", executor="ticker", created_by=operator)
    remote = remote_factory("remote-cancel", "--max-orders", "1", "--poll", "0.2", "--heartbeat", "0.3")
    execution = wait_for(
        lambda: Execution.objects.filter(task=task, output_chunks__gt=0).first(), timeout=60, message="output"
    )

    task_cancel(task=Task.objects.get(pk=task.pk))

    assert remote.wait(timeout=30) == 0, remote.output()
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.INTERRUPTED
    assert execution.completed_at is not None
    assert "cancelled" in execution.error
    assert execution.output_chunks > 0, "the partial output is kept"
    assert Task.objects.get(pk=task.pk).status == TaskStatus.CANCELLED
    # The agent's token died with the run.
    assert not execution.agent_tokens.filter(revoked_at__isnull=True).exists()


def test_a_message_to_a_finished_agent_gets_a_resumed_turn_on_a_remote_worker(remote_factory, operator, origin):
    from chat_app.models import ChatMessage, DeliveryStatus
    from chat_app.services import operator_message_send
    from queue_app.models import WorkOrderKind
    from workers_app.models import AgentSession

    task = task_create(title="Write notes", executor="codex-replay", repository_url=str(origin), created_by=operator)
    remote = remote_factory("remote-turn", "--max-orders", "2", "--poll", "0.2", "--heartbeat", "0.3")
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, timeout=60, message="the task run")
    first = task.executions.get()
    # Codex named its own thread; the remote worker recorded it on the session.
    thread = AgentSession.objects.get(task=task).session_id
    assert f"[codex] thread {thread}\n" in execution_output(execution=first)

    message = operator_message_send(user=operator, conversation_id=str(task.pk), text="Add a CHANGELOG entry too")

    assert remote.wait(timeout=60) == 0, remote.output()
    turn = task.executions.get(work_order__kind=WorkOrderKind.DELIVER_MESSAGE)
    assert turn.status == ExecutionStatus.COMPLETED and turn.worker.name == "remote-turn"
    # The same session and codex thread, continued, with the message as its prompt.
    assert turn.session_id == first.session_id
    output = execution_output(execution=turn)
    assert f"Resumed thread {thread}" in output
    assert f"Done: {operator.username}: Add a CHANGELOG entry too" in output
    assert ChatMessage.objects.get(pk=message.pk).status != DeliveryStatus.QUEUED
    assert Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED


def test_a_remote_run_keeps_its_lease_while_the_guardian_watches(remote_factory, operator, settings):
    """The remote runner's poll of its work order (and its heartbeat) renew its
    run's lease: a run longer than the lease is not taken for an orphan."""
    from workers_app import guardians

    settings.AGENTVINE_LEASE_SECONDS = 1.0
    task = task_create(title="ticker 3", executor="ticker", created_by=operator)
    remote = remote_factory("remote-lease", "--max-orders", "1", "--poll", "0.2", "--heartbeat", "0.3")
    requeued = []
    while remote.process.poll() is None:
        requeued += guardians.guard_stalled_workers()[1]
        try:
            remote.process.wait(0.3)
        except subprocess.TimeoutExpired:
            pass
    assert remote.wait(timeout=5) == 0, remote.output()

    assert requeued == []
    assert list(task.executions.values_list("status", flat=True)) == [ExecutionStatus.COMPLETED]


def test_tokens_come_from_the_environment_or_a_file_and_a_command_line_token_warns(tmp_path, caplog):
    from workers_app.remote import WARN_TOKEN_ARGUMENT, token_from

    (tmp_path / "token").write_text("avw_from_file\n")
    environ = {"AGENTVINE_WORKER_TOKEN_FILE": str(tmp_path / "token"), "AGENTVINE_OPERATOR_TOKEN": "avo_from_env"}

    from_file = token_from(flag="--worker-token", flag_value=None, variable="AGENTVINE_WORKER_TOKEN", environ=environ)
    from_env = token_from(flag="--token", flag_value=None, variable="AGENTVINE_OPERATOR_TOKEN", environ=environ)
    assert caplog.records == []
    from_flag = token_from(flag="--token", flag_value="avo_on_cmdline", variable="AGENTVINE_OPERATOR_TOKEN")

    assert (from_file, from_env, from_flag) == ("avw_from_file", "avo_from_env", "avo_on_cmdline")
    assert caplog.messages == [WARN_TOKEN_ARGUMENT.format(flag="--token", variable="AGENTVINE_OPERATOR_TOKEN")]


def test_a_remote_run_requeued_under_it_is_fenced_and_stops_its_agent(remote_factory, operator):
    """The remote worker's run is requeued (its host was cut off, say) and the
    work started again on the same worker: its heartbeat no longer lists the
    run and its writes are 409 fenced, so it stops its agent and sends nothing
    more; the live run is untouched."""
    from queue_app import credentials, lifecycle
    from workers_app.runner import pull_run_start

    task = task_create(title="ticker 30", executor="ticker", created_by=operator)
    work_order = task.work_orders.get()
    remote = remote_factory("remote-fence", "--max-orders", "1", "--poll", "0.2", "--heartbeat", "0.3")
    stale = wait_for(
        lambda: Execution.objects.filter(work_order=work_order, output_chunks__gt=0).first(),
        message="the remote agent printing",
    )
    worker = Worker.objects.get(name="remote-fence")
    lifecycle.work_order_requeue(work_order=work_order, reason="worker cut off", lost=True)
    claimed = lifecycle.work_order_claim(worker=worker, work_order_id=work_order.pk)
    _, live, _, _, _ = pull_run_start(work_order=claimed, worker=worker)

    assert remote.wait(timeout=15) == 0, remote.output()
    log = Path(remote.log_path).read_text()
    assert "fenced" in log and "ran 1 work orders: {'fenced': 1}" in log, log[-3000:]
    stale.refresh_from_db()
    chunks = stale.output_chunks
    live.refresh_from_db()
    assert live.status == ExecutionStatus.RUNNING and live.output_chunks == 0
    assert credentials.agent_token_resolve(token=live.agent_token) is not None
    assert WorkOrder.objects.get(pk=work_order.pk).status == WorkOrderStatus.RUNNING
    stale.refresh_from_db()
    assert stale.output_chunks == chunks


def test_a_remote_runs_commits_reach_the_server_and_clone_over_http(remote_factory, operator, settings, tmp_path):
    """The remote worker (another process, its own workspace root) commits the
    run and sends the commits through the API; the server's repository then
    serves the branch over git's smart HTTP to an operator's token only."""
    settings.AGENTVINE_RESULTS_ROOT = tmp_path / "server-results"
    task = task_create(title="Remote edits", executor="editor", created_by=operator)

    remote = remote_factory(
        "remote-results",
        *("--max-orders", "1", "--poll", "0.2", "--heartbeat", "0.3"),
        env={"AGENTVINE_WORKSPACE_ROOT": str(tmp_path / "remote-workspaces")},
    )
    assert remote.wait(timeout=60) == 0, remote.output()

    execution = task.executions.get()
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.has_changes is True, remote.output()
    assert {entry["path"] for entry in execution.changed_files} == {
        "README.md", "src/added.py", "payload.html", "logo.bin",
    }  # fmt: skip
    url = f"{remote.server_url}/git/{task.id}.git"
    clone = tmp_path / "clone"
    cloned = subprocess.run(
        ["git", "-c", f"http.extraHeader=Authorization: Token {remote_factory.key}", "clone", "--quiet",
         "--branch", f"agentvine/{task.id}", url, str(clone)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cloned.returncode == 0, cloned.stderr
    assert git_head(clone) == execution.head_commit
    assert (clone / "src" / "added.py").read_text() == "def added():\n    return 1\n"
    refused = subprocess.run(
        ["git", "ls-remote", url], capture_output=True, text=True, timeout=60,
        env={"GIT_TERMINAL_PROMPT": "0", "PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert refused.returncode != 0 and execution.head_commit not in refused.stdout


def git_head(path):
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True).stdout.strip()


def test_a_turn_after_requested_changes_continues_the_branch_on_another_remote_host(
    remote_factory, operator, settings, tmp_path
):
    """Request changes on a remote run's results: the agent's next turn, on
    another remote worker with an empty workspace root, fetches the task's
    branch from the server first and adds its commit on top."""
    from tasks_app.results import results_repository_path
    from tasks_app.review import review_request_changes
    from tests.workers_app.conftest import git

    settings.AGENTVINE_RESULTS_ROOT = tmp_path / "server-results"
    task = task_create(title="Log", description="Begin the log.", executor="reviser", created_by=operator)
    options = ("--max-orders", "1", "--poll", "0.2", "--heartbeat", "0.3")
    first_host = remote_factory("remote-a", *options, env={"AGENTVINE_WORKSPACE_ROOT": str(tmp_path / "a")})
    assert first_host.wait(timeout=60) == 0, first_host.output()
    first = task.executions.get()
    assert first.has_changes is True, first_host.output()

    review_request_changes(task=task, user=operator, comment="Add the second line")
    second_root = tmp_path / "b"
    second_host = remote_factory("remote-b", *options, env={"AGENTVINE_WORKSPACE_ROOT": str(second_root)})
    assert second_host.wait(timeout=60) == 0, second_host.output()

    turn = task.executions.exclude(pk=first.pk).get()
    assert turn.status == ExecutionStatus.COMPLETED and turn.worker.name == "remote-b"
    assert (second_root / str(task.id) / "REVISIONS.md").read_text().splitlines() == [
        "turn 1: Begin the log.",
        "turn 2: Add the second line",
    ]
    server = results_repository_path(task)
    assert git("rev-parse", f"{turn.head_commit}^", cwd=server) == first.head_commit
    assert git("rev-parse", f"agentvine/{task.id}", cwd=server) == turn.head_commit


def test_a_remote_workers_heartbeats_carry_no_idempotency_key(remote_factory):
    """A heartbeat is safe to repeat and its repeat must answer afresh (the
    leases as they are now, not as they were): it goes without a key, so the
    web's fast path answers it and nothing is stored for it."""
    import hashlib

    from workers_app.models import IdempotencyKey

    remote = remote_factory("remote-beats", "--heartbeat", "0.3", "--poll", "0.5", "--idle-exit", "2")
    assert remote.wait(timeout=30) == 0, remote.output()
    worker = Worker.objects.get(name="remote-beats")
    assert worker.last_heartbeat_at > worker.created_at
    beat = hashlib.sha256(f"POST\0/api/v1/workers/{worker.pk}/heartbeat/\0".encode()).hexdigest()
    stored = IdempotencyKey.objects.filter(owner=f"worker:{worker.pk}")
    assert stored.exists()  # its claims keep theirs
    assert not stored.filter(fingerprint=beat).exists()


def test_a_spent_budget_pauses_a_remote_run_with_its_changes_and_raising_it_resumes_it(
    remote_factory, operator, settings, tmp_path
):
    """A remote worker obeys budgets as a Celery slot does: claude gets
    --max-budget-usd from the start, the run stops after the third $0.02
    turn, its commits reach the server, and the task waits paused (no retry
    spent) until its budget is raised; the next run resumes the session."""
    from tasks_app.services import task_update

    settings.AGENTVINE_RESULTS_ROOT = tmp_path / "server-results"
    task = task_create(
        title="Write the parser scenario:budget turns:5 cost:0.02",
        executor="claude-replay",
        created_by=operator,
        budget_usd="0.05",
    )
    flags = ("--max-orders", "1", "--poll", "0.2", "--heartbeat", "0.3")
    host = {"AGENTVINE_WORKSPACE_ROOT": str(tmp_path / "remote-workspaces")}
    first_run = remote_factory("remote-budget-1", *flags, env=host)
    assert first_run.wait(timeout=60) == 0, first_run.output()

    task.refresh_from_db()
    assert task.status == TaskStatus.PAUSED_BUDGET, first_run.output()
    order = task.work_orders.get()
    assert order.status == WorkOrderStatus.PAUSED and order.retry_count == 0
    first = task.executions.get()
    assert first.status == ExecutionStatus.INTERRUPTED
    assert str(first.cost_usd) == "0.060000"
    assert sorted(entry["path"] for entry in first.changed_files) == ["turn-1.txt", "turn-2.txt", "turn-3.txt"]

    task_update(task=task, budget_usd="0.20")
    second_run = remote_factory("remote-budget-2", *flags, env=host)
    assert second_run.wait(timeout=60) == 0, second_run.output()
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED, second_run.output()
    second = task.executions.exclude(pk=first.pk).get()
    assert "after turn 3" in execution_output(execution=second)
    assert sorted(entry["path"] for entry in second.changed_files) == [f"turn-{n}.txt" for n in range(1, 6)]


def test_a_rate_limited_remote_run_pauses_its_key_without_spending_a_retry(remote_factory, operator):
    """The stand-in claude refuses with a reset 3 s ahead: the remote worker
    stops it and says so, the server pauses the profile's key and puts the
    work back in line until the reset; a later poll resumes its session."""
    from queue_app.models import ConcurrencyKeyPause

    task = task_create(title="Refactor scenario:ratelimitonce reset:3", executor="claude-replay", created_by=operator)
    flags = ("--max-orders", "1", "--poll", "0.2", "--heartbeat", "0.3")
    refused = remote_factory("remote-refused", *flags)
    assert refused.wait(timeout=60) == 0, refused.output()

    order = task.work_orders.get()
    assert order.status == WorkOrderStatus.QUEUED and order.retry_count == 0, refused.output()
    pause = ConcurrencyKeyPause.objects.get(key="claude-replay")
    assert order.not_before == pause.paused_until
    assert "rate limited until" in order.last_error
    assert task.executions.get().status == ExecutionStatus.INTERRUPTED

    resumed = remote_factory("remote-resumed", *flags)
    assert resumed.wait(timeout=60) == 0, resumed.output()
    order.refresh_from_db()
    assert order.status == WorkOrderStatus.COMPLETED and order.retry_count == 0
    second = task.executions.order_by("attempt").last()
    assert second.started_at >= pause.paused_until
    assert "Resumed session" in execution_output(execution=second)

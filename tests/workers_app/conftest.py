import importlib
import subprocess
import time
import uuid

import pytest
from django.apps import apps
from django.conf import settings

from tests.conftest import TestDatabaseProcess
from workers_app.executors import executor_for
from workers_app.executors.base import RunContext


class AgentRun:
    """Drives a real executor like the runner does and keeps its events."""

    def __init__(self, executor):
        self.executor = executor
        self.events = []

    def of(self, kind):
        return [event for event in self.events if event.kind == kind]

    @property
    def output(self):
        return "".join(event.text for event in self.events if event.kind in ("output", "tool_use"))

    @property
    def outcome(self):
        return self.events[-1]


@pytest.fixture
def run_agent(tmp_path):
    def run(profile, prompt, *, workspace=None, session_id=None, resume=False, on_event=None, timeout=20):
        if isinstance(profile, str):
            profile = settings.AGENTVINE_EXECUTORS[profile]
        workspace = workspace or tmp_path
        context = RunContext(
            task_id=str(uuid.uuid4()),
            work_order_id=str(uuid.uuid4()),
            prompt=prompt,
            workspace=workspace,
            profile=profile,
            time_limit=timeout,
            session_id=session_id or str(uuid.uuid4()),
            resume=resume,
        )
        run = AgentRun(executor_for(context))
        deadline = time.monotonic() + timeout
        for event in run.executor.events():
            if event.kind != "tick":
                run.events.append(event)
            if on_event:
                on_event(run, event)
            if time.monotonic() > deadline:
                run.executor.kill()
                raise AssertionError(f"agent still running after {timeout}s")
        return run

    return run


def interrupt_when(text):
    """An on_event hook that interrupts the agent once ``text`` shows up; the
    returned dict gets the monotonic time of the interrupt under "at"."""
    asked = {}

    def hook(run, event):
        if text in event.text and not asked:
            asked["at"] = time.monotonic()
            run.executor.interrupt()

    return hook, asked


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def editable_source(repo):
    """A repository at ``repo`` whose main branch has files to edit, delete
    and rename (what tests/agents/editor.py works on)."""
    repo.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=repo)
    git("config", "user.email", "dev@example.com", cwd=repo)
    git("config", "user.name", "Dev", cwd=repo)
    (repo / "README.md").write_text("project\n")
    (repo / "obsolete.txt").write_text("old\n")
    (repo / "notes.txt").write_text("".join(f"note {n}\n" for n in range(20)))
    git("add", ".", cwd=repo)
    git("commit", "--quiet", "-m", "initial", cwd=repo)
    return repo


@pytest.fixture
def origin(tmp_path):
    """A repository with a main branch and a feature branch, like a developer's."""
    repo = tmp_path / "origin"
    repo.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=repo)
    git("config", "user.email", "dev@example.com", cwd=repo)
    git("config", "user.name", "Dev", cwd=repo)
    (repo / "README.md").write_text("project\n")
    git("add", ".", cwd=repo)
    git("commit", "--quiet", "-m", "initial", cwd=repo)
    git("checkout", "--quiet", "-b", "feature/login", cwd=repo)
    (repo / "login.py").write_text("def login(): ...\n")
    git("add", ".", cwd=repo)
    git("commit", "--quiet", "-m", "login", cwd=repo)
    git("checkout", "--quiet", "main", cwd=repo)
    return repo


# --- guardians: a real `celery beat` and a guardians worker -----------------------

# Fast timings for worker subprocesses: a slot heartbeats twice a second and is
# stalled after 1.5 s, so recovery tests take seconds, not minutes.
FAST_GUARD_ENV = {
    "AGENTVINE_HEARTBEAT_SECONDS": "0.5",
    "AGENTVINE_STALLED_WORKER_SECONDS": "1.5",
    "AGENTVINE_INTERRUPT_GRACE_SECONDS": "1.0",
}


def guardian_schedule_install(every_seconds=None):
    """Recreate the beat rows of the data migration (transactional tests flush
    tables), optionally with every guardian running each ``every_seconds``."""
    for name in ("0003_guardian_schedule", "0004_broker_reset_guardian"):
        importlib.import_module(f"workers_app.migrations.{name}").create_schedule(apps, None)
    if every_seconds is not None:
        from django_celery_beat.models import IntervalSchedule, PeriodicTask

        interval, _ = IntervalSchedule.objects.get_or_create(every=every_seconds, period=IntervalSchedule.SECONDS)
        for task in PeriodicTask.objects.filter(task__startswith="workers_app.guard_"):
            task.interval = interval
            task.expire_seconds = None
            task.save()


class _Process(TestDatabaseProcess):
    """A celery process (beat, the guardians worker) on the test database."""

    def __init__(self, argv, *, log_path, extra_env=None):
        super().__init__(["celery", "-A", "agentvine", *argv], log_path=log_path, extra_env=extra_env)


@pytest.fixture
def guardian_beat(transactional_db, clean_broker, tmp_path):
    """A real `celery beat` on the django-celery-beat schedule plus the small
    worker consuming the guardians queue, as deployed."""
    started = []

    def start(every_seconds=1, extra_env=None):
        guardian_schedule_install(every_seconds)
        env = {**FAST_GUARD_ENV, **(extra_env or {})}
        started.append(
            _Process(
                ["worker", "-Q", "guardians", "-c", "1", "-n", "guardians@%h", "--without-gossip", "--without-mingle"],
                log_path=tmp_path / "guardians.log",
                extra_env=env,
            )
        )
        started.append(
            _Process(
                ["beat", "-l", "info", "--schedule", str(tmp_path / "beat-schedule"), "--max-interval", "1"],
                log_path=tmp_path / "beat.log",
                extra_env=env,
            )
        )
        return started

    yield start
    for process in started:
        process.stop()


def web_and_guardian_processes(tmp_path, *, port, extra_env):
    """daphne on ``port``, the guardians worker and beat, as deployed, with
    ``extra_env`` (a fault test's own database or Redis): started, in the
    order a test stops them backwards."""
    return [
        TestDatabaseProcess(
            ["daphne", "-b", "127.0.0.1", "-p", str(port), "agentvine.asgi:application"],
            log_path=tmp_path / "daphne.log",
            extra_env=extra_env,
        ),
        _Process(
            ["worker", "-Q", "guardians", "-c", "1", "-n", "guardians@%h"],
            log_path=tmp_path / "guardians.log",
            extra_env=extra_env,
        ),
        _Process(
            ["beat", "--schedule", str(tmp_path / "beat"), "--max-interval", "1"],
            log_path=tmp_path / "beat.log",
            extra_env=extra_env,
        ),
    ]

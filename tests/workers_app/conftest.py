import subprocess
import time
import uuid

import pytest
from django.conf import settings

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

"""Executor registry: a profile's ``type`` names the class that runs it."""

from pathlib import Path

from django.conf import settings

from workers_app.executors.base import ExecutorConfigError
from workers_app.executors.claude import ClaudeExecutor
from workers_app.executors.codex import CodexExecutor
from workers_app.executors.command import CommandExecutor
from workers_app.executors.openai import OpenAIExecutor

EXECUTOR_TYPES = {
    "command": CommandExecutor,
    "claude": ClaudeExecutor,
    "codex": CodexExecutor,
    "openai": OpenAIExecutor,
}


def executor_profile(name):
    name = name or settings.AGENTVINE_DEFAULT_EXECUTOR
    profile = settings.AGENTVINE_EXECUTORS.get(name)
    if profile is None:
        raise ExecutorConfigError(f"unknown executor profile: {name}")
    return profile


def agent_home(task_id):
    """The HOME of a task's agents: beside the workspaces, never inside a
    checkout (it would end up in the agent's commits), kept across the
    task's turns so an agent CLI finds its own session again."""
    return Path(settings.AGENTVINE_WORKSPACE_ROOT) / "_homes" / str(task_id)


def executor_for(context):
    if context.home is None:
        context.home = agent_home(context.task_id)
    executor_type = context.profile.get("type", "command")
    cls = EXECUTOR_TYPES.get(executor_type)
    if cls is None:
        raise ExecutorConfigError(f"unknown executor type: {executor_type}")
    return cls(context)

"""Executor registry: a profile's ``type`` names the class that runs it."""

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


def executor_for(context):
    executor_type = context.profile.get("type", "command")
    cls = EXECUTOR_TYPES.get(executor_type)
    if cls is None:
        raise ExecutorConfigError(f"unknown executor type: {executor_type}")
    return cls(context)

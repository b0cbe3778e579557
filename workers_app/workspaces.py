"""Per-task workspaces: each task works in its own directory."""

from pathlib import Path

from django.conf import settings


def workspace_path(task_id) -> Path:
    return Path(settings.AGENTVINE_WORKSPACE_ROOT) / str(task_id)


def workspace_prepare(*, task) -> Path:
    path = workspace_path(task.id)
    path.mkdir(parents=True, exist_ok=True)
    return path

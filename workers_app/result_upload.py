"""A run's snapshot on its way to the server: the task's branch as a git
bundle, sent through the API (``POST executions/{id}/bundle/``) by the slot
(with the run's own token) or the remote worker (with its worker token) that
ran it. The server takes the task's branch from it and records what changed.
"""

import tempfile
from pathlib import Path

import requests

from workers_app.workspaces import workspace_bundle

UPLOAD_TIMEOUT_SECONDS = (5.0, 600.0)  # connect, read


class UploadFailed(Exception):
    pass


def results_upload(*, api_url, authorization, execution_id, task, snapshot, session=None):
    """Bundle the task's branch and send it. Returns the server's record of
    the execution's results; raises UploadFailed when the server did not take it."""
    with tempfile.TemporaryDirectory(prefix="agentvine-bundle-") as scratch:
        bundle = Path(scratch) / "results.bundle"
        workspace_bundle(task=task, destination=bundle)
        url = f"{api_url.rstrip('/')}/api/v1/executions/{execution_id}/bundle/"
        try:
            with open(bundle, "rb") as body:
                response = (session or requests).post(
                    url,
                    params={"base": snapshot.base_commit},
                    data=body,
                    headers={"Authorization": authorization, "Content-Type": "application/octet-stream"},
                    timeout=UPLOAD_TIMEOUT_SECONDS,
                )
        except requests.RequestException as exc:
            raise UploadFailed(str(exc)) from exc
    if response.status_code != 201:
        raise UploadFailed(f"HTTP {response.status_code}: {response.text[:300]}")
    return response.json()

"""A run's results between its host and the server.

- :func:`results_upload`: the task's branch as a git bundle, sent through
  the API (``POST executions/{id}/bundle/``) by the slot (with the run's own
  token) or the remote worker (with its worker token) that ran it. The server
  takes the task's branch from it and records what changed. Only the commits
  the server lacks travel when the worker knows a commit the server has (an
  incremental bundle; the server verifies its prerequisites, and a refused
  one is sent again whole).
- :func:`results_fetch`: at a run's start, the branch as the server has it
  (``GET executions/{id}/bundle/?have=…``), so a follow-up on a host with
  an empty workspace root, or after another host's turn, continues the same
  work.
"""

import logging
import tempfile
from pathlib import Path

import requests

from workers_app.workspaces import workspace_bundle, workspace_head, workspace_update_from_bundle

UPLOAD_TIMEOUT_SECONDS = (5.0, 600.0)  # connect, read
HEAD_HEADER = "X-AgentVine-Head"
logger = logging.getLogger(__name__)


class UploadFailed(Exception):
    pass


def _bundle_url(api_url, execution_id):
    return f"{api_url.rstrip('/')}/api/v1/executions/{execution_id}/bundle/"


def _send(url, bundle, *, authorization, snapshot, session):
    try:
        with open(bundle, "rb") as body:
            return (session or requests).post(
                url,
                params={"base": snapshot.base_commit},
                data=body,
                headers={"Authorization": authorization, "Content-Type": "application/octet-stream"},
                timeout=UPLOAD_TIMEOUT_SECONDS,
            )
    except requests.RequestException as exc:
        raise UploadFailed(str(exc)) from exc


def results_upload(*, api_url, authorization, execution_id, task, snapshot, session=None, known=None):
    """Bundle the task's branch (only what follows ``known``, a commit the
    server has, when given) and send it. Returns the server's record of the
    execution's results; raises UploadFailed when the server did not take it."""
    url = _bundle_url(api_url, execution_id)
    with tempfile.TemporaryDirectory(prefix="agentvine-bundle-") as scratch:
        bundle = Path(scratch) / "results.bundle"
        incremental = workspace_bundle(task=task, destination=bundle, known=known)
        response = _send(url, bundle, authorization=authorization, snapshot=snapshot, session=session)
        if incremental and response.status_code == 400:
            # The server lacks a prerequisite after all (its copy was replaced): send it whole.
            logger.info("incremental bundle of execution %s refused; sending the whole branch", execution_id)
            bundle.unlink()
            workspace_bundle(task=task, destination=bundle)
            response = _send(url, bundle, authorization=authorization, snapshot=snapshot, session=session)
    if response.status_code != 201:
        raise UploadFailed(f"HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


def results_fetch(*, api_url, authorization, execution_id, task, session=None):
    """Bring the task's workspace on this host up to the branch the server
    holds (nothing travels when it is there already). Returns the server's
    head of the branch (a commit it has: the next upload sends only what
    follows it), or None when the server has no such branch."""
    local = workspace_head(task=task)
    try:
        response = (session or requests).get(
            _bundle_url(api_url, execution_id),
            params={"have": [local]} if local else {},
            headers={"Authorization": authorization},
            timeout=UPLOAD_TIMEOUT_SECONDS,
            stream=True,
        )
    except requests.RequestException as exc:
        raise UploadFailed(str(exc)) from exc
    with response:
        if response.status_code not in (200, 204):
            raise UploadFailed(f"HTTP {response.status_code}: {response.text[:300]}")
        head = response.headers.get(HEAD_HEADER) or None
        if response.status_code == 204:
            return head
        with tempfile.TemporaryDirectory(prefix="agentvine-fetch-") as scratch:
            bundle = Path(scratch) / "branch.bundle"
            with open(bundle, "wb") as out:
                for chunk in response.iter_content(1 << 20):
                    out.write(chunk)
            workspace_update_from_bundle(task=task, bundle=bundle)
    return head

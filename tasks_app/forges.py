"""Pull requests through a forge's REST API: GitHub's, and the compatible
subset Gitea and Forgejo serve (``POST /repos/{owner}/{repo}/pulls`` with
``head``, ``base``, ``title``, ``body``; both answer ``html_url``).

The API address is found from the repository URL (``github.com`` →
``https://api.github.com``, any other host → ``https://<host>/api/v1``)
unless ``AGENTVINE_FORGE_API_URL`` says; the token comes from the secret
``AGENTVINE_FORGE_TOKEN_SECRET`` names, read when used and never stored.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import requests
from django.conf import settings

from agentvine.errors import IllegalTransition

ERR_NOT_A_FORGE = "cannot tell the forge's owner and repository from {url}"
ERR_NO_TOKEN = "secret {name} (AGENTVINE_FORGE_TOKEN_SECRET) is not set on the server (set {name} or {name}_FILE)"
ERR_FORGE_REFUSED = "the forge refused the pull request: HTTP {status}: {detail}"
ERR_FORGE_UNREACHABLE = "cannot reach the forge at {api}: {detail}"
TIMEOUT_SECONDS = (5.0, 30.0)
# git@host:owner/repo(.git) and ssh://, https:// forms.
SCP_LIKE = re.compile(r"^[\w.-]+@(?P<host>[\w.-]+):(?P<path>.+)$")


def forge_repository(url):
    """``(host, owner, repo)`` of a forge repository URL."""
    match = SCP_LIKE.match(url)
    if match:
        host, path = match["host"], match["path"]
    else:
        parts = urlsplit(url)
        host, path = parts.hostname or "", parts.path
    pieces = [piece for piece in path.strip("/").split("/") if piece]
    if not host or len(pieces) != 2:
        raise IllegalTransition(ERR_NOT_A_FORGE.format(url=url))
    owner, repo = pieces
    return host, owner, repo.removesuffix(".git")


def _forge_type(host):
    if settings.AGENTVINE_FORGE_TYPE:
        return settings.AGENTVINE_FORGE_TYPE
    return "github" if host == "github.com" else "gitea"


def _api_base(host, kind):
    if settings.AGENTVINE_FORGE_API_URL:
        return settings.AGENTVINE_FORGE_API_URL.rstrip("/")
    return "https://api.github.com" if kind == "github" and host == "github.com" else f"https://{host}/api/v1"


def secret_value(name):
    """A named secret of the server: ``$NAME``, else the contents of the file
    ``$NAME_FILE`` names; read when used, never stored. None when unset."""
    if os.environ.get(name):
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    try:
        return (Path(path).read_text().strip() or None) if path else None
    except OSError:
        return None


def _token():
    name = settings.AGENTVINE_FORGE_TOKEN_SECRET
    value = secret_value(name)
    if value is None:
        raise IllegalTransition(ERR_NO_TOKEN.format(name=name))
    return value


def pull_request_open(*, repository_url, head, base, title, body):
    """Open a pull request of branch ``head`` into ``base``; its web address."""
    host, owner, repo = forge_repository(repository_url)
    kind = _forge_type(host)
    api = _api_base(host, kind)
    token = _token()
    headers = {"Accept": "application/json", "User-Agent": "AgentVine"}
    if kind == "github":
        headers.update(
            {
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {token}",
                "X-GitHub-Api-Version": "2022-11-28",
            }
        )
    else:
        headers["Authorization"] = f"token {token}"
    try:
        response = requests.post(
            f"{api}/repos/{owner}/{repo}/pulls",
            json={"head": head, "base": base, "title": title, "body": body},
            headers=headers,
            timeout=TIMEOUT_SECONDS,
        )
    except requests.RequestException as exc:
        raise IllegalTransition(ERR_FORGE_UNREACHABLE.format(api=api, detail=type(exc).__name__)) from exc
    if response.status_code != 201:
        try:
            answer = response.json()
            detail = answer.get("message", "")
            errors = answer.get("errors") or []
            detail += "".join(f"; {e.get('message', e) if isinstance(e, dict) else e}" for e in errors)
        except ValueError:
            detail = response.text[:200]
        raise IllegalTransition(ERR_FORGE_REFUSED.format(status=response.status_code, detail=detail[:300]))
    return response.json()["html_url"]

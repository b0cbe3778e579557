"""Which repositories a task may name.

A task's ``repository_url`` is cloned on a worker host and handed to an agent,
so it is checked where it enters (task creation: API, console form, CLI,
batches) and again where it is used (``workers_app.workspaces``):

- never an option (``-…``), git's remote-helper form (``ext::…`` runs a
  command), or text with whitespace or control characters in it;
- never credentials in the URL (``https://user:token@…``): they would reach
  the agent's prompt, error messages, events and API output. Give workers
  their credentials (ssh keys, a credential helper) instead;
- local paths and ``file://`` only with ``AGENTVINE_REPOSITORY_ALLOW_LOCAL``
  (on in ``scripts/up`` and the test settings, off by default), and never the
  platform's own data (the workspaces, the repository cache, ``var/``);
- anything else must match one of ``AGENTVINE_REPOSITORY_ALLOW`` (shell-style
  patterns; by default https, ssh and ``git@host:path``).

Error messages never repeat the URL: it may carry a secret.
"""

import fnmatch
import re
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from agentvine.errors import ValidationFailed

ERR_OPTION = "repository must not start with '-'"
ERR_REMOTE_HELPER = "repository must not use a git remote helper ('<transport>::<address>', such as ext::)"
ERR_CHARACTERS = "repository must not contain spaces or control characters"
ERR_CREDENTIALS = (
    "repository URL must not contain credentials; it was not stored. "
    "Give the workers access instead (ssh key or credential helper)"
)
ERR_LOCAL = "local repositories are not allowed here (AGENTVINE_REPOSITORY_ALLOW_LOCAL is off)"
ERR_PLATFORM_PATH = "repository must not be inside AgentVine's own data (workspaces, repository cache, var/)"
ERR_NOT_ALLOWED = "repository is not allowed by AGENTVINE_REPOSITORY_ALLOW"

FIELD = "repository_url"
REMOTE_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
UNSAFE_CHARACTERS = re.compile(r"[\s\x00-\x1f\x7f]")
# scp-like syntax: [user@]host:path, no scheme, and no slash before the colon.
SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?[^@/:]+:")


def _is_local(url):
    if url.startswith("file:"):
        return True
    if "://" in url:
        return False
    # git reads "host:path" as ssh unless a slash comes before the colon.
    return not SCP_LIKE.match(url)


def _local_path(url):
    path = urlsplit(url).path if url.startswith("file:") else url
    return Path(path).expanduser().resolve()


def _platform_dirs():
    return [Path(settings.AGENTVINE_WORKSPACE_ROOT).resolve(), Path(settings.VAR_DIR).resolve()]


def _has_credentials(url):
    if "://" not in url:
        return False
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    if not userinfo:
        return False
    # ssh://git@host names an account, not a secret; any password is one. Over
    # http(s) a bare "user@" is how tokens are usually pasted (https://TOKEN@host).
    scheme = url.split("://", 1)[0].lower()
    return ":" in userinfo or scheme not in ("ssh", "git+ssh", "ssh+git")


def repository_url_check(url):
    """Raise ValidationFailed (field ``repository_url``) unless ``url`` may be used; '' is fine."""
    if not url:
        return
    if url.startswith("-"):
        raise ValidationFailed(ERR_OPTION, field=FIELD)
    if UNSAFE_CHARACTERS.search(url):
        raise ValidationFailed(ERR_CHARACTERS, field=FIELD)
    if REMOTE_HELPER.match(url):
        raise ValidationFailed(ERR_REMOTE_HELPER, field=FIELD)
    if _has_credentials(url):
        raise ValidationFailed(ERR_CREDENTIALS, field=FIELD)
    if _is_local(url):
        if not settings.AGENTVINE_REPOSITORY_ALLOW_LOCAL:
            raise ValidationFailed(ERR_LOCAL, field=FIELD)
        path = _local_path(url)
        if any(path == root or root in path.parents for root in _platform_dirs()):
            raise ValidationFailed(ERR_PLATFORM_PATH, field=FIELD)
        return
    if not any(fnmatch.fnmatchcase(url, pattern) for pattern in settings.AGENTVINE_REPOSITORY_ALLOW):
        raise ValidationFailed(ERR_NOT_ALLOWED, field=FIELD)


def repository_url_redacted(url):
    """``url`` for display: credentials a task stored before they were
    refused are replaced by ``***``."""
    if "://" not in url or "@" not in url.split("://", 1)[1].split("/", 1)[0]:
        return url
    scheme, rest = url.split("://", 1)
    host_part, slash, path = rest.partition("/")
    return f"{scheme}://***@{host_part.rpartition('@')[2]}{slash}{path}"
